#include "fleet/fleet_worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include "fleet/lease_script.h"

namespace ab::fleet {

namespace {

constexpr auto kHeartbeatEvery = std::chrono::milliseconds(1000);
constexpr timeval kTimeout{0, 500'000};

redisContext* ctx_of(void* p) { return static_cast<redisContext*>(p); }

std::string num(double x) { return fmt::format("{:.9g}", x); }

double as_number(const redisReply* r) {
  if (!r) return 0;
  if (r->type == REDIS_REPLY_INTEGER) return static_cast<double>(r->integer);
  if (r->type == REDIS_REPLY_STRING) return std::strtod(r->str, nullptr);
  return 0;
}

struct ReplyPtr {
  redisReply* r = nullptr;
  ~ReplyPtr() {
    if (r) freeReplyObject(r);
  }
};

}  // namespace

FleetWorker::FleetWorker(policy::Fleet config, int64_t window_ms) : config_(std::move(config)), window_ms_(window_ms) {
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

FleetWorker::~FleetWorker() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  disconnect();
  if (event_fd_ >= 0) ::close(event_fd_);
}

void FleetWorker::submit(std::vector<Request> requests) {
  if (requests.empty()) return;
  {
    std::lock_guard lk(mu_);
    for (Request& r : requests) inbox_.push_back(std::move(r));
  }
  cv_.notify_all();
}

void FleetWorker::reconfigure(policy::Fleet config, int64_t window_ms) {
  {
    std::lock_guard lk(mu_);
    const bool changed = config.host != config_.host || config.port != config_.port || config.db != config_.db ||
                         config.password != config_.password;
    config_ = std::move(config);
    window_ms_ = window_ms;
    reconnect_ = reconnect_ || changed;
  }
  cv_.notify_all();
}

FleetWorker::Drained FleetWorker::drain() {
  uint64_t n;
  while (::read(event_fd_, &n, sizeof n) == sizeof n) {
  }
  std::lock_guard lk(mu_);
  Drained out;
  std::swap(out, outbox_);
  return out;
}

void FleetWorker::signal() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t w = ::write(event_fd_, &one, sizeof one);
}

void FleetWorker::disconnect() {
  if (ctx_) redisFree(ctx_of(ctx_));
  ctx_ = nullptr;
  lease_sha_.clear();
}

bool FleetWorker::ensure_connected(std::string& error) {
  if (ctx_) return true;
  policy::Fleet cfg;
  {
    std::lock_guard lk(mu_);
    cfg = config_;
  }
  if (cfg.tls) {
    error = "rediss:// needs hiredis with TLS (1.0 or later); this build's hiredis has none";
    return false;
  }
  redisContext* c = redisConnectWithTimeout(cfg.host.c_str(), cfg.port, kTimeout);
  if (!c || c->err) {
    error = fmt::format("cannot connect to {}:{}: {}", cfg.host, cfg.port, c ? c->errstr : "out of memory");
    if (c) redisFree(c);
    return false;
  }
  redisSetTimeout(c, kTimeout);
  ctx_ = c;
  if (!cfg.password.empty()) {
    ReplyPtr r{static_cast<redisReply*>(redisCommand(c, "AUTH %b", cfg.password.data(), cfg.password.size()))};
    if (!r.r || r.r->type == REDIS_REPLY_ERROR) {
      // The store's message, never the password.
      error = fmt::format("{}:{} refused the password: {}", cfg.host, cfg.port,
                          r.r ? r.r->str : (c->err ? c->errstr : "no answer"));
      disconnect();
      return false;
    }
  }
  if (cfg.db != 0) {
    ReplyPtr r{static_cast<redisReply*>(redisCommand(c, "SELECT %d", cfg.db))};
    if (!r.r || r.r->type == REDIS_REPLY_ERROR) {
      error = fmt::format("SELECT {} failed: {}", cfg.db, r.r ? r.r->str : "no answer");
      disconnect();
      return false;
    }
  }
  ReplyPtr r{static_cast<redisReply*>(
      redisCommand(c, "SCRIPT LOAD %b", kLeaseScript.data(), kLeaseScript.size()))};
  if (!r.r || r.r->type != REDIS_REPLY_STRING) {
    error = fmt::format("SCRIPT LOAD failed: {}", r.r && r.r->str ? r.r->str : (c->err ? c->errstr : "no answer"));
    disconnect();
    return false;
  }
  lease_sha_ = r.r->str;
  return true;
}

Reply FleetWorker::execute(const Request& q, const policy::Fleet& cfg) {
  Reply out;
  out.seq = q.seq;
  out.key = q.key;
  std::string error;
  if (!ensure_connected(error)) {
    out.error = error;
    return out;
  }
  const std::string k1 = usage_key(q.key), k2 = leases_key(q.key), k3 = hosts_key();
  const std::string a_limit = num(q.limit), a_window = std::to_string(q.window_ms), a_sub = std::to_string(q.sub_ms),
                    a_want = num(q.want), a_report = num(q.report), a_back = num(q.give_back),
                    a_ttl = std::to_string(q.lease_ttl_ms);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool by_sha = attempt == 0 && !lease_sha_.empty();
    const std::string& body = by_sha ? lease_sha_ : std::string(kLeaseScript);
    std::vector<const char*> argv = {by_sha ? "EVALSHA" : "EVAL", body.c_str(), "3", k1.c_str(), k2.c_str(),
                                     k3.c_str(), cfg.host_id.c_str(), a_limit.c_str(), a_window.c_str(),
                                     a_sub.c_str(), a_want.c_str(), a_report.c_str(), a_back.c_str(), a_ttl.c_str()};
    std::vector<size_t> lens;
    for (const char* a : argv) lens.push_back(std::strlen(a));
    if (!by_sha) lens[1] = kLeaseScript.size();
    if (!by_sha) argv[1] = kLeaseScript.data();
    ReplyPtr r{static_cast<redisReply*>(redisCommandArgv(ctx_of(ctx_), static_cast<int>(argv.size()), argv.data(), lens.data()))};
    if (!r.r) {
      out.error = fmt::format("lost the connection: {}", ctx_of(ctx_)->errstr);
      disconnect();
      return out;
    }
    if (r.r->type == REDIS_REPLY_ERROR) {
      if (by_sha && std::string_view(r.r->str).starts_with("NOSCRIPT")) continue;  // the store restarted
      out.error = fmt::format("lease script failed: {}", r.r->str);
      return out;
    }
    if (r.r->type != REDIS_REPLY_ARRAY || r.r->elements < 5) {
      out.error = "lease script gave an unexpected answer";
      return out;
    }
    out.ok = true;
    out.granted = as_number(r.r->element[0]);
    out.my_lease = as_number(r.r->element[1]);
    out.fleet_used = as_number(r.r->element[2]);
    out.hosts_seen = static_cast<int64_t>(as_number(r.r->element[3]));
    out.fleet_usage = as_number(r.r->element[4]);
    return out;
  }
  out.error = "lease script could not be loaded";
  return out;
}

HeartbeatResult FleetWorker::beat(const policy::Fleet& cfg, int64_t window_ms) {
  HeartbeatResult h;
  if (!ensure_connected(h.error)) return h;
  const std::string key = hosts_key(), window = std::to_string(window_ms);
  const char* argv[] = {"EVAL", kHeartbeatScript.data(), "1", key.c_str(), cfg.host_id.c_str(), window.c_str()};
  size_t lens[] = {4, kHeartbeatScript.size(), 1, key.size(), cfg.host_id.size(), window.size()};
  ReplyPtr r{static_cast<redisReply*>(redisCommandArgv(ctx_of(ctx_), 6, argv, lens))};
  if (!r.r) {
    h.error = fmt::format("lost the connection: {}", ctx_of(ctx_)->errstr);
    disconnect();
    return h;
  }
  if (r.r->type != REDIS_REPLY_INTEGER) {
    h.error = fmt::format("heartbeat failed: {}", r.r->type == REDIS_REPLY_ERROR ? r.r->str : "unexpected answer");
    return h;
  }
  h.ok = true;
  h.hosts_seen = r.r->integer;
  return h;
}

void FleetWorker::run() {
  auto next_beat = std::chrono::steady_clock::now();
  std::unique_lock lk(mu_);
  while (!stop_) {
    cv_.wait_until(lk, next_beat, [&] { return stop_ || !inbox_.empty() || reconnect_; });
    if (stop_) break;
    if (reconnect_) {
      reconnect_ = false;
      lk.unlock();
      disconnect();
      lk.lock();
      next_beat = std::chrono::steady_clock::now();
    }
    std::deque<Request> work;
    work.swap(inbox_);
    const policy::Fleet cfg = config_;
    const int64_t window_ms = window_ms_;
    const bool beat_now = std::chrono::steady_clock::now() >= next_beat;
    lk.unlock();

    std::vector<Reply> replies;
    bool failed = false;
    for (const Request& q : work) {
      if (failed) {  // the store just failed: answer the rest at once instead of waiting on each
        Reply r;
        r.seq = q.seq;
        r.key = q.key;
        r.error = "the store is unreachable";
        replies.push_back(std::move(r));
        continue;
      }
      replies.push_back(execute(q, cfg));
      failed = !replies.back().ok && !ctx_;
    }
    std::optional<HeartbeatResult> hb;
    if (beat_now) hb = beat(cfg, window_ms);

    lk.lock();
    if (beat_now) next_beat = std::chrono::steady_clock::now() + kHeartbeatEvery;
    for (Reply& r : replies) outbox_.replies.push_back(std::move(r));
    if (hb) outbox_.heartbeats.push_back(std::move(*hb));
    if (!replies.empty() || hb) signal();
  }
}

}  // namespace ab::fleet

#include "alerts/dispatcher.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "util/redact.h"
#include "util/timefmt.h"

namespace ab::alerts {

using SteadyClock = std::chrono::steady_clock;

struct AlertDispatcher::Job {
  std::string rule;
  std::string webhook;  // exactly one of webhook / exec
  std::string exec;
  AlertEvent event;
  int attempts = 0;
  std::chrono::milliseconds next_delay{0};

  std::string channel() const { return webhook.empty() ? "exec:" + exec : util::redact_webhook_url(webhook); }
};

nlohmann::json AlertResult::to_detail() const {
  return {{"rule", rule}, {"channel", channel}, {"error", error}, {"attempts", attempts}, {"alert_kind", event.kind}};
}

namespace {

struct Outcome {
  bool ok = false;
  bool retryable = false;
  std::string error;
};

size_t discard_body(char*, size_t size, size_t n, void*) { return size * n; }

// One POST. Aborts when `stop` is set (stop_fd becomes readable at the same time).
Outcome post_webhook(const std::string& url, const std::string& body, const DispatcherOptions& o, int stop_fd,
                     const std::atomic<bool>& stop) {
  CURL* h = curl_easy_init();
  if (h == nullptr) return {false, true, "curl_easy_init failed"};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "agentbrake-alerts");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(o.request_timeout.count()));
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_body);

  Outcome out;
  CURLM* m = curl_multi_init();
  if (m == nullptr) {
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return {false, true, "curl_multi_init failed"};
  }
  curl_multi_add_handle(m, h);
  bool aborted = false;
  int running = 1;
  for (;;) {
    if (curl_multi_perform(m, &running) != CURLM_OK) break;
    if (running == 0) break;
    curl_waitfd wake{stop_fd, CURL_WAIT_POLLIN, 0};
    curl_multi_poll(m, &wake, 1, 1000, nullptr);
    if (stop.load()) {
      aborted = true;
      break;
    }
  }
  CURLcode rc = CURLE_OK;
  bool done = false;
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(m, &left))
    if (msg->msg == CURLMSG_DONE) {
      rc = msg->data.result;
      done = true;
    }
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_multi_remove_handle(m, h);
  curl_multi_cleanup(m);
  curl_slist_free_all(headers);
  curl_easy_cleanup(h);

  if (aborted) return {false, false, "aborted: daemon stopping"};
  if (!done) return {false, true, "transfer did not complete"};
  if (rc != CURLE_OK) {
    std::string msg = errbuf[0] != '\0' ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
    return {false, true, util::redact_url_in(msg, url)};
  }
  if (status >= 200 && status < 300) return {true, false, {}};
  out.error = fmt::format("HTTP {}", status);
  out.retryable = status == 408 || status == 429 || status >= 500;
  return out;
}

// Runs `path` with `env` as its environment; waits up to `timeout`. Aborts (kills the child)
// when `stop` is set.
Outcome run_exec(const std::string& path, const std::vector<std::string>& env, std::chrono::milliseconds timeout,
                 int stop_fd, const std::atomic<bool>& stop) {
  if (auto why = exec_program_refusal(path, ::geteuid())) return {false, false, *why};
  std::vector<char*> envp;
  for (const std::string& s : env) envp.push_back(const_cast<char*>(s.c_str()));
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>(path.c_str()), nullptr};

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);   // the daemon blocks signals for its signalfd
  posix_spawnattr_setsigdefault(&attr, &all);  // and may ignore SIGPIPE
  posix_spawnattr_setpgroup(&attr, 0);         // own process group: a timeout kills its children too
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);

  pid_t pid = -1;
  int rc = posix_spawn(&pid, path.c_str(), &actions, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return {false, false, fmt::format("cannot run {}: {}", path, std::strerror(rc))};

  auto kill_and_reap = [&] {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
  };
  const auto deadline = SteadyClock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return {false, false, fmt::format("waitpid: {}", std::strerror(errno))};
    if (SteadyClock::now() >= deadline) {
      kill_and_reap();
      return {false, false, fmt::format("timed out after {} ms, killed", timeout.count())};
    }
    pollfd p{stop_fd, POLLIN, 0};
    ::poll(&p, 1, 20);
    if (stop.load()) {
      kill_and_reap();
      return {false, false, "aborted: daemon stopping"};
    }
  }
  if (WIFEXITED(status)) {
    if (WEXITSTATUS(status) == 0) return {true, false, {}};
    return {false, false, fmt::format("exit status {}", WEXITSTATUS(status))};
  }
  if (WIFSIGNALED(status)) return {false, false, fmt::format("killed by signal {}", WTERMSIG(status))};
  return {false, false, "ended abnormally"};
}

std::string who_may_write(mode_t mode) {
  if ((mode & S_IWGRP) && (mode & S_IWOTH)) return "group and others";
  return (mode & S_IWGRP) ? "group" : "others";
}

std::string local_hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return {};
  return buf;
}

}  // namespace

std::optional<std::string> exec_program_refusal(const std::string& path, uid_t trusted_uid) {
  char resolved[PATH_MAX];
  if (!::realpath(path.c_str(), resolved)) return fmt::format("cannot run {}: {}", path, std::strerror(errno));
  const std::string real = resolved;
  auto owned_ok = [&](const struct stat& st) { return st.st_uid == 0 || st.st_uid == trusted_uid; };
  struct stat st {};
  if (::lstat(real.c_str(), &st) != 0) return fmt::format("cannot run {}: {}", path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fmt::format("refused to run {}: not a regular file", path);
  if (!(st.st_mode & S_IXUSR)) return fmt::format("refused to run {}: not executable", path);
  if (!owned_ok(st))
    return fmt::format("refused to run {}: owned by uid {}, not root (it would run as root)", path, st.st_uid);
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return fmt::format("refused to run {}: writable by {} (mode {:04o}); run chmod go-w {}", path,
                       who_may_write(st.st_mode), st.st_mode & 07777, real);
  // every directory above it, up to /
  for (std::string dir = real; dir != "/";) {
    size_t slash = dir.rfind('/');
    dir = slash == 0 ? "/" : dir.substr(0, slash);
    if (::lstat(dir.c_str(), &st) != 0) return fmt::format("cannot run {}: {}: {}", path, dir, std::strerror(errno));
    if (!owned_ok(st))
      return fmt::format("refused to run {}: directory {} is owned by uid {}, not root", path, dir, st.st_uid);
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
      return fmt::format("refused to run {}: directory {} is writable by {} (mode {:04o})", path, dir,
                         who_may_write(st.st_mode), st.st_mode & 07777);
  }
  return std::nullopt;
}

AlertDispatcher::AlertDispatcher(std::vector<policy::AlertRule> rules, DispatcherOptions options)
    : opts_(std::move(options)), rules_(std::move(rules)) {
  static std::once_flag curl_once;
  std::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  hostname_ = opts_.hostname.empty() ? local_hostname() : opts_.hostname;
  if (!opts_.now) opts_.now = [] { return SteadyClock::now(); };
  opts_.worker_threads = std::max(1, opts_.worker_threads);
  opts_.webhook_max_attempts = std::max(1, opts_.webhook_max_attempts);
  notify_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (notify_fd_ < 0 || stop_fd_ < 0) spdlog::error("alerts: eventfd: {}", std::strerror(errno));
  for (int i = 0; i < opts_.worker_threads; ++i) workers_.emplace_back([this] { worker_main(); });
}

AlertDispatcher::~AlertDispatcher() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  stop_flag_.store(true);
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_, &one, sizeof one);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  if (notify_fd_ >= 0) ::close(notify_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void AlertDispatcher::set_rules(std::vector<policy::AlertRule> rules) {
  std::lock_guard lk(mu_);
  rules_ = std::move(rules);
  std::erase_if(last_fired_, [&](const auto& entry) {
    return std::none_of(rules_.begin(), rules_.end(), [&](const auto& r) { return r.name == entry.first.first; });
  });
}

size_t AlertDispatcher::offer(AlertEvent event) {
  if (event.ts_unix_ns == 0) event.ts_unix_ns = util::now_unix_ns();
  const auto now = opts_.now();
  const std::string entity = entity_of(event);
  size_t queued = 0;
  std::lock_guard lk(mu_);
  if (stopping_) return 0;
  for (const policy::AlertRule& rule : rules_) {
    if (std::find(rule.on.begin(), rule.on.end(), event.kind) == rule.on.end()) continue;
    if (event.kind == "alert_failed" && event.detail.is_object() && event.detail.value("rule", "") == rule.name)
      continue;  // a rule never alerts about its own failure
    auto key = std::make_pair(rule.name, entity);
    auto it = last_fired_.find(key);
    if (it != last_fired_.end() && now - it->second < rule.min_interval) {
      suppressed_.fetch_add(1);
      continue;
    }
    if (queue_.size() + in_flight_ >= opts_.queue_capacity) {
      dropped_.fetch_add(1);
      continue;
    }
    last_fired_[key] = now;
    auto job = std::make_unique<Job>();
    job->rule = rule.name;
    job->webhook = rule.webhook;
    job->exec = rule.exec;
    job->event = event;
    job->next_delay = opts_.first_retry_delay;
    queue_.emplace(SteadyClock::now(), std::move(job));
    ++queued;
  }
  // Keep the rate-limit memory bounded: forget entries whose interval has passed.
  if (last_fired_.size() > 4096) {
    std::map<std::string, std::chrono::milliseconds> interval;
    for (const auto& r : rules_) interval[r.name] = r.min_interval;
    std::erase_if(last_fired_, [&](const auto& entry) {
      auto r = interval.find(entry.first.first);
      return r == interval.end() || now - entry.second >= r->second;
    });
  }
  if (queued > 0) cv_.notify_all();
  return queued;
}

void AlertDispatcher::worker_main() {
  std::unique_lock lk(mu_);
  for (;;) {
    if (stopping_) return;
    if (queue_.empty()) {
      cv_.wait(lk);
      continue;
    }
    auto due = queue_.begin()->first;
    auto now = SteadyClock::now();
    if (due > now) {
      cv_.wait_for(lk, due - now);
      continue;
    }
    std::unique_ptr<Job> job = std::move(queue_.extract(queue_.begin()).mapped());
    ++in_flight_;
    lk.unlock();
    bool retry_later = false;
    AlertResult result = deliver(*job, retry_later);
    lk.lock();
    --in_flight_;
    if (stopping_) return;  // abandon: nobody is left to read the result
    if (retry_later) {
      auto delay = job->next_delay;
      job->next_delay = std::min(job->next_delay * 2, opts_.max_retry_delay);
      queue_.emplace(SteadyClock::now() + delay, std::move(job));
      cv_.notify_one();
      continue;
    }
    // Counted and visible together with in_flight_ going down: pending() == 0 implies the
    // result is waiting in take_results().
    (result.ok ? sent_ : failed_).fetch_add(1);
    std::string rule = result.rule, channel = result.channel, error = result.error;
    int attempts = result.attempts;
    bool ok = result.ok;
    results_.push_back(std::move(result));
    lk.unlock();
    if (notify_fd_ >= 0) {
      uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(notify_fd_, &one, sizeof one);
    }
    if (ok)
      spdlog::info("alert [{}] sent via {}", rule, channel);
    else
      spdlog::warn("alert [{}] failed via {} after {} attempt(s): {}", rule, channel, attempts, error);
    lk.lock();
  }
}

AlertResult AlertDispatcher::deliver(Job& job, bool& retry_later) {
  AlertResult r;
  r.rule = job.rule;
  r.channel = job.channel();
  r.event = job.event;
  if (job.attempts == 0)  // the journal line: one per alert, whatever the channel does
    spdlog::warn("alert [{}] {} (via {})", job.rule, summarize(job.event), r.channel);
  ++job.attempts;
  r.attempts = job.attempts;
  Outcome o;
  if (!job.webhook.empty()) {
    std::string body = webhook_body(job.rule, job.event, hostname_)
                           .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    o = post_webhook(job.webhook, body, opts_, stop_fd_, stop_flag_);
    if (!o.ok && o.retryable && job.attempts < opts_.webhook_max_attempts && !stop_flag_.load()) {
      spdlog::info("alert [{}] via {}: attempt {} failed ({}), retrying in {} ms", job.rule, r.channel, job.attempts,
                   o.error, job.next_delay.count());
      retry_later = true;
    }
  } else {
    o = run_exec(job.exec, exec_environment(job.rule, job.event, hostname_), opts_.exec_timeout, stop_fd_,
                 stop_flag_);
  }
  r.ok = o.ok;
  r.error = o.error;
  return r;
}

std::vector<AlertResult> AlertDispatcher::take_results() {
  if (notify_fd_ >= 0) {
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = ::read(notify_fd_, &count, sizeof count);
  }
  std::lock_guard lk(mu_);
  std::vector<AlertResult> out;
  out.swap(results_);
  return out;
}

DispatcherCounters AlertDispatcher::counters() const {
  return {sent_.load(), failed_.load(), suppressed_.load(), dropped_.load()};
}

size_t AlertDispatcher::pending() const {
  std::lock_guard lk(mu_);
  return queue_.size() + in_flight_;
}

}  // namespace ab::alerts

#include "fleet/lease_book.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "util/duration.h"

namespace ab::fleet {

namespace {

constexpr int64_t kNsPerMs = 1'000'000;

double whole_if_counted(policy::LimitKind kind, double x) {
  // Tokens and requests are whole; a lease of 0.3 requests would never admit anything.
  return kind == policy::LimitKind::SpendUsd ? x : std::ceil(x);
}

}  // namespace

std::string limit_key(const brake::BucketId& bucket, const policy::Limit& limit) {
  return fmt::format("{}|{}|{}|{}", bucket.budget, bucket.key, policy::to_string(limit.kind), limit.window.count());
}

LeaseBook::LeaseBook(policy::Fleet config, LeaseTuning tuning) : config_(std::move(config)), tuning_(tuning) {}

void LeaseBook::set_config(policy::Fleet config) { config_ = std::move(config); }

LeaseBook::LimitState& LeaseBook::state(const brake::FleetLimitRef& ref) {
  // The engine keeps our handle (a map node: stable, never erased) beside the limit's window.
  if (ref.slot && *ref.slot) return *static_cast<LimitState*>(*ref.slot);
  std::string key = limit_key(*ref.bucket, *ref.limit);
  auto it = limits_.find(key);
  if (it == limits_.end()) {
    LimitState s;
    s.key = key;
    s.bucket = *ref.bucket;
    s.limit = *ref.limit;
    s.hosts_seen = hosts_seen_;
    it = limits_.emplace(std::move(key), std::move(s)).first;
  } else {
    it->second.limit.amount = ref.limit->amount;  // a reload may change the amount
  }
  if (ref.slot) *ref.slot = &it->second;
  return it->second;
}

const LeaseBook::LimitState* LeaseBook::find(const std::string& key) const {
  auto it = limits_.find(key);
  return it == limits_.end() ? nullptr : &it->second;
}

double LeaseBook::chunk(const LimitState& s) const {
  const double hosts = static_cast<double>(std::max<int64_t>(1, std::max(s.hosts_seen, hosts_seen_)));
  const double c = s.limit.amount / (hosts * std::max(1, tuning_.chunks_per_host));
  return std::max(whole_if_counted(s.limit.kind, c), s.limit.kind == policy::LimitKind::SpendUsd ? 1e-6 : 1.0);
}

bool LeaseBook::usable(const LimitState& s, int64_t now_ns) const { return now_ns < s.valid_until_ns; }

brake::Allowance LeaseBook::allowance(const brake::FleetLimitRef& ref, double need, int64_t now_ns) {
  LimitState& s = state(ref);
  brake::Allowance a;
  if (degraded_) {
    switch (config_.fail) {
      case policy::FleetFail::Closed: a.kind = brake::Allowance::Kind::Closed; break;
      case policy::FleetFail::Open:
      case policy::FleetFail::Local: {
        a.kind = brake::Allowance::Kind::Share;
        const int64_t hosts = std::max<int64_t>(1, std::max(s.hosts_seen, hosts_seen_));
        a.share = s.limit.amount / static_cast<double>(hosts);
        a.gates = config_.fail == policy::FleetFail::Local;
        break;
      }
    }
    return a;
  }
  a.kind = brake::Allowance::Kind::Lease;
  a.room = usable(s, now_ns) ? s.room() : 0;
  if (need > a.room + 1e-9) s.demand = std::max(s.demand, need);
  return a;
}

void LeaseBook::charge(const brake::FleetLimitRef& ref, double amount, int64_t now_ns) {
  LimitState& s = state(ref);
  s.reserved += amount;
  s.last_charge_ns = now_ns;
}

void LeaseBook::settle(const brake::FleetLimitRef& ref, double reserved, double actual, int64_t now_ns) {
  LimitState& s = state(ref);
  s.reserved = std::max(0.0, s.reserved - reserved);
  s.settled += actual;
  if (degraded_) s.settled_while_apart += actual;
  s.last_charge_ns = std::max(s.last_charge_ns, now_ns);
}

void LeaseBook::cancel(const brake::FleetLimitRef& ref, double reserved, int64_t) {
  LimitState& s = state(ref);
  s.reserved = std::max(0.0, s.reserved - reserved);
}

std::vector<Request> LeaseBook::poll(int64_t now_ns) {
  std::vector<Request> out;
  if (degraded_ || !ever_connected_) return out;  // the heartbeat brings the store back first
  for (auto& [key, s] : limits_) {
    if (s.in_flight || now_ns < s.next_try_ns) continue;
    const double c = chunk(s);
    const bool valid = usable(s, now_ns);
    const double room = valid ? s.room() : 0;
    const bool busy = s.reserved > 0 || s.demand > 0 || now_ns - s.last_charge_ns < tuning_.idle_return_ns;
    double want = 0;
    // Refill before the lease runs out: below half a chunk, or short for a waiting call.
    if (busy && (room < c / 2 || s.demand > room)) want = std::max(c, s.demand - std::max(0.0, room));
    const bool renew = busy && valid && s.valid_until_ns - now_ns < tuning_.lease_ttl_ns / 2;
    const bool report = s.settled > 0 && (want > 0 || now_ns - s.last_sent_ns >= tuning_.report_every_ns);
    if (!busy && !valid) s.lease = 0;  // expired in the store by now (its TTL): nothing to give back
    const double give_back = !busy && s.lease > 0 ? std::max(0.0, room) : 0;
    if (want <= 0 && !renew && !report && give_back <= 0) continue;

    Request r;
    r.seq = next_seq_++;
    r.key = key;
    r.limit = s.limit.amount;
    r.window_ms = s.limit.window.count();
    r.sub_ms = std::max<int64_t>(1, r.window_ms / std::max(1, tuning_.sub_windows));
    r.want = whole_if_counted(s.limit.kind, want);
    r.report = s.settled;
    r.give_back = give_back;
    r.lease_ttl_ms = tuning_.lease_ttl_ns / kNsPerMs;
    s.reporting = s.settled;
    s.settled = 0;
    s.lease -= give_back;
    s.in_flight = true;
    s.seq = r.seq;
    s.last_sent_ns = now_ns;
    out.push_back(std::move(r));
  }
  return out;
}

bool LeaseBook::apply(const Reply& reply, int64_t now_ns) {
  auto it = limits_.find(reply.key);
  if (it == limits_.end() || it->second.seq != reply.seq) return false;
  LimitState& s = it->second;
  s.in_flight = false;
  if (!reply.ok) {
    // Not known whether the store applied it: the usage is reported again later (counted
    // twice at worst, never lost).
    s.settled += s.reporting;
    s.reporting = 0;
    s.next_try_ns = now_ns + tuning_.retry_every_ns;
    degrade(reply.error, now_ns);
    return true;
  }
  s.reporting = 0;
  s.lease = reply.my_lease;
  s.fleet_used = reply.fleet_used;
  s.fleet_usage = reply.fleet_usage;
  s.hosts_seen = std::max<int64_t>(1, reply.hosts_seen);
  // Valid from when it was asked for, not when the answer came: the store's clock started
  // the lease's TTL before we heard of it. A quarter of the TTL is left as margin.
  s.valid_until_ns = s.last_sent_ns + tuning_.lease_ttl_ns * 3 / 4;
  if (reply.granted > 0 && s.room() >= s.demand) s.demand = 0;
  if (reply.granted <= 0 && s.demand > s.room()) s.next_try_ns = now_ns + tuning_.retry_every_ns;
  return reply.granted > 0;
}

bool LeaseBook::heartbeat(bool ok, int64_t hosts_seen, const std::string& error, int64_t now_ns) {
  if (!ok) {
    const bool was = degraded_;
    degrade(error, now_ns);
    return !was;
  }
  hosts_seen_ = std::max<int64_t>(1, hosts_seen);
  ever_connected_ = true;
  if (degraded_) {
    restore(now_ns);
    return true;
  }
  return false;
}

void LeaseBook::degrade(const std::string& error, int64_t now_ns) {
  last_error_ = error;
  if (degraded_) return;
  degraded_ = true;
  degraded_since_ns_ = now_ns;
  // The leases are abandoned: the store lets them expire (their TTL) and this host admits
  // under the fail mode instead. What was settled and not reported stays to be reported.
  for (auto& [key, s] : limits_) {
    s.lease = 0;
    s.valid_until_ns = 0;
    s.settled_while_apart += s.settled;
  }
  Transition t;
  t.degraded = true;
  t.fail = config_.fail;
  t.hosts_seen = hosts_seen_;
  t.error = error;
  t.limits = limits_.size();
  transitions_.push_back(std::move(t));
}

void LeaseBook::restore(int64_t now_ns) {
  degraded_ = false;
  last_error_.clear();
  Transition t;
  t.degraded = false;
  t.fail = config_.fail;
  t.hosts_seen = hosts_seen_;
  t.limits = limits_.size();
  t.apart_ns = now_ns - degraded_since_ns_;
  for (auto& [key, s] : limits_) {
    if (s.settled_while_apart > 0) t.reconciled[key] = s.settled_while_apart;
    s.settled_while_apart = 0;
    s.next_try_ns = now_ns;  // report and lease again at once
    s.last_sent_ns = 0;
  }
  transitions_.push_back(std::move(t));
}

std::vector<Transition> LeaseBook::take_transitions() {
  std::vector<Transition> out;
  out.swap(transitions_);
  return out;
}

nlohmann::json LeaseBook::status_json(int64_t now_ns) const {
  nlohmann::json j;
  j["state"] = degraded_ ? "degraded" : ever_connected_ ? "connected" : "connecting";
  j["fail"] = std::string(policy::to_string(config_.fail));
  j["host_id"] = config_.host_id;
  j["redis"] = config_.redis;  // the URL carries no password (the policy refuses one)
  j["hosts_seen"] = hosts_seen_;
  if (degraded_) {
    j["error"] = last_error_;
    j["degraded_for_s"] = static_cast<double>(now_ns - degraded_since_ns_) / 1e9;
  }
  j["limits"] = nlohmann::json::array();
  for (const auto& [key, s] : limits_) {
    const bool valid = usable(s, now_ns);
    j["limits"].push_back({{"budget", s.bucket.budget},
                           {"bucket", s.bucket.key},
                           {"kind", std::string(policy::to_string(s.limit.kind))},
                           {"window", util::format_policy_duration(s.limit.window)},
                           {"limit", s.limit.amount},
                           {"fleet_used", s.fleet_used},
                           {"fleet_usage", s.fleet_usage},
                           {"hosts_seen", s.hosts_seen},
                           {"lease", s.lease},
                           {"room", valid && !degraded_ ? std::max(0.0, s.room()) : 0.0},
                           {"reserved", s.reserved},
                           {"unreported", s.settled + s.reporting}});
  }
  return j;
}

}  // namespace ab::fleet

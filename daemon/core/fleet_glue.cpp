// fleet_glue.cpp — `scope: fleet` budgets on the daemon's loop: the lease book (the budget
// engine's LeaseSource) and the Redis worker, their events and `fleet status`. docs/fleet.md.
//
// The loop never talks to Redis: each tick collects the book's requests for the worker, and
// the worker's eventfd (epoll tag 8) brings the answers back; an answer that adds room runs
// the gate's tick so that held calls go as soon as their lease arrives.
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include "core/daemon_impl.h"

namespace ab::core {

namespace {

// The longest window of a fleet budget: hosts heard from within it count as "seen".
int64_t longest_fleet_window_ms(const policy::Policy& p) {
  int64_t longest = 1000;
  for (const auto& b : p.budgets)
    if (b.fleet())
      for (const auto& l : b.limits) longest = std::max<int64_t>(longest, l.window.count());
  return longest;
}

bool has_fleet_budget(const policy::Policy& p) {
  for (const auto& b : p.budgets)
    if (b.fleet()) return true;
  return false;
}

}  // namespace

void Daemon::fleet_policy_changed() {
  if (!policy_->fleet || !has_fleet_budget(*policy_)) {
    // No fleet budget any more: the engine counts nothing against leases; Redis lets our
    // leases expire (their TTL). The worker stops with its destructor.
    if (gate_) gate_->budgets().set_lease_source(nullptr);
    if (fleet_worker_ && epfd_ >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, fleet_worker_->event_fd(), nullptr);
    fleet_worker_.reset();
    fleet_book_.reset();
    return;
  }
  const int64_t window_ms = longest_fleet_window_ms(*policy_);
  if (!fleet_book_) {
    fleet_book_ = std::make_unique<fleet::LeaseBook>(*policy_->fleet);
    fleet_worker_ = std::make_unique<fleet::FleetWorker>(*policy_->fleet, window_ms);
    fleet_watch_fd();
    spdlog::info("fleet: host '{}' shares {} with {} (fail: {})", policy_->fleet->host_id, "its fleet budgets",
                 policy_->fleet->redis, policy::to_string(policy_->fleet->fail));
  } else {
    fleet_book_->set_config(*policy_->fleet);
    fleet_worker_->reconfigure(*policy_->fleet, window_ms);
  }
  if (gate_) gate_->budgets().set_lease_source(fleet_book_.get());
}

void Daemon::fleet_watch_fd() {
  if (!fleet_worker_ || epfd_ < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = 8;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, fleet_worker_->event_fd(), &ev);
}

void Daemon::fleet_tick() {
  if (!fleet_book_) return;
  fleet_worker_->submit(fleet_book_->poll(clock_ns(CLOCK_MONOTONIC)));
}

void Daemon::on_fleet_ready() {
  if (!fleet_book_) return;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  auto drained = fleet_worker_->drain();
  bool room = false;
  for (const auto& hb : drained.heartbeats) room |= fleet_book_->heartbeat(hb.ok, hb.hosts_seen, hb.error, now);
  for (const auto& r : drained.replies) room |= fleet_book_->apply(r, now);
  for (const auto& t : fleet_book_->take_transitions()) {
    json d = {{"fail", std::string(policy::to_string(t.fail))},
              {"hosts_seen", t.hosts_seen},
              {"host_id", fleet_book_->config().host_id},
              {"limits", t.limits}};
    if (t.degraded) {
      d["error"] = t.error;
      stats_[DaemonCounter::FleetDegraded]++;
      spdlog::warn("fleet: Redis unreachable ({}); fail mode {} with {} host(s) seen", t.error,
                   policy::to_string(t.fail), t.hosts_seen);
    } else {
      json rec = json::object();
      for (const auto& [key, amount] : t.reconciled) rec[key] = amount;
      d["reconciled"] = rec;
      d["apart_s"] = static_cast<double>(t.apart_ns) / 1e9;
      stats_[DaemonCounter::FleetRestored]++;
      spdlog::info("fleet: Redis back after {:.1f} s; {} limit(s) reconciled", t.apart_ns / 1e9, t.reconciled.size());
    }
    record_event(t.degraded ? "fleet_degraded" : "fleet_restored", 0, "", "", std::move(d));
  }
  // New room (a lease granted, the fail mode changed): held calls may go now.
  if (room && gate_) apply_gate(gate_->tick(now));
  fleet_worker_->submit(fleet_book_->poll(now));
}

json Daemon::cmd_fleet_status() {
  if (!fleet_book_) {
    json j = {{"state", "off"}, {"hosts_seen", 0}, {"limits", json::array()}};
    if (policy_->fleet) j["reason"] = "no budget has scope: fleet";
    return j;
  }
  json j = fleet_book_->status_json(clock_ns(CLOCK_MONOTONIC));
  // The budgets with scope: fleet, even those without a bucket in use yet.
  j["budgets"] = json::array();
  for (const auto& b : policy_->budgets)
    if (b.fleet()) j["budgets"].push_back(b.name);
  return j;
}

json Daemon::fleet_summary() const {
  if (!fleet_book_) return json{{"state", policy_->fleet ? "idle" : "off"}};
  json full = fleet_book_->status_json(clock_ns(CLOCK_MONOTONIC));
  json j = {{"state", full["state"]}, {"fail", full["fail"]}, {"hosts_seen", full["hosts_seen"]},
            {"host_id", full["host_id"]}};
  if (full.contains("error")) j["error"] = full["error"];
  return j;
}

}  // namespace ab::core

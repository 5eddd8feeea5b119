// holds.cpp — every hold, of every kind, is a `paused` event and its end a `resumed`
// (INTERFACE.md, event table).
//
// Two kinds of holds can be on one process at once, so they are tracked apart:
//   capture  the kernel stopped the process at its first LLM connect (or the daemon froze a
//            foreground job's cgroup) until its TLS probes are attached: reason capture;
//   brake    a request start without credit: reason budget, fan_out, loop or pacing.
// Manual pauses (`agentbrake pause`) record their own events (daemon.cpp, cmd_brake).
//
// paused   {target (the pid), reason, dry_run, pid, via (sigstop | freeze), + context}
// resumed  {target, reason, dry_run, pid, held_ms, released (how it ended), + context}
//          reason is the hold's, except when the end is the news: max_hold (escalation) and
//          release_all (the daemon stopping); hold_reason then names the hold's.
//
// Capture holds come once per process, at its first LLM connect, and last milliseconds; a
// process whose TLS cannot be hooked is held again at each connect to an endpoint. So that
// this cannot flood the database, a process's capture holds are recorded at most once per
// kCaptureRecordEveryNs, and all capture holds at most kCaptureEventsPerS a second (bursts of
// kCaptureEventBurst); the others are counted (capture_hold_events_unrecorded) and, like every
// hold, in agentbrake_holds_total. A capture hold whose `paused` was not recorded records no
// `resumed` either: the events always pair.
//
// Not a hold: a request start the kernel stopped only for the daemon to let it go at once
// (its credit was not written yet, no engine, killed): an admission round trip, counted as
// holds_released_at_once (enforce.cpp, on_budget_hold).
#include <algorithm>

#include "core/daemon_impl.h"

namespace ab::core {

namespace {

constexpr int64_t kCaptureRecordEveryNs = 60'000'000'000LL;
constexpr double kCaptureEventsPerS = 10;
constexpr double kCaptureEventBurst = 100;

}  // namespace

void Daemon::count_hold(const std::string& cgroup, const std::string& reason) {
  metric_actions_[cgroup.empty() ? "/" : cgroup].holds[reason]++;
}

bool Daemon::capture_event_allowed(uint32_t pid, int64_t now) {
  auto last = capture_recorded_at_.find(pid);
  if (last != capture_recorded_at_.end() && now - last->second < kCaptureRecordEveryNs) return false;
  if (capture_event_tokens_ < 0) {
    capture_event_tokens_ = kCaptureEventBurst;
    capture_event_tokens_at_ = now;
  }
  capture_event_tokens_ = std::min(
      kCaptureEventBurst, capture_event_tokens_ + double(now - capture_event_tokens_at_) / 1e9 * kCaptureEventsPerS);
  capture_event_tokens_at_ = now;
  if (capture_event_tokens_ < 1) return false;
  capture_event_tokens_ -= 1;
  capture_recorded_at_[pid] = now;
  return true;
}

void Daemon::hold_started(HoldKind kind, uint32_t pid, const std::string& reason, const char* via, int64_t since_ns,
                          json context) {
  auto& table = kind == HoldKind::Capture ? capture_holds_ : brake_holds_;
  if (table.count(pid)) return;  // held already: that hold goes on
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  const Attribution who = attribute(pid);
  ActiveHold h;
  h.reason = reason;
  h.since_ns = since_ns > 0 && since_ns <= now ? since_ns : now;
  h.cgroup = who.cgroup;
  h.comm = who.comm;
  if (!context.is_object()) context = json::object();
  context["via"] = via;
  h.context = std::move(context);
  count_hold(who.cgroup, reason);
  h.recorded = kind != HoldKind::Capture || capture_event_allowed(pid, now);
  if (h.recorded) {
    json detail{{"target", std::to_string(pid)}, {"reason", reason}, {"dry_run", false}, {"pid", pid}};
    for (const auto& [k, v] : h.context.items()) detail[k] = v;
    record_event("paused", pid, who.cgroup, who.comm, std::move(detail));
  } else {
    stats_["capture_hold_events_unrecorded"]++;
  }
  table.emplace(pid, std::move(h));
}

bool Daemon::hold_ended(HoldKind kind, uint32_t pid, const std::string& released, const char* end_reason, json extra) {
  auto& table = kind == HoldKind::Capture ? capture_holds_ : brake_holds_;
  auto it = table.find(pid);
  if (it == table.end()) return false;
  ActiveHold h = std::move(it->second);
  table.erase(it);
  if (!h.recorded) return false;
  const int64_t held_ns = clock_ns(CLOCK_MONOTONIC) - h.since_ns;
  json detail{{"target", std::to_string(pid)},
              {"reason", end_reason ? std::string(end_reason) : h.reason},
              {"dry_run", false},
              {"pid", pid},
              {"held_ms", double(std::max<int64_t>(0, held_ns) / 1000) / 1000.0},
              {"released", released}};
  if (end_reason) detail["hold_reason"] = h.reason;
  for (const auto& [k, v] : h.context.items()) detail.emplace(k, v);
  if (extra.is_object())
    for (const auto& [k, v] : extra.items()) detail[k] = v;
  record_event("resumed", pid, h.cgroup, h.comm, std::move(detail));
  return true;
}

void Daemon::end_all_holds(HoldKind kind, const std::string& released, const char* end_reason) {
  auto& table = kind == HoldKind::Capture ? capture_holds_ : brake_holds_;
  std::vector<uint32_t> pids;
  for (const auto& [pid, h] : table) pids.push_back(pid);
  std::sort(pids.begin(), pids.end());
  for (uint32_t pid : pids) hold_ended(kind, pid, released, end_reason);
}

void Daemon::record_dry_run_hold(uint32_t pid, const std::string& reason, json context) {
  const Attribution who = attribute(pid);
  json detail{{"target", std::to_string(pid)}, {"reason", reason}, {"dry_run", true}, {"pid", pid}};
  if (context.is_object())
    for (const auto& [k, v] : context.items()) detail[k] = v;
  record_event("paused", pid, who.cgroup, who.comm, std::move(detail));
}

std::pair<std::string, std::string> Daemon::pace_reason(uint32_t pid, int64_t now) {
  if (auto it = loop_paced_until_.find(pid); it != loop_paced_until_.end() && now < it->second) {
    auto by = paced_by_.find(pid);
    if (by != paced_by_.end() && by->second == "pacing") return {"pacing", ""};
    return {"loop", by != paced_by_.end() ? by->second : ""};
  }
  return {"loop", std::string(loops::kRetryStorm)};  // paced by a retry storm's retry-after
}

}  // namespace ab::core

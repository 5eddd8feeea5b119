// enforce.cpp — budgets, enforced: where a budget's decision becomes a hold, a deny or a kill.
//
// The kernel gates each request start of a gated process on a credit (struct ab_gate). Here:
//   credits     a gated process gets one credit while every bucket it falls in has room for a
//               typical call of it (its last call's size); refreshed on every tick and after
//               every admission or settlement. Several concurrent request starts may pass on
//               one credit: the overshoot is bounded by the process's concurrency.
//   admission   when a request is seen in user space, it is admitted by the engine (reserving
//               its input estimate plus max_tokens, or the last call's output), then settled
//               with the real usage when its response ends.
//   holds       a request start without credit stops the process (SIGSTOP in the kernel, or a
//               cgroup freeze for a terminal's foreground job) and queues it in the engine;
//               release_ready() resumes held processes oldest first.
//   actions     throttle = hold; deny = hold + new connects to endpoints fail (EPERM) until
//               the entity is released; kill = every process of the entity, once per cooldown.
#include <signal.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/daemon_impl.h"
#include "process/procfs.h"

namespace ab::core {

namespace {

constexpr int64_t kDefaultReservedOutput = 256;  // when a request names no max_tokens

std::string entity_target(const std::string& key) {
  // "cgroup:/a/b" → "/a/b", "tree:42" → "42", "process:42" → "42"
  auto colon = key.find(':');
  return colon == std::string::npos ? key : key.substr(colon + 1);
}

// The budgets and buckets that hold a call, for its paused/resumed events.
json hold_context(const brake::Decision& d) {
  json budgets = json::array(), buckets = json::array();
  for (const auto& x : d.blocking()) {
    if (std::find(budgets.begin(), budgets.end(), x.bucket.budget) == budgets.end()) budgets.push_back(x.bucket.budget);
    if (std::find(buckets.begin(), buckets.end(), x.bucket.key) == buckets.end()) buckets.push_back(x.bucket.key);
  }
  return json{{"budgets", budgets}, {"buckets", buckets}};
}

}  // namespace

bool entity_covers(const std::string& key, const std::string& cgroup, uint32_t tree_root_pid, uint32_t pid) {
  const std::string t = entity_target(key);
  if (key.rfind("cgroup:", 0) == 0) return cgroup == t || cgroup.rfind(t + "/", 0) == 0;
  if (key.rfind("tree:", 0) == 0) return std::to_string(tree_root_pid) == t;
  return std::to_string(pid) == t;
}

policy::ProcessFacts Daemon::facts_of(const Attribution& who) {
  policy::ProcessFacts f;
  f.cgroup = who.cgroup.empty() ? "/" : who.cgroup;
  if (auto u = process::systemd_unit_of(f.cgroup)) f.unit = *u;
  f.exe = who.exe;
  f.comm = who.comm;
  f.uid = who.uid;
  return f;
}

brake::CallFacts Daemon::typical_call(uint32_t pid) {
  const Attribution who = attribute(pid);
  brake::CallFacts c;
  c.pid = pid;
  c.tree_root_pid = who.tree_root_pid;
  c.facts = facts_of(who);
  auto it = last_call_.find(pid);
  if (it != last_call_.end()) {
    c.est_input_tokens = it->second.input;
    c.reserved_output_tokens = it->second.output;
    c.est_cost_usd = it->second.cost;
  } else {
    // Nothing known yet: assume a call as large as a request without max_tokens reserves.
    c.est_input_tokens = 1;
    c.reserved_output_tokens = kDefaultReservedOutput;
  }
  return c;
}

void Daemon::brake_policy_changed() {
  if (!engine_) {
    engine_ = std::make_unique<brake::BudgetEngine>(policy_);
    engine_->set_dry_run(opts_.dry_run);
  } else {
    engine_->set_policy(policy_);
  }
  refresh_gates();
}

bool Daemon::gated(uint32_t pid) {
  if (engine_->dry_run()) return false;
  auto it = watched_.find(pid);
  if (it == watched_.end() || !it->second.attached) return false;
  if (loop_paced_until_.count(pid) || storm_until_.count(pid)) return true;
  if (policy_->loops.fan_out.enabled && policy::gates(policy_->loops.fan_out.action))
    return true;  // fan-out holds the calls past max_concurrent
  for (const auto& b : engine_->buckets_of(typical_call(pid)))
    if (b.gates()) return true;
  return false;
}

void Daemon::write_gate(uint32_t pid, int64_t credits) {
  auto it = gate_credits_.find(pid);
  if (it != gate_credits_.end() && it->second == credits) return;
  ab_gate g{};
  g.credits = credits;
  g.since_ns = static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC));
  if (bpf_map_update_elem(rt_->gate_fd(), &pid, &g, BPF_ANY) == 0) gate_credits_[pid] = credits;
}

void Daemon::drop_gate(uint32_t pid) {
  if (gate_credits_.erase(pid)) bpf_map_delete_elem(rt_->gate_fd(), &pid);
}

// One credit when a typical call of the process would be admitted now. The engine's answer to
// the probe opens (or closes) the bucket's episode, which is when budget_exceeded is recorded.
void Daemon::refresh_gates() {
  if (!engine_) return;
  // Runs every tick: with nothing in the policy that could hold a call, there is nothing to do
  // per process (the common case: the built-in policy only alerts).
  const bool may_gate = !engine_->dry_run() &&
                        (!loop_paced_until_.empty() || !storm_until_.empty() ||
                         (policy_->loops.fan_out.enabled && policy::gates(policy_->loops.fan_out.action)) ||
                         std::any_of(policy_->budgets.begin(), policy_->budgets.end(),
                                     [](const policy::Budget& b) { return policy::gates(b.action); }));
  if (!may_gate) {
    for (auto it = gate_credits_.begin(); it != gate_credits_.end();) drop_gate((it++)->first);
    return;
  }
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  std::vector<uint32_t> pids;
  for (const auto& [pid, w] : watched_)
    if (w.attached) pids.push_back(pid);
  // Processes holding a credit are probed first, in a fixed order: the room they were dealt is
  // dealt to them again. In watched_'s hash order a newly attached process could be probed
  // first, take that room, and the credit of one that had just used it (request not yet seen)
  // would be taken back too late: one call over max_inflight (CI: 3 in flight under 2).
  std::sort(pids.begin(), pids.end(), [&](uint32_t a, uint32_t b) {
    auto ca = gate_credits_.find(a), cb = gate_credits_.find(b);
    const bool ha = ca != gate_credits_.end() && ca->second > 0, hb = cb != gate_credits_.end() && cb->second > 0;
    return ha != hb ? ha : a < b;
  });
  // fan_out: an entity (tree by default) gets at most max_concurrent calls in flight; its
  // members share what is left as credits, so new calls past the limit are held at their start.
  // A credit once written is kept until it is seen used: taking it back could race the kernel
  // using it, and the same place would then be dealt twice.
  const auto& fo = policy_->loops.fan_out;
  const bool fan_out_gates = fo.enabled && policy::gates(fo.action) && !engine_->dry_run();
  fan_out_room_.clear();
  std::vector<uint64_t> probes;
  for (uint32_t pid : pids) {
    if (!gated(pid)) {
      drop_gate(pid);
      continue;
    }
    if (held_pids_.count(pid)) continue;  // credits come with its release
    if (loop_holds(pid, now)) {
      write_gate(pid, 0);
      continue;
    }
    if (fan_out_gates) {
      if (auto entity = fan_out_entity(pid)) {
        auto room = fan_out_room_.find(*entity);
        if (room == fan_out_room_.end())  // every place held counted, this pid's credit included
          room = fan_out_room_.emplace(*entity, fan_out_room(*entity, now)).first;
        auto gc = gate_credits_.find(pid);
        const int64_t mine = gc != gate_credits_.end() ? std::max<int64_t>(0, gc->second) : 0;
        // A process busy with a call (in flight, or let go and not yet seen) gets no credit:
        // its next concurrent call asks again at its start, so an idle process holds one place
        // at most. Past the limit (a reload lowered max_concurrent) unused credits go back.
        const bool busy = calls_in_flight(pid) > 0 || released_unseen_.count(pid) > 0;
        if (busy || (mine > 0 && room->second < 0)) {
          room->second += mine;
          write_gate(pid, 0);
          continue;
        }
        if (mine == 0) {
          if (room->second <= 0) {
            write_gate(pid, 0);
            continue;
          }
          room->second--;
        }
      }
    }
    // The probe's reservation stays until the pass ends: credits handed out in one pass fit
    // in the buckets together, so processes sharing a bucket do not each get its last room.
    brake::Decision d = engine_->admit(typical_call(pid), now);
    if (d.admitted) probes.push_back(d.reservation_id);
    // alert-only buckets never hold: their episodes are reported here
    for (const auto& x : d.exceeded)
      if (!x.gates() && x.new_episode) {
        brake::Decision only;
        only.dry_run = d.dry_run;
        only.exceeded.push_back(x);
        note_exceeded(only, pid);
      }
    write_gate(pid, d.admitted ? 1 : 0);
  }
  for (uint64_t id : probes) engine_->cancel(id);
}

// budget_exceeded once per episode: the engine opens an episode when a call finds no room and
// closes it when one finds room again; under steady pressure that happens every window, so an
// episode that reopens within one window of the last report is the same episode.
// `held`: the decision of a request that was actually held; its episode is reported even if
// a credit probe opened it earlier (probes use an estimate and never report).
void Daemon::note_exceeded(const brake::Decision& d, uint32_t pid, bool held) {
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  for (const auto& x : d.exceeded) {
    if (x.reason == brake::Exceeded::Reason::Queue) continue;
    const bool fresh = x.new_episode || held;
    const std::string id = x.bucket.budget + "\n" + x.bucket.key;
    const int64_t span = x.window_ns > 0 ? x.window_ns : int64_t(10'000'000'000);
    auto last = last_exceeded_.find(id);
    const bool recent = last != last_exceeded_.end() && now - last->second < span;
    if (fresh || recent) last_exceeded_[id] = now;
    if (!fresh || recent) continue;
    const Attribution who = attribute(pid);
    json detail{{"budget", x.bucket.budget},
                {"bucket", x.bucket.key},
                {"action", std::string(policy::to_string(x.action))},
                {"dry_run", d.dry_run},
                {"requested", x.requested}};
    if (x.reason == brake::Exceeded::Reason::Inflight) {
      detail["limit"] = x.limit;
      detail["level"] = x.level;
      detail["kind"] = "inflight";
      detail["window"] = nullptr;
    } else {
      detail["limit"] = x.limit;
      detail["level"] = x.level;
      detail["kind"] = std::string(policy::to_string(x.kind));
      detail["window"] = util::format_policy_duration(std::chrono::milliseconds(x.window_ns / 1'000'000));
    }
    spdlog::warn("budget {} exceeded by {}: {} {}/{} in {} → {}{}", x.bucket.budget, x.bucket.key,
                 detail["kind"].get<std::string>(), x.level, x.limit,
                 detail["window"].is_null() ? "flight" : detail["window"].get<std::string>(),
                 detail["action"].get<std::string>(), d.dry_run ? " (dry run)" : "");
    record_event("budget_exceeded", pid, who.cgroup, who.comm, detail);
  }
}

brake::CallFacts Daemon::request_facts(uint32_t pid, const protocol::RequestInfo& r) {
  brake::CallFacts c = typical_call(pid);
  c.est_input_tokens = std::max<int64_t>(1, static_cast<int64_t>(r.request_bytes / 4));
  auto it = last_call_.find(pid);
  c.reserved_output_tokens = r.max_tokens > 0 ? r.max_tokens
                             : it != last_call_.end() ? std::max<int64_t>(1, it->second.output)
                                                      : kDefaultReservedOutput;
  LlmCall est;
  est.model = r.model;
  est.input_tokens = c.est_input_tokens;
  est.output_tokens = c.reserved_output_tokens;
  accounting::price_call(est, prices_);
  c.est_cost_usd = est.cost_usd;
  return c;
}

void Daemon::on_request_seen(const capture::CapturedRequest& cr) {
  // The gate lets every request start ("POST ") through on a place: a release or a credit.
  bool released = false, on_credit = false;
  if (cr.request.method == "POST") {
    if (auto ru = released_unseen_.find(cr.pid); ru != released_unseen_.end()) {
      released = true;
      if (--ru->second <= 0) released_unseen_.erase(ru);
    } else if (auto gc = gate_credits_.find(cr.pid); gc != gate_credits_.end() && gc->second > 0) {
      on_credit = true;
      gc->second--;  // the kernel took it
    }
  }
  if (!engine_ || !cr.request.is_llm) {
    if (released || on_credit) refresh_gates();
    return;
  }
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  if (!last_call_.count(cr.pid)) {  // until its first response, its typical call is this one
    brake::CallFacts f = request_facts(cr.pid, cr.request);
    last_call_[cr.pid] = {f.est_input_tokens, f.reserved_output_tokens, f.est_cost_usd};
  }
  const auto key = std::make_pair(cr.pid, cr.ssl);
  auto pre = prereserved_.find(cr.pid);
  if (pre != prereserved_.end()) {  // admitted when its hold was released
    reservations_[key].push_back(pre->second);
    prereserved_.erase(pre);
  } else if (released || on_credit || gate_credits_.count(cr.pid)) {
    // The kernel let it through on a credit, or a hold was released: decided there.
    brake::Decision d = engine_->force_admit(request_facts(cr.pid, cr.request), now);
    if (d.reservation_id) reservations_[key].push_back(d.reservation_id);
  } else {
    brake::CallFacts facts = request_facts(cr.pid, cr.request);
    brake::Decision d = engine_->admit(facts, now);
    note_exceeded(d, cr.pid);
    if (d.dry_run) {  // what a real run would have done: hold this request (kill: killed, in note_exceeded's place)
      const auto a = d.strongest_action();
      if (a && (*a == policy::Action::Throttle || *a == policy::Action::Deny))
        record_dry_run_hold(cr.pid, "budget", hold_context(d));
    }
    if (!d.admitted) {
      // It is on the wire already (not gated, or passed on a credit alongside another).
      d = engine_->force_admit(facts, now);
      stats_["admitted_over_budget"]++;
    }
    if (d.reservation_id) reservations_[key].push_back(d.reservation_id);
  }
  if (released || on_credit || gate_credits_.count(cr.pid)) refresh_gates();
}

void Daemon::settle_call(const LlmCall& call, uint32_t pid, uint64_t ssl) {
  last_call_[pid] = {call.input_tokens, call.output_tokens, call.cost_usd};
  if (!engine_) return;
  auto it = reservations_.find({pid, ssl});
  if (it == reservations_.end() || it->second.empty()) return;
  uint64_t id = it->second.front();
  it->second.pop_front();
  if (it->second.empty()) reservations_.erase(it);
  // malformed usage: what was reserved stays counted (the estimate could be far below it)
  engine_->settle(id, call.usage_malformed ? -1 : call.input_tokens + call.output_tokens,
                  call.usage_malformed ? -1.0 : call.cost_usd, clock_ns(CLOCK_MONOTONIC));
  release_ready_holds();
  refresh_gates();
}

// The kernel stopped (or, for a foreground job, could not stop) a request start without credit.
void Daemon::on_budget_hold(const ab_hold_event& e) {
  const uint32_t pid = e.hdr.pid;
  const bool stopped = e.sock.flags & AB_SOCK_HELD;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  // A request start stopped only to be let go at once (no engine yet, room found, killed) is
  // an admission round trip, not a hold: counted, not recorded as paused/resumed.
  if (!engine_) {
    if (stopped) {
      stats_["holds_released_at_once"]++;
      release_pid(pid, e.start_time_ns, "no engine");
    }
    return;
  }
  // The kernel found no credit; one written since is taken back (the process is stopped).
  write_gate(pid, 0);
  if (stopped) {
    // Its record must be there for release_pid (and for --release-all if we die): it can be
    // gone when the kernel took over a capture hold's record just as we deleted that.
    ab_hold_value hv{};
    hv.start_time_ns = e.start_time_ns;
    hv.since_ns = e.hdr.ts_ns;
    hv.reason = AB_HOLD_BUDGET;
    if (bpf_map_update_elem(rt_->holds_fd(), &pid, &hv, BPF_NOEXIST) == 0) stats_["budget_hold_records_restored"]++;
  } else if (!(e.sock.flags & AB_SOCK_FOREGROUND)) {
    // Held already by another of its threads (that hold's release lets this request go too).
    stats_["budget_holds_joined"]++;
    return;
  }
  const bool fan_out_held = fan_out_full(pid, now);
  if (fan_out_held || loop_holds(pid, now)) {  // released by the tick when the pause ends / room is back
    std::string reason = "fan_out";
    json ctx = json::object();
    if (fan_out_held) {
      const std::string entity = *fan_out_entity(pid);
      report_fan_out_hold(pid, entity, now);
      ctx["entity"] = entity;
    } else {
      auto [why, detector] = pace_reason(pid, now);
      reason = why;
      if (!detector.empty()) ctx["detector"] = detector;
    }
    held_pids_[pid] = e.start_time_ns;
    loop_held_.insert(pid);
    stats_["loop_holds"]++;
    if (stopped) hold_started(HoldKind::Brake, pid, reason, "sigstop", int64_t(e.hdr.ts_ns), std::move(ctx));
    return;
  }
  brake::CallFacts facts = typical_call(pid);
  brake::Decision d = engine_->admit(facts, now);
  note_exceeded(d, pid, /*held=*/!d.admitted);
  if (d.admitted) {  // room came back since the credit was written
    prereserved_[pid] = d.reservation_id;
    if (stopped) {  // its credit had not been written yet (e.g. its last response was seen just now)
      stats_["holds_released_at_once"]++;
      release_pid(pid, e.start_time_ns, "room");
    }
    refresh_gates();
    return;
  }
  const policy::Action action = d.strongest_action().value_or(policy::Action::Throttle);
  const Attribution who = attribute(pid);
  if (action == policy::Action::Kill) {
    for (const auto& x : d.blocking())
      if (x.action == policy::Action::Kill) kill_entity(x.bucket.key, pid, "budget", x.bucket.budget);
    if (stopped) release_pid(pid, e.start_time_ns, "killed");  // SIGKILL needs no SIGCONT, but tidy the record
    return;
  }
  if (action == policy::Action::Deny) {
    for (const auto& x : d.blocking())
      if (x.action == policy::Action::Deny) deny_entity(x.bucket.key, pid, x.bucket.budget);
  }
  engine_->hold(pid, e.start_time_ns, facts, now);
  held_pids_[pid] = e.start_time_ns;
  stats_["budget_holds"]++;
  if (stopped) hold_started(HoldKind::Brake, pid, "budget", "sigstop", int64_t(e.hdr.ts_ns), hold_context(d));
  if (!stopped && (e.sock.flags & AB_SOCK_FOREGROUND) && budget_freezer_) {
    std::string cg = who.cgroup;
    int rc = budget_freezer_->freeze_for(pid, cg, static_cast<uint64_t>(now));
    stats_[rc == 0 ? "budget_freezes" : "budget_holds_not_taken_foreground"]++;
    if (rc == 0) hold_started(HoldKind::Brake, pid, "budget", "freeze", 0, hold_context(d));
  }
  write_gate(pid, 0);
}

bool Daemon::release_pid(uint32_t pid, uint64_t start_time, const char* why, const char* end_reason, json extra) {
  const bool recorded = hold_ended(HoldKind::Brake, pid, why, end_reason, std::move(extra));
  held_pids_.erase(pid);
  if (budget_freezer_) budget_freezer_->release(pid);
  ab_hold_value hv{};
  if (bpf_map_lookup_elem(rt_->holds_fd(), &pid, &hv) == 0 && hv.reason == AB_HOLD_BUDGET) {
    int rc = process::signal_same_process(static_cast<int>(pid), start_time ? start_time : hv.start_time_ns, SIGCONT);
    if (rc < 0 && rc != -ESRCH) spdlog::warn("releasing pid {}: {}", pid, strerror(-rc));
    bpf_map_delete_elem(rt_->holds_fd(), &pid);
    if (rc == 0) released_unseen_[pid]++;  // the held request goes now: a place until it is seen
  }
  spdlog::debug("released pid {} ({})", pid, why);
  return recorded;
}

void Daemon::release_ready_holds() {
  if (!engine_) return;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  for (auto& ex : engine_->expired(now)) {
    const uint32_t pid = ex.held.pid;
    const Attribution who = attribute(pid);
    const double held_s = double(ex.held_ns) / 1e9;
    json detail{{"target", std::to_string(pid)}, {"reason", "max_hold"}, {"dry_run", engine_->dry_run()},
                {"held_s", held_s}, {"escalation", std::string(policy::to_string(ex.action))}};
    const json escalation{{"held_s", held_s}, {"escalation", detail["escalation"]}};
    if (ex.action == policy::Action::Kill) {
      for (const auto& b : ex.gating)
        if (b.action == policy::Action::Kill) kill_entity(b.id.key, pid, "max_hold", b.id.budget);
      release_pid(pid, ex.held.start_time, "max_hold kill", "max_hold", escalation);
      continue;
    }
    // throttle/deny held past max_hold: let the call go, and say so.
    brake::Decision d = engine_->force_admit(ex.held.call, now);
    if (d.reservation_id) prereserved_[pid] = d.reservation_id;
    spdlog::warn("pid {} held {:.1f}s ≥ max_hold: released ({} escalation recorded)", pid, held_s,
                 detail["escalation"].get<std::string>());
    // the hold's `resumed` says max_hold; a hold that was never a `paused` (a foreground job not
    // frozen) still has its escalation recorded
    if (!release_pid(pid, ex.held.start_time, "max_hold", "max_hold", escalation))
      record_event("resumed", pid, who.cgroup, who.comm, detail);
    undeny_for(pid);
  }
  for (auto& r : engine_->release_ready(now)) {
    const uint32_t pid = r.held.pid;
    if (r.decision.reservation_id) prereserved_[pid] = r.decision.reservation_id;
    release_pid(pid, r.held.start_time, "room");
    undeny_for(pid);
  }
}

void Daemon::brake_tick() {
  if (!engine_) return;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  for (auto it = loop_held_.begin(); it != loop_held_.end();) {
    const uint32_t pid = *it;
    if (!loop_holds(pid, now) && !fan_out_full(pid, now)) {
      auto h = held_pids_.find(pid);
      release_pid(pid, h != held_pids_.end() ? h->second : 0, "loop pause over");
      it = loop_held_.erase(it);
    } else {
      ++it;
    }
  }
  release_ready_holds();
  refresh_gates();
  if (budget_freezer_) budget_freezer_->sweep(static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC)),
                                              static_cast<uint64_t>(policy_->max_hold.count()) * 1'000'000 + 5'000'000'000ull);
}

void Daemon::brake_forget(uint32_t pid) {
  hold_ended(HoldKind::Brake, pid, "exited");
  if (!engine_) return;
  engine_->drop_held(pid);
  engine_->forget_process(pid);  // its cached budget matches
  held_pids_.erase(pid);
  loop_held_.erase(pid);
  if (auto it = prereserved_.find(pid); it != prereserved_.end()) {
    engine_->cancel(it->second);
    prereserved_.erase(it);
  }
  for (auto it = reservations_.lower_bound({pid, 0}); it != reservations_.end() && it->first.first == pid;) {
    for (uint64_t id : it->second) engine_->cancel(id);
    it = reservations_.erase(it);
  }
  drop_gate(pid);
  released_unseen_.erase(pid);
  last_call_.erase(pid);
  if (denied_pids_.erase(pid)) bpf_map_delete_elem(rt_->denied_pids_fd(), &pid);
}

// ---- actions ---------------------------------------------------------------------------------

std::vector<int> Daemon::entity_pids(const std::string& key) {
  const std::string t = entity_target(key);
  if (key.rfind("cgroup:", 0) == 0) return cg_mount_.empty() ? std::vector<int>{} : process::cgroup_procs_recursive(cg_mount_, t);
  if (key.rfind("tree:", 0) == 0) return procs_.tree_members(std::stoi(t));
  return {std::stoi(t)};
}

void Daemon::kill_entity(const std::string& key, uint32_t pid, const std::string& reason, const std::string& budget) {
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  if (!engine_->action_allowed(key, now)) {
    stats_["actions_in_cooldown"]++;
    return;
  }
  engine_->note_action(key, now);
  const Attribution who = attribute(pid);
  const std::string target = entity_target(key);
  auto pids = entity_pids(key);
  const bool dry = engine_->dry_run();
  json detail{{"target", target}, {"entity", key}, {"reason", reason}, {"dry_run", dry}, {"pids", pids}};
  if (!budget.empty()) detail["budget"] = budget;
  if (!dry) {
    if (key.rfind("cgroup:", 0) == 0 && !cg_mount_.empty()) {
      auto r = process::cgroup_kill(cg_mount_, target);
      if (!r) r = process::cgroup_kill_by_signal(cg_mount_, target);
      if (!r) detail["error"] = strerror(-r.err);
    } else {
      for (int p : pids) {
        auto pi = process::read_proc(p);
        if (!pi) continue;
        ::kill(p, SIGKILL);
      }
    }
  }
  killed_[key] = {reason, now};
  spdlog::warn("killed {} ({} process(es), reason {}{})", key, pids.size(), reason, dry ? ", dry run" : "");
  record_event("killed", pid, who.cgroup, who.comm, detail);
}

void Daemon::deny_entity(const std::string& key, uint32_t pid, const std::string& budget) {
  if (denied_entities_.count(key)) return;
  const Attribution who = attribute(pid);
  const std::string target = entity_target(key);
  std::vector<uint64_t> cg_ids;
  std::vector<uint32_t> pids;
  if (key.rfind("cgroup:", 0) == 0 && !cg_mount_.empty()) {
    std::error_code ec;
    const std::string abs = process::cgroup_abs_path(cg_mount_, target);
    auto add = [&](const std::string& rel) {
      if (auto id = process::cgroup_id_of(cg_mount_, rel)) cg_ids.push_back(*id);
    };
    add(target);
    for (auto it = std::filesystem::recursive_directory_iterator(abs, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
      if (it->is_directory(ec)) add(target + "/" + std::filesystem::relative(it->path(), abs, ec).string());
  } else {
    for (int p : entity_pids(key)) pids.push_back(static_cast<uint32_t>(p));
  }
  uint32_t one = 1;
  for (auto id : cg_ids) bpf_map_update_elem(rt_->denied_cgroups_fd(), &id, &one, BPF_ANY);
  for (auto p : pids) {
    bpf_map_update_elem(rt_->denied_pids_fd(), &p, &one, BPF_ANY);
    denied_pids_.insert(p);
  }
  denied_entities_[key] = {cg_ids, pids};
  json detail{{"target", target}, {"entity", key}, {"reason", "budget"}, {"budget", budget},
              {"dry_run", false}, {"connects_refused", deny_available_}};
  spdlog::warn("denied {}: new connections to LLM endpoints fail{}", key,
               deny_available_ ? "" : " (connect programs unavailable: requests are held instead)");
  record_event("denied", pid, who.cgroup, who.comm, detail);
}

void Daemon::undeny_for(uint32_t pid) {
  if (denied_entities_.empty()) return;
  const Attribution who = attribute(pid);
  for (auto it = denied_entities_.begin(); it != denied_entities_.end();) {
    const std::string& key = it->first;
    const std::string t = entity_target(key);
    if (!entity_covers(key, who.cgroup, who.tree_root_pid, pid)) {
      ++it;
      continue;
    }
    for (auto id : it->second.cgroups) bpf_map_delete_elem(rt_->denied_cgroups_fd(), &id);
    for (auto p : it->second.pids) {
      bpf_map_delete_elem(rt_->denied_pids_fd(), &p);
      denied_pids_.erase(p);
    }
    record_event("resumed", pid, who.cgroup, who.comm,
                 {{"target", t}, {"entity", key}, {"reason", "budget"}, {"dry_run", false}, {"was", "denied"}});
    it = denied_entities_.erase(it);
  }
}

void Daemon::release_all_brakes(const char* reason) {
  for (auto& [pid, start] : std::map<uint32_t, uint64_t>(held_pids_.begin(), held_pids_.end())) {
    if (!release_pid(pid, start, reason, reason)) {  // held, but never a `paused`: its release is still news
      const Attribution who = attribute(pid);
      record_event("resumed", pid, who.cgroup, who.comm,
                   {{"target", std::to_string(pid)}, {"reason", reason}, {"dry_run", false}});
    }
  }
  end_all_holds(HoldKind::Brake, reason, reason);
  if (budget_freezer_) budget_freezer_->release_all();
  for (auto& [key, d] : denied_entities_) {
    for (auto id : d.cgroups) bpf_map_delete_elem(rt_->denied_cgroups_fd(), &id);
    for (auto p : d.pids) bpf_map_delete_elem(rt_->denied_pids_fd(), &p);
  }
  denied_entities_.clear();
  denied_pids_.clear();
  for (auto& [pid, c] : gate_credits_) bpf_map_delete_elem(rt_->gate_fd(), &pid);
  gate_credits_.clear();
  released_unseen_.clear();
}

// Day and hour windows survive a restart: rebuilt from the calls in the database.
void Daemon::restore_budgets() {
  if (!engine_ || policy_->budgets.empty()) return;
  int64_t longest_ms = 0;
  for (const auto& b : policy_->budgets)
    for (const auto& l : b.limits) longest_ms = std::max<int64_t>(longest_ms, l.window.count());
  if (longest_ms <= 0) return;
  const int64_t now_unix = clock_ns(CLOCK_REALTIME), now_mono = clock_ns(CLOCK_MONOTONIC);
  std::vector<brake::HistoryRecord> hist;
  for (const auto& c : store_->calls(now_unix - longest_ms * 1'000'000, now_unix)) {
    brake::HistoryRecord h;
    h.ts_ns = c.start_unix_ns - now_unix + now_mono;
    h.pid = c.who.pid;
    h.tree_root_pid = c.who.tree_root_pid;
    h.facts = facts_of(c.who);
    h.tokens = c.input_tokens + c.output_tokens;
    h.cost_usd = c.cost_usd;
    hist.push_back(std::move(h));
  }
  engine_->restore(hist, now_mono);
  if (!hist.empty()) spdlog::info("budgets: {} past call(s) restored into their windows", hist.size());
}

}  // namespace ab::core

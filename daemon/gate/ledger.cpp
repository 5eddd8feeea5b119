#include "gate/ledger.h"

#include <algorithm>
#include <set>

namespace ab::gate {

namespace {

constexpr int64_t kDefaultReservedOutput = 256;  // when a request names no max_tokens
constexpr int64_t kMsNs = 1'000'000;
constexpr int64_t kEpisodeFallbackNs = 10'000'000'000;  // budget_exceeded: a limit without a window

int64_t ms_to_ns(policy::Millis m) { return static_cast<int64_t>(m.count()) * kMsNs; }

}  // namespace

std::string_view to_string(Counter c) {
  switch (c) {
    case Counter::BudgetHolds: return "budget_holds";
    case Counter::LoopHolds: return "loop_holds";
    case Counter::HoldsJoined: return "budget_holds_joined";
    case Counter::JoinsWithoutHold: return "budget_holds_joined_unknown";
    case Counter::AdmittedOverBudget: return "admitted_over_budget";
    case Counter::ActionsInCooldown: return "actions_in_cooldown";
    case Counter::PacingHolds: return "pacing_holds";
    case Counter::CaptureHoldsBounded: return "capture_holds_bounded";
    case Counter::MaxHoldEscalations: return "max_hold_escalations";
    case Counter::UnseenExpired: return "released_requests_never_seen";
    case Counter::HoldsNotGated: return "holds_not_gated";
    case Counter::HoldsReleasedAtOnce: return "holds_released_at_once";
    case Counter::CaptureHoldsUnrecorded: return "capture_hold_events_unrecorded";
  }
  return "unknown";
}

Ledger::Ledger(std::shared_ptr<const policy::Policy> policy, Options options)
    : policy_(std::move(policy)), opts_(std::move(options)), engine_(policy_) {
  engine_.set_dry_run(opts_.dry_run);
}

// ---- processes -------------------------------------------------------------------------------

Ledger::Proc& Ledger::proc(uint32_t pid) {
  auto [it, fresh] = procs_.try_emplace(pid);
  if (fresh) {
    it->second.info.pid = pid;
    refresh_facts(it->second);
  }
  return it->second;
}

// What the policy makes of the process: recomputed when its facts or the policy change, not
// on every pass.
void Ledger::refresh_facts(Proc& p) {
  const uint32_t pid = p.info.pid;
  const uint32_t root = p.info.tree_root_pid ? p.info.tree_root_pid : pid;
  p.budget_gates = false;
  for (const auto& b : engine_.buckets_of(typical(p)))
    if (b.gates()) p.budget_gates = true;
  p.fan_out.reset();
  const auto& fo = policy_->loops.fan_out;
  if (fo.enabled && policy::gates(fo.action))
    if (auto key = policy::bucket_key(fo.match, fo.per, p.info.facts, pid, root)) p.fan_out = EntityKey::parse(*key);
}

EffectList Ledger::set_policy(std::shared_ptr<const policy::Policy> policy, int64_t now) {
  policy_ = std::move(policy);
  engine_.set_policy(policy_);
  for (auto& [pid, p] : procs_) refresh_facts(p);
  EffectList out;
  settle_holds(now, out);
  deal_credits(now, out);
  return out;
}

EffectList Ledger::process_attached(const ProcessInfo& info, int64_t now) {
  EffectList out;
  Proc& p = proc(info.pid);
  p.info = info;
  p.watched = true;
  refresh_facts(p);
  deal_credits(now, out);  // its gate before its capture hold lets its first request start go
  end_capture(info.pid, HoldEnd::Attached, now, out);
  return out;
}

EffectList Ledger::attach_failed(uint32_t pid, int64_t now) {
  EffectList out;
  end_capture(pid, HoldEnd::NotAttached, now, out);
  return out;
}

EffectList Ledger::process_detached(uint32_t pid, int64_t now) {
  EffectList out;
  auto it = procs_.find(pid);
  if (it == procs_.end()) return out;
  it->second.watched = false;
  if (holds_.count(pid)) let_go(pid, HoldEnd::Ungated, now, out);
  remove_gate(it->second, now, out);
  return out;
}

EffectList Ledger::process_exited(uint32_t pid, int64_t now) {
  EffectList out;
  // The kernel drops a stopped process's hold record at its exit; a frozen cgroup must be
  // thawed all the same (its other processes are frozen too).
  if (auto c = captures_.find(pid); c != captures_.end()) {
    if (c->second.via == HoldVia::Freeze) out.push_back(Release{pid, c->second.start_time, HoldReason::Capture, HoldVia::Freeze});
    if (c->second.recorded)
      record(pid, Resumed{HoldReason::Capture, HoldEnd::Exited, c->second.via, now - c->second.since_ns, std::nullopt}, out);
    captures_.erase(c);
  }
  if (auto h = holds_.find(pid); h != holds_.end()) {
    if (h->second.via == HoldVia::Freeze) out.push_back(Release{pid, h->second.start_time, h->second.reason, HoldVia::Freeze});
    record(pid, Resumed{h->second.reason, HoldEnd::Exited, h->second.via, now - h->second.since_ns, std::nullopt}, out);
    holds_.erase(h);
  }
  engine_.drop_held(pid);
  if (auto it = procs_.find(pid); it != procs_.end()) {
    Proc& p = it->second;
    if (p.prereserved) engine_.cancel(p.prereserved);
    for (auto& [stream, calls] : p.calls)
      for (const auto& c : calls)
        if (c.reservation) engine_.cancel(c.reservation);
    procs_.erase(it);
  }
  if (auto d = denied_.find(EntityKey::of_process(pid)); d != denied_.end()) {
    out.push_back(Undeny{d->first});
    denied_.erase(d);
  }
  capture_recorded_at_.erase(pid);
  out.push_back(ForgetProcess{pid});
  return out;
}

// ---- places ----------------------------------------------------------------------------------

int64_t Ledger::live_unseen(const Proc& p, int64_t now) const {
  int64_t n = 0;
  for (const auto& u : p.unseen) n += u.until_ns > now ? 1 : 0;
  return n;
}

int64_t Ledger::in_flight(const Proc& p, int64_t now) const {
  int64_t n = 0;
  for (const auto& [stream, calls] : p.calls)
    for (const auto& c : calls) n += now - c.started_ns < opts_.max_call_age_ns ? 1 : 0;
  return n;
}

int64_t Ledger::places(const Proc& p, int64_t now) const {
  return in_flight(p, now) + std::max<int64_t>(0, p.credits.value_or(0)) + live_unseen(p, now);
}

int64_t Ledger::fan_out_room(const EntityKey& entity, int64_t now) const {
  int64_t room = policy_->loops.fan_out.max_concurrent;
  for (const auto& [pid, p] : procs_)
    if (p.fan_out == entity) room -= places(p, now);
  return room;
}

// Every request start waiting in the hold takes a place when it goes; a hold with more threads
// waiting than the entity has places goes when the entity is empty (it cannot be split).
int64_t Ledger::places_needed(const BrakeHold& h) const {
  return std::clamp<int64_t>(h.waiting, 1, std::max<int64_t>(1, policy_->loops.fan_out.max_concurrent));
}

std::optional<EntityKey> Ledger::fan_out_entity(uint32_t pid) const {
  auto it = procs_.find(pid);
  if (it == procs_.end() || dry_run()) return std::nullopt;
  return it->second.fan_out;
}

// ---- credits ---------------------------------------------------------------------------------

bool Ledger::may_gate(int64_t now) const {
  if (dry_run()) return false;
  const auto& fo = policy_->loops.fan_out;
  if (fo.enabled && policy::gates(fo.action)) return true;
  for (const auto& b : policy_->budgets)
    if (policy::gates(b.action)) return true;
  for (const auto& [pid, p] : procs_)
    if (paced(p, now)) return true;
  return false;
}

bool Ledger::gates(const Proc& p, int64_t now) const {
  return !dry_run() && p.watched && (paced(p, now) || p.fan_out || p.budget_gates);
}

bool Ledger::gated(uint32_t pid, int64_t now) const {
  auto it = procs_.find(pid);
  return it != procs_.end() && gates(it->second, now);
}

std::optional<int64_t> Ledger::credits(uint32_t pid) const {
  auto it = procs_.find(pid);
  return it == procs_.end() ? std::nullopt : it->second.credits;
}

void Ledger::set_credit(Proc& p, int64_t credits, int64_t now, EffectList& out) {
  if (p.credits && *p.credits == credits) return;
  // Taken back from a running process: the kernel may be letting a request start go on it
  // right now, so its place stays counted a while.
  for (int64_t n = p.credits.value_or(0); n > credits; n--) p.unseen.push_back({now + opts_.retract_grace_ns, true});
  p.credits = credits;
  p.credits_written_ns = now;
  out.push_back(WriteCredit{p.info.pid, credits});
}

void Ledger::remove_gate(Proc& p, int64_t now, EffectList& out) {
  if (!p.credits) return;
  for (int64_t n = *p.credits; n > 0; n--) p.unseen.push_back({now + opts_.retract_grace_ns, true});
  p.credits.reset();
  out.push_back(RemoveGate{p.info.pid});
}

// The kernel found no credit at `kernel_at`. A credit we count that was written before then
// was taken by a request start we have not seen yet: its place counts until that is seen. One
// written since is taken back (the process is stopped: it cannot be using it).
void Ledger::credits_found_empty(Proc& p, int64_t kernel_at, int64_t now, EffectList& out) {
  if (!p.credits) return;
  if (*p.credits > 0 && (kernel_at == 0 || kernel_at >= p.credits_written_ns))
    for (int64_t n = *p.credits; n > 0; n--) p.unseen.push_back({now + opts_.unseen_bound_ns, false});
  if (*p.credits != 0) {
    p.credits = 0;
    p.credits_written_ns = now;
    out.push_back(WriteCredit{p.info.pid, 0});
  }
}

// One credit when a typical call of the process would be admitted now and its fan-out entity
// has a place. The probes' reservations stay until the pass ends, so credits dealt together
// fit in their buckets together; the engine's answer to a probe opens (or closes) a bucket's
// episode, but only alert-only buckets are reported from probes (a gating bucket is reported
// by the hold it causes).
void Ledger::deal_credits(int64_t now, EffectList& out) {
  if (!may_gate(now)) {
    for (auto& [pid, p] : procs_) remove_gate(p, now, out);
    return;
  }
  // Per fan-out entity, every place counted, and the places its held calls wait for set
  // aside: a new credit never overtakes a held call. (One pass over processes and holds, not
  // one per entity: with a tree per agent there are as many entities as processes.)
  std::map<EntityKey, int64_t> room;
  for (const auto& [pid, p] : procs_)
    if (p.fan_out) room[*p.fan_out] -= places(p, now);
  for (const auto& [pid, h] : holds_) {
    auto p = procs_.find(pid);
    if (!h.queued && p != procs_.end() && p->second.fan_out && !paced(p->second, now))
      room[*p->second.fan_out] -= places_needed(h);
  }
  for (auto& [e, r] : room) r += policy_->loops.fan_out.max_concurrent;
  auto room_of = [&](const EntityKey& e) -> int64_t& { return room[e]; };
  std::vector<uint64_t> probes;
  for (auto& [pid, p] : procs_) {
    if (!gates(p, now)) {
      remove_gate(p, now, out);
      continue;
    }
    if (holds_.count(pid)) continue;  // its credit comes with its release
    if (paced(p, now)) {
      set_credit(p, 0, now, out);
      continue;
    }
    bool took_place = false;
    if (p.fan_out && p.credits.value_or(0) <= 0) {  // a credit out is counted already
      int64_t& r = room_of(*p.fan_out);
      if (busy(p, now) || r <= 0) {
        set_credit(p, 0, now, out);
        continue;
      }
      r--;
      took_place = true;
    }
    brake::Decision d = engine_.admit(typical(p), now);
    if (d.admitted) probes.push_back(d.reservation_id);
    for (const auto& x : d.exceeded)
      if (!x.gates() && x.new_episode) {
        brake::Decision only;
        only.dry_run = d.dry_run;
        only.exceeded.push_back(x);
        note_exceeded(only, pid, false, now, out);
      }
    if (!d.admitted && took_place) room_of(*p.fan_out)++;
    set_credit(p, d.admitted ? 1 : 0, now, out);
  }
  for (uint64_t id : probes) engine_.cancel(id);
}

// ---- calls -----------------------------------------------------------------------------------

brake::CallFacts Ledger::typical(const Proc& p) const {
  brake::CallFacts c;
  c.pid = p.info.pid;
  c.tree_root_pid = p.info.tree_root_pid;
  c.facts = p.info.facts;
  if (c.facts.cgroup.empty()) c.facts.cgroup.push_back('/');  // the root
  if (p.last) {
    c.est_input_tokens = p.last->input;
    c.reserved_output_tokens = p.last->output;
    c.est_cost_usd = p.last->cost;
  } else {  // nothing known yet: a call as large as a request without max_tokens reserves
    c.est_input_tokens = 1;
    c.reserved_output_tokens = kDefaultReservedOutput;
  }
  return c;
}

brake::CallFacts Ledger::typical_call(uint32_t pid) const {
  auto it = procs_.find(pid);
  if (it != procs_.end()) return typical(it->second);
  Proc p;
  p.info.pid = pid;
  return typical(p);
}

brake::CallFacts Ledger::request_facts(const Proc& p, const RequestStart& r) const {
  brake::CallFacts c = typical(p);
  c.est_input_tokens = std::max<int64_t>(1, r.est_input_tokens);
  c.reserved_output_tokens = r.max_tokens > 0 ? r.max_tokens
                             : p.last             ? std::max<int64_t>(1, p.last->output)
                                                  : kDefaultReservedOutput;
  c.est_cost_usd = opts_.price ? opts_.price(r.model, c.est_input_tokens, c.reserved_output_tokens) : 0;
  return c;
}

EffectList Ledger::request_seen(const RequestStart& r, int64_t now) {
  EffectList out;
  Proc& p = proc(r.pid);
  // Every gated request start went out on a place: a release, a credit the kernel took, or a
  // credit still counted as out. The longest-lived place goes first: a retracted credit's is
  // the one the kernel most likely never used.
  bool on_place = false;
  if (r.gated_start) {
    auto live = std::max_element(p.unseen.begin(), p.unseen.end(),
                                 [](const Unseen& a, const Unseen& b) { return a.until_ns < b.until_ns; });
    if (live != p.unseen.end() && live->until_ns > now) {
      p.unseen.erase(live);
      on_place = true;
    } else if (p.credits && *p.credits > 0) {
      --*p.credits;  // the kernel took it
      on_place = true;
    }
  }
  const bool decided_in_kernel = on_place || p.credits.has_value();
  if (!r.is_llm) {
    if (on_place) deal_credits(now, out);
    return out;
  }
  brake::CallFacts facts = request_facts(p, r);
  if (!p.last) p.last = LastCall{facts.est_input_tokens, facts.reserved_output_tokens, facts.est_cost_usd};
  uint64_t reservation = 0;
  if (p.prereserved) {  // admitted when its hold was let go
    reservation = p.prereserved;
    p.prereserved = 0;
  } else if (decided_in_kernel) {
    reservation = engine_.force_admit(facts, now).reservation_id;
  } else {
    brake::Decision d = engine_.admit(facts, now);
    note_exceeded(d, r.pid, false, now, out);
    if (d.dry_run) record_would_hold(p, d, now, out);
    if (!d.admitted) {  // on the wire already: not gated, or let out by a foreground job
      d = engine_.force_admit(facts, now);
      count(Counter::AdmittedOverBudget);
    }
    reservation = d.reservation_id;
  }
  p.calls[r.stream].push_back({now, reservation});
  if (decided_in_kernel) deal_credits(now, out);
  return out;
}

EffectList Ledger::response_ended(const ResponseEnd& r, int64_t now) {
  EffectList out;
  auto it = procs_.find(r.pid);
  if (it == procs_.end()) return out;
  Proc& p = it->second;
  if (!r.usage_malformed) p.last = LastCall{r.input_tokens, r.output_tokens, r.cost_usd};
  if (auto s = p.calls.find(r.stream); s != p.calls.end() && !s->second.empty()) {
    const Call c = s->second.front();
    s->second.pop_front();
    if (s->second.empty()) p.calls.erase(s);
    // malformed usage: what was reserved stays counted (the estimate could be far below it)
    if (c.reservation)
      engine_.settle(c.reservation, r.usage_malformed ? -1 : r.input_tokens + r.output_tokens,
                     r.usage_malformed ? -1.0 : r.cost_usd, now);
  }
  settle_holds(now, out);  // room in its buckets and a place of its entity came back
  deal_credits(now, out);
  return out;
}

// ---- holds -----------------------------------------------------------------------------------

EffectList Ledger::hold_reported(const HoldReport& r, int64_t now) {
  EffectList out;
  if (r.capture) {
    if (r.taken == HoldReport::Taken::Joined) return out;  // not held by the kernel
    CaptureHold c{r.start_time, now, r.taken == HoldReport::Taken::Foreground ? HoldVia::Freeze : HoldVia::Stop, false};
    if (captures_.count(r.pid)) return out;  // held already: that hold goes on
    c.recorded = capture_record_allowed(r.pid, now);
    if (!c.recorded) count(Counter::CaptureHoldsUnrecorded);
    captures_.emplace(r.pid, c);
    out.push_back(Hold{r.pid, r.start_time, HoldReason::Capture, c.via});
    if (c.recorded) record(r.pid, Paused{HoldReason::Capture, c.via, {}, {}, {}, std::nullopt}, out);
    return out;
  }
  Proc& p = proc(r.pid);
  credits_found_empty(p, r.at_ns, now, out);
  if (r.taken == HoldReport::Taken::Joined) {
    if (auto h = holds_.find(r.pid); h != holds_.end()) {
      h->second.waiting++;
      count(Counter::HoldsJoined);
    } else {
      count(Counter::JoinsWithoutHold);
    }
    return out;
  }
  if (auto c = captures_.find(r.pid); c != captures_.end() && r.taken == HoldReport::Taken::Stopped) {
    // A request start without credit while its capture hold was being let go (SIGCONT sent,
    // record not yet deleted): the kernel made the record this hold's. One hold ends, the
    // other begins; nothing is let go.
    if (c->second.recorded)
      record(r.pid, Resumed{HoldReason::Capture, HoldEnd::BecameBudgetHold, c->second.via, now - c->second.since_ns, std::nullopt}, out);
    captures_.erase(c);
  }
  if (!gates(p, now)) {
    // Its gate entry went just before the kernel looked: a hold of nobody's making, let go.
    count(Counter::HoldsNotGated);
    if (r.taken == HoldReport::Taken::Stopped) out.push_back(Release{r.pid, r.start_time, HoldReason::Budget, HoldVia::Stop});
    return out;
  }
  if (auto h = holds_.find(r.pid); h != holds_.end()) {
    // Held already, and the kernel took a fresh hold (the last one was let go by someone else,
    // a manual resume): that hold goes on, its record kept.
    out.push_back(Hold{r.pid, r.start_time, h->second.reason, h->second.via});
    return out;
  }
  take_hold(p, r, now, out);
  return out;
}

std::optional<HoldReason> Ledger::pause_or_fan_out(const Proc& p, const BrakeHold& h, int64_t now) const {
  if (paced(p, now)) return p.pace_reason;  // a deliberate pause names the hold first
  if (p.fan_out && fan_out_room(*p.fan_out, now) < places_needed(h)) return HoldReason::FanOut;
  return std::nullopt;
}

void Ledger::take_hold(Proc& p, const HoldReport& r, int64_t now, EffectList& out) {
  const uint32_t pid = p.info.pid;
  BrakeHold h;
  h.seq = next_seq_++;
  h.start_time = r.start_time;
  h.since_ns = now;
  h.via = r.taken == HoldReport::Taken::Foreground ? HoldVia::Freeze : HoldVia::Stop;
  h.waiting = h.via == HoldVia::Stop ? 1 : 0;  // a frozen job's request went out already
  Paused paused;
  paused.via = h.via;
  bool release_now = false;
  std::vector<std::pair<EntityKey, std::string>> kills;  // budget kill: after the hold is recorded

  if (auto why = pause_or_fan_out(p, h, now)) {
    h.reason = *why;
    paused.reason = *why;
    if (*why == HoldReason::FanOut) paused.entity = p.fan_out;
    else paused.detector = *why == HoldReason::Loop ? p.pace_detector : "";
    count(Counter::LoopHolds);
  } else {
    brake::Decision d = engine_.admit(typical(p), now);
    note_exceeded(d, pid, /*held=*/!d.admitted, now, out);
    h.reason = HoldReason::Budget;
    paused.reason = HoldReason::Budget;
    for (const auto& x : d.blocking()) {
      if (std::find(paused.budgets.begin(), paused.budgets.end(), x.bucket.budget) == paused.budgets.end())
        paused.budgets.push_back(x.bucket.budget);
      if (std::find(paused.buckets.begin(), paused.buckets.end(), x.bucket.key) == paused.buckets.end())
        paused.buckets.push_back(x.bucket.key);
    }
    if (d.admitted) {  // room came back since the credit was dealt
      p.prereserved = d.reservation_id;
      release_now = true;
    } else {
      const policy::Action action = d.strongest_action().value_or(policy::Action::Throttle);
      for (const auto& x : d.blocking()) {
        auto entity = EntityKey::parse(x.bucket.key);
        if (!entity || x.action != action) continue;
        if (action == policy::Action::Kill) kills.emplace_back(*entity, x.bucket.budget);
        if (action == policy::Action::Deny) deny(*entity, pid, x.bucket.budget, out);
      }
      if (action != policy::Action::Kill) {
        engine_.hold(pid, r.start_time, typical(p), now);
        h.queued = true;
      }
      count(Counter::BudgetHolds);
    }
  }
  if (release_now) {
    // Its credit was on its way when the kernel looked: an admission round trip, not a hold
    // (no paused/resumed). The stopped request start goes now, on a place.
    count(Counter::HoldsReleasedAtOnce);
    if (h.via == HoldVia::Stop) {
      out.push_back(Release{pid, r.start_time, HoldReason::Budget, HoldVia::Stop});
      p.unseen.push_back({now + opts_.unseen_bound_ns, false});
    }
    deal_credits(now, out);
    return;
  }
  out.push_back(Hold{pid, r.start_time, h.reason, h.via});
  record(pid, paused, out);
  holds_[pid] = h;
  if (h.reason == HoldReason::FanOut) report_fan_out(p, now, out);
  if (!kills.empty()) {
    for (const auto& [e, budget] : kills) kill(e, pid, KillCause::Budget, budget, now, out);
    let_go(pid, HoldEnd::Killed, now, out);  // SIGKILL needs no SIGCONT, but the record goes
  }
}

// Holds whose reason is gone are let go, oldest first; every hold of max_hold escalates.
void Ledger::settle_holds(int64_t now, EffectList& out) {
  if (holds_.empty()) return;
  auto oldest_first = [&] {
    std::vector<std::pair<uint64_t, uint32_t>> order;
    for (const auto& [pid, h] : holds_) order.emplace_back(h.seq, pid);
    std::sort(order.begin(), order.end());
    return order;
  };
  const int64_t max_hold = ms_to_ns(policy_->max_hold);
  for (const auto& [seq, pid] : oldest_first()) {
    auto h = holds_.find(pid);
    if (h != holds_.end() && now - h->second.since_ns >= max_hold) escalate(proc(pid), h->second, now, out);
  }
  // The budget engine admits its held calls that fit now, oldest first (FIFO per bucket).
  for (auto& r : engine_.release_ready(now)) {
    auto h = holds_.find(r.held.pid);
    if (h == holds_.end()) {  // not ours any more
      if (r.decision.reservation_id) engine_.cancel(r.decision.reservation_id);
      continue;
    }
    h->second.queued = false;
    Proc& p = proc(r.held.pid);
    if (p.prereserved) engine_.cancel(p.prereserved);
    p.prereserved = r.decision.reservation_id;
  }
  // Oldest first, and a hold still waiting for places of its entity is not overtaken there.
  std::set<EntityKey> full;
  for (const auto& [seq, pid] : oldest_first()) {
    auto h = holds_.find(pid);
    if (h == holds_.end() || h->second.queued) continue;
    Proc& p = proc(pid);
    if (p.fan_out && full.count(*p.fan_out)) continue;
    if (auto why = pause_or_fan_out(p, h->second, now)) {  // still paced, or its entity still full
      if (*why == HoldReason::FanOut) full.insert(*p.fan_out);
      continue;
    }
    if (!p.prereserved) {  // a loop or fan-out hold over: its budget decides now
      brake::Decision d = engine_.admit(typical(p), now);
      note_exceeded(d, pid, /*held=*/!d.admitted, now, out);
      if (!d.admitted) {
        engine_.hold(pid, h->second.start_time, typical(p), now);
        h->second.queued = true;
        continue;
      }
      p.prereserved = d.reservation_id;
    }
    const bool paused_for_loop = h->second.reason == HoldReason::Loop || h->second.reason == HoldReason::Pacing;
    let_go(pid, paused_for_loop ? HoldEnd::PauseOver : HoldEnd::Room, now, out);
  }
}

void Ledger::escalate(Proc& p, BrakeHold& h, int64_t now, EffectList& out) {
  const uint32_t pid = p.info.pid;
  policy::Action action = policy::Action::Throttle;
  std::vector<std::pair<EntityKey, std::string>> kill_targets;
  KillCause cause = KillCause::MaxHold;
  auto why = pause_or_fan_out(p, h, now);
  if (h.queued || !why) {  // its budget holds it: the strongest gating bucket decides
    for (const auto& b : engine_.buckets_of(typical(p)))
      if (b.gates() && b.action > action) action = b.action;
    for (const auto& b : engine_.buckets_of(typical(p)))
      if (b.action == policy::Action::Kill)
        if (auto e = EntityKey::parse(b.id.key)) kill_targets.emplace_back(*e, b.id.budget);
  } else if (*why == HoldReason::FanOut) {
    action = policy_->loops.fan_out.action;
    if (p.fan_out) kill_targets.emplace_back(*p.fan_out, "fan_out");
  } else if (*why == HoldReason::Loop) {
    action = p.pace_escalation;
    for (const auto& e : p.pace_entities) kill_targets.emplace_back(e, p.pace_detector);
  }  // pacing: a provider's quota; throttle
  count(Counter::MaxHoldEscalations);
  if (h.queued) engine_.drop_held(pid);
  h.queued = false;
  if (action == policy::Action::Kill) {
    for (const auto& [e, by] : kill_targets) kill(e, pid, cause, by, now, out);
  } else if (!p.prereserved) {  // throttle/deny held past max_hold: the call goes, counted
    p.prereserved = engine_.force_admit(typical(p), now).reservation_id;
  }
  let_go(pid, HoldEnd::MaxHold, now, out, action);
}

void Ledger::let_go(uint32_t pid, HoldEnd end, int64_t now, EffectList& out, std::optional<policy::Action> escalation) {
  auto it = holds_.find(pid);
  if (it == holds_.end()) return;
  const BrakeHold h = it->second;
  holds_.erase(it);
  if (h.queued) engine_.drop_held(pid);
  Proc& p = proc(pid);
  out.push_back(Release{pid, h.start_time, h.reason, h.via});
  if (h.via == HoldVia::Stop && end != HoldEnd::Killed && end != HoldEnd::Exited)
    for (int64_t n = 0; n < h.waiting; n++) p.unseen.push_back({now + opts_.unseen_bound_ns, false});
  record(pid, Resumed{h.reason, end, h.via, now - h.since_ns, escalation}, out);
  undeny_for(p, out);
}

void Ledger::end_capture(uint32_t pid, HoldEnd end, int64_t now, EffectList& out) {
  auto c = captures_.find(pid);
  if (c == captures_.end()) return;
  out.push_back(Release{pid, c->second.start_time, HoldReason::Capture, c->second.via});
  if (c->second.recorded)
    record(pid, Resumed{HoldReason::Capture, end, c->second.via, now - c->second.since_ns, std::nullopt}, out);
  captures_.erase(c);
}

// A process whose TLS cannot be hooked is held again at each connect: one record per process
// per capture_record_every_ns, and a token bucket over all, so that cannot flood the store.
bool Ledger::capture_record_allowed(uint32_t pid, int64_t now) {
  if (auto it = capture_recorded_at_.find(pid); it != capture_recorded_at_.end() && now - it->second < opts_.capture_record_every_ns)
    return false;
  if (capture_tokens_ < 0) {
    capture_tokens_ = opts_.capture_record_burst;
    capture_tokens_at_ = now;
  }
  capture_tokens_ = std::min(opts_.capture_record_burst,
                             capture_tokens_ + double(now - capture_tokens_at_) / 1e9 * opts_.capture_records_per_s);
  capture_tokens_at_ = now;
  if (capture_tokens_ < 1) return false;
  capture_tokens_ -= 1;
  capture_recorded_at_[pid] = now;
  return true;
}

EffectList Ledger::request_refused(uint32_t pid, int64_t now) {
  EffectList out;
  Proc& p = proc(pid);
  brake::Decision d = engine_.admit(typical(p), now);
  if (d.reservation_id) engine_.cancel(d.reservation_id);
  if (!d.admitted) note_exceeded(d, pid, /*held=*/true, now, out);
  return out;
}

EffectList Ledger::pace(const Pace& pc, int64_t now) {
  EffectList out;
  Proc& p = proc(pc.pid);
  if (pc.reason == HoldReason::Pacing) count(Counter::PacingHolds);
  if (pc.until_ns >= p.paced_until) {  // what holds it longest names the hold
    p.pace_reason = pc.reason;
    p.pace_detector = pc.detector;
    p.pace_escalation = pc.escalation;
    p.pace_entities = pc.entities;
  }
  p.paced_until = std::max(p.paced_until, pc.until_ns);
  // from now on, not at the next pass: a fast retry would pass on the credit it has
  if (gates(p, now)) set_credit(p, 0, now, out);
  return out;
}

EffectList Ledger::loop_found(const LoopFinding& f, int64_t now) {
  EffectList out;
  if (f.action == policy::Action::Alert) return out;
  if (f.action == policy::Action::Kill) {
    if (!dry_run())
      for (const auto& e : f.entities) kill(e, f.pid, KillCause::Loop, f.detector, now, out);
    return out;
  }
  if (f.action == policy::Action::Deny && !dry_run())
    for (const auto& e : f.entities) deny(e, f.pid, f.detector, out);
  if (f.detector == "fan_out") return out;  // held by its places, not paused
  // Throttle (and deny): its members wait at their next request start until the pause is over.
  // In a dry run too: their requests are then recorded as ones a real run would have held.
  for (uint32_t m : f.members) {
    Pace pc{m, now + f.pause_ns, HoldReason::Loop, f.detector, f.action, f.entities};
    auto more = pace(pc, now);
    out.insert(out.end(), more.begin(), more.end());
  }
  return out;
}

EffectList Ledger::tick(int64_t now) {
  EffectList out;
  std::vector<uint32_t> bounded;
  for (const auto& [pid, c] : captures_)
    if (now - c.since_ns >= opts_.capture_bound_ns) bounded.push_back(pid);
  for (uint32_t pid : bounded) {
    count(Counter::CaptureHoldsBounded);
    end_capture(pid, HoldEnd::CaptureBound, now, out);
  }
  for (auto& [pid, p] : procs_) {
    if (p.paced_until && p.paced_until <= now) {
      p.paced_until = 0;
      p.pace_detector.clear();
      p.pace_entities.clear();
    }
    auto gone = std::remove_if(p.unseen.begin(), p.unseen.end(), [&](const Unseen& u) {
      if (u.until_ns > now) return false;
      if (!u.retracted) count(Counter::UnseenExpired);
      return true;
    });
    p.unseen.erase(gone, p.unseen.end());
  }
  settle_holds(now, out);
  deal_credits(now, out);
  if (now - pruned_at_ >= opts_.prune_every_ns) {
    pruned_at_ = now;
    prune(now);
  }
  return out;
}

// What only the past remembers goes once it can no longer matter: idle buckets and run-out
// cooldowns (the engine), kills older than killed_memory_ns, episodes older than the longest
// window, fan-out episodes past their quiet time, capture records past their interval.
void Ledger::prune(int64_t now) {
  engine_.forget_idle(now);
  std::erase_if(killed_, [&](const auto& k) { return now - k.second.at_ns > opts_.killed_memory_ns; });
  int64_t longest = kEpisodeFallbackNs;
  for (const auto& b : policy_->budgets)
    for (const auto& l : b.limits) longest = std::max(longest, ms_to_ns(l.window));
  std::erase_if(last_exceeded_, [&](const auto& e) { return now - e.second > longest; });
  std::erase_if(fan_out_held_at_, [&](const auto& e) { return now - e.second > opts_.fan_out_quiet_ns; });
  std::erase_if(capture_recorded_at_, [&](const auto& e) { return now - e.second > opts_.capture_record_every_ns; });
}

size_t Ledger::remembered() const {
  return killed_.size() + last_exceeded_.size() + fan_out_held_at_.size() + capture_recorded_at_.size() +
         engine_.snapshot(0).buckets.size();
}

EffectList Ledger::release_all(int64_t now) {
  EffectList out;
  for (uint32_t pid : held_pids()) let_go(pid, HoldEnd::ReleaseAll, now, out);
  std::vector<uint32_t> captured;
  for (const auto& [pid, c] : captures_) captured.push_back(pid);
  for (uint32_t pid : captured) end_capture(pid, HoldEnd::ReleaseAll, now, out);
  for (const auto& [e, by] : denied_) out.emplace_back(std::in_place_type<Undeny>, e);
  denied_.clear();
  for (auto& [pid, p] : procs_) {
    if (p.credits) out.push_back(RemoveGate{pid});
    p.credits.reset();
    p.unseen.clear();
  }
  return out;
}

// ---- queries ---------------------------------------------------------------------------------

std::optional<HoldView> Ledger::hold_of(uint32_t pid) const {
  auto it = holds_.find(pid);
  if (it == holds_.end()) return std::nullopt;
  return HoldView{it->second.reason, it->second.via, it->second.since_ns, it->second.waiting};
}

std::vector<uint32_t> Ledger::held_pids() const {
  std::vector<std::pair<uint64_t, uint32_t>> order;
  for (const auto& [pid, h] : holds_) order.emplace_back(h.seq, pid);
  std::sort(order.begin(), order.end());
  std::vector<uint32_t> pids;
  for (const auto& [seq, pid] : order) pids.push_back(pid);
  return pids;
}

// ---- actions and records ---------------------------------------------------------------------

void Ledger::record(uint32_t pid, decltype(Event::what) what, EffectList& out) const {
  out.push_back(Record{Event{pid, dry_run(), std::move(what)}});
}

// budget_exceeded once per episode: the engine opens an episode when a call finds no room and
// closes it when one finds room again; under steady pressure that happens every window, so an
// episode that reopens within one window of the last report is the same episode. `held`: the
// decision of a request actually held; its episode is reported even if a credit probe opened
// it earlier (probes use an estimate and never report gating buckets).
void Ledger::note_exceeded(const brake::Decision& d, uint32_t pid, bool held, int64_t now, EffectList& out) {
  for (const auto& x : d.exceeded) {
    if (x.reason == brake::Exceeded::Reason::Queue) continue;
    const bool fresh = x.new_episode || held;
    const int64_t span = x.window_ns > 0 ? x.window_ns : kEpisodeFallbackNs;
    auto last = last_exceeded_.find(x.bucket);
    const bool recent = last != last_exceeded_.end() && now - last->second < span;
    if (fresh || recent) last_exceeded_[x.bucket] = now;
    if (!fresh || recent) continue;
    record(pid, BudgetExceeded{x}, out);
  }
}

// Reported once per episode: again only after the entity went fan_out_quiet_ns without a hold.
// The rule's action applies then (deny, kill); throttle is the hold itself.
void Ledger::report_fan_out(const Proc& p, int64_t now, EffectList& out) {
  if (!p.fan_out) return;
  auto last = fan_out_held_at_.find(*p.fan_out);
  const bool same_episode = last != fan_out_held_at_.end() && now - last->second < opts_.fan_out_quiet_ns;
  fan_out_held_at_[*p.fan_out] = now;
  if (same_episode) return;
  const policy::Action action = policy_->loops.fan_out.action;
  const int64_t concurrent = policy_->loops.fan_out.max_concurrent - fan_out_room(*p.fan_out, now) + 1;
  record(p.info.pid, FanOutHeld{*p.fan_out, concurrent, action}, out);
  if (action == policy::Action::Kill) kill(*p.fan_out, p.info.pid, KillCause::Loop, "fan_out", now, out);
  if (action == policy::Action::Deny) deny(*p.fan_out, p.info.pid, "fan_out", out);
}

// Dry run: what a real run would have done with this request (it goes out regardless).
void Ledger::record_would_hold(const Proc& p, const brake::Decision& d, int64_t now, EffectList& out) {
  const uint32_t pid = p.info.pid;
  if (p.fan_out && fan_out_room(*p.fan_out, now) <= 0) {
    record(pid, Paused{HoldReason::FanOut, HoldVia::Stop, {}, {}, {}, p.fan_out}, out);
    return;
  }
  if (paced(p, now)) {
    record(pid, Paused{p.pace_reason, HoldVia::Stop, {}, {}, p.pace_reason == HoldReason::Loop ? p.pace_detector : "", std::nullopt}, out);
    return;
  }
  const auto action = d.strongest_action();
  if (!action) return;
  if (*action == policy::Action::Kill) {
    for (const auto& x : d.blocking())
      if (x.action == policy::Action::Kill)
        if (auto e = EntityKey::parse(x.bucket.key)) kill(*e, pid, KillCause::Budget, x.bucket.budget, now, out);
    return;
  }
  Paused paused{HoldReason::Budget, HoldVia::Stop, {}, {}, {}, std::nullopt};
  for (const auto& x : d.blocking()) {
    if (std::find(paused.budgets.begin(), paused.budgets.end(), x.bucket.budget) == paused.budgets.end())
      paused.budgets.push_back(x.bucket.budget);
    if (std::find(paused.buckets.begin(), paused.buckets.end(), x.bucket.key) == paused.buckets.end())
      paused.buckets.push_back(x.bucket.key);
  }
  record(pid, paused, out);
}

// At most once per cooldown per entity (the engine keeps the cooldowns). The record comes
// first, while the entity's processes can still be listed. Dry run: recorded, not done.
bool Ledger::kill(const EntityKey& e, uint32_t pid, KillCause cause, const std::string& by, int64_t now, EffectList& out) {
  if (!engine_.action_allowed(e.str(), now)) {
    count(Counter::ActionsInCooldown);
    return false;
  }
  engine_.note_action(e.str(), now);
  killed_[e] = {cause, now};
  record(pid, Killed{e, cause, by}, out);
  if (!dry_run()) out.push_back(Kill{e});
  return true;
}

void Ledger::deny(const EntityKey& e, uint32_t pid, const std::string& by, EffectList& out) {
  if (dry_run() || denied_.count(e)) return;
  denied_[e] = by;
  out.push_back(Deny{e});
  record(pid, Denied{e, by}, out);
}

// A deny ends when a held request of its entity is let go.
void Ledger::undeny_for(const Proc& p, EffectList& out) {
  const uint32_t root = p.info.tree_root_pid ? p.info.tree_root_pid : p.info.pid;
  const std::string cgroup = p.info.facts.cgroup.empty() ? "/" : p.info.facts.cgroup;
  for (auto it = denied_.begin(); it != denied_.end();) {
    if (!it->first.covers(cgroup, root, p.info.pid)) {
      ++it;
      continue;
    }
    out.emplace_back(std::in_place_type<Undeny>, it->first);
    record(p.info.pid, Undenied{it->first}, out);
    it = denied_.erase(it);
  }
}

}  // namespace ab::gate

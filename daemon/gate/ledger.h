// ledger.h — the gate: which request starts of which processes may go, who is held, for what
// reason and since when, who is let go first, and what every place of a fan-out entity is
// taken by. Pure: no I/O, no BPF, no clock. Every input carries now_ns (monotonic, the clock
// of the kernel's bpf_ktime_get_ns; tests use a fake one) and returns the effects to apply,
// in order (effects.h). The budget arithmetic (windows, buckets, the hold queue's FIFO) is
// brake::BudgetEngine's; the ledger owns one and is the only caller of its admission.
//
// How the kernel and the ledger share the work (docs/enforcement.md):
//  - A gated process has a gate map entry with credits. The TLS write uprobe lets a request
//    start ("POST ") through while credits > 0, taking one, and stops the process otherwise,
//    recording the hold and reporting it (hold_reported).
//  - A process gets one credit while every bucket it falls in has room for a typical call of
//    it (its last call, 256 output tokens before its first), its fan-out entity has a place,
//    it is not paced and not held. Credits dealt in one pass are reserved together, so
//    processes sharing a bucket never each receive its last room.
//
// Places (fan_out max_concurrent). An entity's places are taken by its calls in flight (seen,
// response not ended) and by the request starts that may go but are not seen yet:
//  - a credit written: counted from the write until a request start is seen on it. A credit
//    is never taken back from a running process without being counted on: the kernel may be
//    using it at that moment, so a retracted credit keeps its place for retract_grace_ns;
//  - a credit the kernel took (it found none at a later hold, written before that hold):
//    counted until its request is seen (the ring buffer reports holds before the requests
//    reassembled in the same batch);
//  - a hold let go: its request start, and the one of every thread that joined the hold,
//    counted until seen;
//  each at most unseen_bound_ns (a request never seen, e.g. not captured, gives its place back).
// A process busy with a call (in flight or let go unseen) gets no new credit: its next
// concurrent call asks again at its start, so an idle process holds one place at most.
//
// Holds. Every hold is a `paused` record when taken and a `resumed` record with held_ns when
// it ends; every hold ends after max_hold at the latest (capture holds after capture_bound_ns)
// with an escalation: the rule's action (budget: the strongest gating bucket's; fan_out: the
// rule's; loop: the detector's; pacing: throttle). A kill escalation kills the entity; any
// other releases the call (counted in its buckets regardless). Holds are let go oldest first.
//
// Dry run (policy mode observe, or Options::dry_run): no credit, no hold, no deny, no kill.
// Every request is still judged: a request a real run would have held is recorded as
// `paused` (dry_run true), budget_exceeded as usual (dry_run true).
//
// Not thread-safe: owned by the daemon's event loop.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "brake/budget_engine.h"
#include "gate/effects.h"
#include "gate/entity.h"
#include "policy/policy.h"

namespace ab::gate {

// A process as the daemon attributes it.
struct ProcessInfo {
  uint32_t pid = 0;
  uint64_t start_time = 0;     // with pid, names the process
  uint32_t tree_root_pid = 0;  // 0: it is its own tree root
  policy::ProcessFacts facts;
};

// A request seen in user space (reassembled from its TLS writes).
struct RequestStart {
  uint32_t pid = 0;
  uint64_t stream = 0;       // its connection (SSL object): responses end in order per stream
  bool gated_start = true;   // a start the kernel gates ("POST "): it went out on a place
  bool is_llm = false;       // an LLM call: admitted, and in flight until its response ends
  int64_t est_input_tokens = 1;
  int64_t max_tokens = -1;   // -1: the request names none
  std::string model;         // prices the reservation
};

struct ResponseEnd {
  uint32_t pid = 0;
  uint64_t stream = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  double cost_usd = 0;
  bool usage_malformed = false;  // the counts cannot be trusted: the reservation stays counted
};

// A hold the kernel reports (an AB_EV_HOLD record).
struct HoldReport {
  enum class Taken : uint8_t {
    Stopped,     // the kernel stopped the process and recorded the hold
    Foreground,  // a terminal's foreground job: not stopped, its request went out; freeze it
    Joined,      // another thread of a process already held reached a request start: it
                 // waits in that hold and goes when it is let go
  };
  uint32_t pid = 0;
  uint64_t start_time = 0;
  bool capture = false;  // at a first connect (until probes are attached), not a request start
  Taken taken = Taken::Stopped;
  int64_t at_ns = 0;     // when the kernel held (its clock); 0: unknown
};

// Hold the process's next request starts until until_ns (a loop finding's pause, a provider's
// quota reset).
struct Pace {
  uint32_t pid = 0;
  int64_t until_ns = 0;
  HoldReason reason = HoldReason::Loop;          // Loop or Pacing
  std::string detector;                          // Loop: the detector
  policy::Action escalation = policy::Action::Throttle;  // what max_hold escalates to
  std::vector<EntityKey> entities;               // killed when the escalation is kill
};

// A loop detector's finding, as far as the gate acts on it.
struct LoopFinding {
  std::string detector;  // loops::kRepetition, ...
  policy::Action action = policy::Action::Alert;
  std::vector<EntityKey> entities;  // deny / kill these
  std::vector<uint32_t> members;    // throttle / deny: pace these
  uint32_t pid = 0;                 // the process the records name
  int64_t pause_ns = 0;             // how long members are paced (not for fan_out: its credits hold it)
};

enum class Counter : uint8_t {
  BudgetHolds,          // holds a budget took
  LoopHolds,            // holds taken for loop, fan_out or pacing
  HoldsJoined,          // request starts of a second thread that joined a hold
  JoinsWithoutHold,     // ... of a process the ledger knew no hold of
  AdmittedOverBudget,   // requests seen that no credit or release let go, over their budget
  ActionsInCooldown,    // kills not taken: the entity was killed less than `cooldown` ago
  PacingHolds,          // paces asked for by providers' quota headers
  CaptureHoldsBounded,  // capture holds let go by the bound, not by attaching
  MaxHoldEscalations,   // holds ended by max_hold
  UnseenExpired,        // request starts let go that were never seen (their place came back)
  HoldsNotGated,        // holds of a process the ledger does not gate (let go at once)
  HoldsReleasedAtOnce,  // request starts stopped while their credit was on its way: let go in
                        // the same pass, not a hold (no paused/resumed)
  CaptureHoldsUnrecorded,  // capture holds whose paused/resumed the rate limit left out
};
inline constexpr size_t kCounters = 13;
std::string_view to_string(Counter);  // the status counter's name ("budget_holds", ...)
using Counters = std::array<uint64_t, kCounters>;

struct HoldView {
  HoldReason reason = HoldReason::Budget;
  HoldVia via = HoldVia::Stop;
  int64_t since_ns = 0;
  int64_t waiting = 1;  // request starts that go when it is let go
};

struct KilledView {
  KillCause cause = KillCause::Budget;
  int64_t at_ns = 0;
};

class Ledger {
 public:
  struct Options {
    // USD of a call of `model` with these tokens (the reservation's price); none: 0.
    std::function<double(const std::string& model, int64_t input_tokens, int64_t output_tokens)> price;
    bool dry_run = false;                                      // on top of the policy's mode
    int64_t capture_bound_ns = 5'000'000'000;                  // a capture hold never lasts longer
    int64_t unseen_bound_ns = 30'000'000'000;                  // a place let go and never seen
    int64_t retract_grace_ns = 2'000'000'000;                  // a credit taken back from a running process
    int64_t max_call_age_ns = 30LL * 60 * 1'000'000'000;       // a call whose end never came stops counting
    int64_t fan_out_quiet_ns = 60'000'000'000;                 // fan-out episode: re-armed after this long unheld
    int64_t capture_record_every_ns = 60'000'000'000;          // one capture paused/resumed per process per …
    double capture_records_per_s = 10, capture_record_burst = 100;  // … and at most so many of all processes
    int64_t prune_every_ns = 60'000'000'000;                   // tick: idle state forgotten this often
    int64_t killed_memory_ns = 3600LL * 1'000'000'000;         // a kill is shown (agents: killed) this long
  };

  Ledger(std::shared_ptr<const policy::Policy> policy, Options options);

  // ---- inputs: each returns the effects to apply, in order; empty when nothing is to be done

  // Swaps the policy (BudgetEngine::set_policy: levels and holds survive), re-deals credits.
  EffectList set_policy(std::shared_ptr<const policy::Policy> policy, int64_t now_ns);
  // Its probes are attached: from now on it may be gated. Its credit is written first, then
  // its capture hold (if any) is let go, so its first request start finds its gate. Also an
  // update when its attribution changed (cgroup, tree).
  EffectList process_attached(const ProcessInfo& info, int64_t now_ns);
  // Attaching failed or was not needed: its capture hold (if any) is let go.
  EffectList attach_failed(uint32_t pid, int64_t now_ns);
  // Its probes are gone (not an LLM client after all): no longer gated, its hold let go.
  EffectList process_detached(uint32_t pid, int64_t now_ns);
  // The process is gone: its holds end, its reservations are withdrawn, its state forgotten.
  EffectList process_exited(uint32_t pid, int64_t now_ns);

  EffectList hold_reported(const HoldReport& report, int64_t now_ns);
  EffectList request_seen(const RequestStart& request, int64_t now_ns);
  EffectList response_ended(const ResponseEnd& response, int64_t now_ns);
  // A request start the kernel refused instead of holding (an opaque process's, at its socket:
  // no hook there can stop a process): the budget that closed its gate is reported as for a
  // hold (budget_exceeded), nothing reserved.
  EffectList request_refused(uint32_t pid, int64_t now_ns);
  EffectList pace(const Pace& pace, int64_t now_ns);
  EffectList loop_found(const LoopFinding& finding, int64_t now_ns);
  // Timer: max_hold and the capture bound, holds whose reason is gone, credits.
  EffectList tick(int64_t now_ns);
  // The daemon stops: every hold let go (resumed with release_all), every deny lifted, every
  // gate entry removed.
  EffectList release_all(int64_t now_ns);

  // ---- queries

  bool dry_run() const { return engine_.dry_run(); }
  bool gated(uint32_t pid, int64_t now_ns) const;
  std::optional<HoldView> hold_of(uint32_t pid) const;  // a request-start hold (not capture)
  size_t holds() const { return holds_.size(); }
  size_t capture_holds() const { return captures_.size(); }
  std::vector<uint32_t> held_pids() const;               // request-start holds, oldest first
  const std::map<EntityKey, std::string>& denied() const { return denied_; }  // → by whom
  const std::map<EntityKey, KilledView>& killed() const { return killed_; }
  std::optional<EntityKey> fan_out_entity(uint32_t pid) const;  // while the fan_out rule gates
  // Calls the entity may still start: max_concurrent less every place taken.
  int64_t fan_out_room(const EntityKey& entity, int64_t now_ns) const;
  std::optional<int64_t> credits(uint32_t pid) const;   // what its gate entry holds; none: no entry
  brake::CallFacts typical_call(uint32_t pid) const;
  const brake::BudgetEngine& budgets() const { return engine_; }
  brake::BudgetEngine& budgets() { return engine_; }     // restore() at start-up
  const Counters& counters() const { return counters_; }
  // Entries of the tables that only grow with the host's history (kills, episodes, capture
  // records, the budget engine's buckets): bounded by pruning at tick.
  size_t remembered() const;
  uint64_t counter(Counter c) const { return counters_[static_cast<size_t>(c)]; }

 private:
  struct Call {
    int64_t started_ns = 0;
    uint64_t reservation = 0;
  };
  struct Unseen {
    int64_t until_ns = 0;    // its place counts until then at the latest
    bool retracted = false;  // a credit taken back: the kernel may not have used it at all
  };
  struct LastCall {
    int64_t input = 1, output = 256;
    double cost = 0;
  };
  struct Proc {
    ProcessInfo info;
    bool watched = false;
    bool budget_gates = false;                // it falls in a gating bucket
    std::optional<EntityKey> fan_out;         // its entity while the fan_out rule gates
    std::optional<int64_t> credits;           // the gate entry, less what was seen used
    int64_t credits_written_ns = 0;
    std::vector<Unseen> unseen;
    std::map<uint64_t, std::deque<Call>> calls;  // by stream, oldest first
    std::optional<LastCall> last;
    uint64_t prereserved = 0;                 // admitted when let go, for its next request
    // paced until (Loop or Pacing), and by what
    int64_t paced_until = 0;
    HoldReason pace_reason = HoldReason::Loop;
    std::string pace_detector;
    policy::Action pace_escalation = policy::Action::Throttle;
    std::vector<EntityKey> pace_entities;
  };
  struct BrakeHold {
    uint64_t seq = 0;          // order of taking: release order among equals
    uint64_t start_time = 0;
    int64_t since_ns = 0;
    HoldReason reason = HoldReason::Budget;  // as its `paused` said
    HoldVia via = HoldVia::Stop;
    int64_t waiting = 1;       // request starts waiting in it (a frozen job's went out: 0)
    bool queued = false;       // in the budget engine's hold queue
  };
  struct CaptureHold {
    uint64_t start_time = 0;
    int64_t since_ns = 0;
    HoldVia via = HoldVia::Stop;
    bool recorded = false;     // its `paused` was recorded, so its `resumed` will be
  };

  Proc& proc(uint32_t pid);
  void refresh_facts(Proc& p);
  bool gates(const Proc& p, int64_t now) const;
  bool may_gate(int64_t now) const;
  bool paced(const Proc& p, int64_t now) const { return p.paced_until > now; }
  int64_t live_unseen(const Proc& p, int64_t now) const;
  int64_t in_flight(const Proc& p, int64_t now) const;
  int64_t places(const Proc& p, int64_t now) const;
  bool busy(const Proc& p, int64_t now) const { return in_flight(p, now) > 0 || live_unseen(p, now) > 0; }
  int64_t places_needed(const BrakeHold& h) const;
  brake::CallFacts typical(const Proc& p) const;
  brake::CallFacts request_facts(const Proc& p, const RequestStart& r) const;

  void deal_credits(int64_t now, EffectList& out);
  void set_credit(Proc& p, int64_t credits, int64_t now, EffectList& out);
  void remove_gate(Proc& p, int64_t now, EffectList& out);
  void credits_found_empty(Proc& p, int64_t kernel_at, int64_t now, EffectList& out);

  void take_hold(Proc& p, const HoldReport& r, int64_t now, EffectList& out);
  // What a hold waits on now (nullopt: nothing but, perhaps, its budget).
  std::optional<HoldReason> pause_or_fan_out(const Proc& p, const BrakeHold& h, int64_t now) const;
  void settle_holds(int64_t now, EffectList& out);
  void escalate(Proc& p, BrakeHold& h, int64_t now, EffectList& out);
  void let_go(uint32_t pid, HoldEnd end, int64_t now, EffectList& out,
              std::optional<policy::Action> escalation = std::nullopt);
  void end_capture(uint32_t pid, HoldEnd end, int64_t now, EffectList& out);
  bool capture_record_allowed(uint32_t pid, int64_t now);

  void note_exceeded(const brake::Decision& d, uint32_t pid, bool held, int64_t now, EffectList& out);
  void report_fan_out(const Proc& p, int64_t now, EffectList& out);
  void record_would_hold(const Proc& p, const brake::Decision& d, int64_t now, EffectList& out);
  bool kill(const EntityKey& e, uint32_t pid, KillCause cause, const std::string& by, int64_t now, EffectList& out);
  void deny(const EntityKey& e, uint32_t pid, const std::string& by, EffectList& out);
  void undeny_for(const Proc& p, EffectList& out);
  void record(uint32_t pid, decltype(Event::what) what, EffectList& out) const;
  void count(Counter c) { counters_[static_cast<size_t>(c)]++; }
  void prune(int64_t now);

  std::shared_ptr<const policy::Policy> policy_;
  Options opts_;
  brake::BudgetEngine engine_;
  std::map<uint32_t, Proc> procs_;
  std::map<uint32_t, BrakeHold> holds_;
  std::map<uint32_t, CaptureHold> captures_;
  uint64_t next_seq_ = 1;
  std::map<EntityKey, std::string> denied_;
  std::map<EntityKey, KilledView> killed_;
  std::map<brake::BucketId, int64_t> last_exceeded_;  // bucket → its last budget_exceeded
  std::map<EntityKey, int64_t> fan_out_held_at_;      // entity → last held (episodes)
  std::map<uint32_t, int64_t> capture_recorded_at_;   // pid → its last recorded capture hold
  double capture_tokens_ = -1;                        // capture records' token bucket (-1: full)
  int64_t capture_tokens_at_ = 0;
  int64_t pruned_at_ = 0;
  Counters counters_{};
};

}  // namespace ab::gate

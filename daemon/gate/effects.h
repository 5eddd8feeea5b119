// effects.h — what the gate (ledger.h) asks the world to do, as plain structs, and the one
// interface that does it.
//
// The ledger decides; an Effects implementation acts. The kernel one lives in daemon/core
// (BPF maps, signals, cgroup freeze and kill, the store); DryRunEffects below passes records
// on and withholds every action; tests record what they are given.
//
// Effects come in the order they must be applied: a credit is written before the capture
// hold that would let its request start is released, a `killed` record is made while the
// entity's processes can still be listed, and so on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "brake/budget_engine.h"
#include "gate/entity.h"
#include "policy/policy.h"

namespace ab::gate {

// Why a process is held. Capture: at its first LLM connect, until its TLS probes are attached;
// the others at a request start: budget (a bucket has no room), loop (paced by a loop
// finding), fan_out (its entity has max_concurrent calls in flight), pacing (the provider's
// quota is used up until its reset).
enum class HoldReason : uint8_t { Capture, Budget, Loop, FanOut, Pacing };
inline constexpr size_t kHoldReasons = 5;
std::string_view to_string(HoldReason);  // "capture", "budget", "loop", "fan_out", "pacing"

// How a hold stops the process.
enum class HoldVia : uint8_t {
  Stop,    // the kernel stopped it (SIGSTOP) and keeps a record in the pinned holds map
  Freeze,  // a terminal's foreground job: held by the daemon (its request went out already)
  Ptrace,  // ... and it was held by ptrace, not by freezing its cgroup (events only: set by the
           // host's effects, core/kernel_effects.cpp; the ledger knows Stop and Freeze)
};
std::string_view to_string(HoldVia);  // "sigstop", "freeze", "ptrace"

// How a hold ended (the `released` of a resumed event).
enum class HoldEnd : uint8_t {
  Room,             // its buckets (and its fan-out entity) have room again
  PauseOver,        // the loop or pacing pause is over
  MaxHold,          // held max_hold: released (or killed) with an escalation
  Killed,           // its entity was killed instead (action kill)
  Exited,           // the process is gone
  ReleaseAll,       // the daemon stops, or --release-all
  Attached,         // capture: its probes are attached
  NotAttached,      // capture: attaching failed or was not needed; it goes on unwatched
  CaptureBound,     // capture: held longer than the capture bound, let go regardless
  BecameBudgetHold, // capture: a request start without credit turned it into a budget hold
  Ungated,          // the process is no longer gated (detached, or the policy cannot hold it)
};
std::string_view to_string(HoldEnd);  // "room", "pause_over", "max_hold", ...

// ---- events (the `record` effect) ------------------------------------------------------------

enum class EventKind : uint8_t { BudgetExceeded, Paused, Resumed, Denied, Killed, LoopDetected };
inline constexpr size_t kEventKinds = 6;
std::string_view to_string(EventKind);  // the store's names: "budget_exceeded", "paused", ...

// A bucket entered an episode (once per episode: see Ledger, "budget_exceeded").
struct BudgetExceeded {
  brake::Exceeded exceeded;
};

struct Paused {
  HoldReason reason = HoldReason::Budget;
  HoldVia via = HoldVia::Stop;
  std::vector<std::string> budgets, buckets;  // budget holds: what holds it
  std::string detector;                       // loop holds: the detector that paced it
  std::optional<EntityKey> entity;            // fan-out holds: the entity at its limit
};

struct Resumed {
  HoldReason reason = HoldReason::Budget;  // the hold's, as its `paused` said
  HoldEnd end = HoldEnd::Room;
  HoldVia via = HoldVia::Stop;
  int64_t held_ns = 0;
  std::optional<policy::Action> escalation;  // HoldEnd::MaxHold: the action the hold escalated to
};

// A denied entity is let go (its held request was released).
struct Undenied {
  EntityKey entity;
};

struct Denied {
  EntityKey entity;
  std::string by;  // the budget, or the loop detector
};

enum class KillCause : uint8_t { Budget, MaxHold, Loop };
std::string_view to_string(KillCause);  // "budget", "max_hold", "loop"

struct Killed {
  EntityKey entity;
  KillCause cause = KillCause::Budget;
  std::string by;  // the budget, or the loop detector
};

// A call held because its fan-out entity is at max_concurrent: the fan-out finding (the
// detector never sees the excess call, since it never leaves). Once per episode.
struct FanOutHeld {
  EntityKey entity;
  int64_t concurrent = 0;  // calls in flight or let go, the held one included
  policy::Action action = policy::Action::Throttle;
};

struct Event {
  uint32_t pid = 0;  // the process it is about; 0 when none
  bool dry_run = false;
  std::variant<BudgetExceeded, Paused, Resumed, Undenied, Denied, Killed, FanOutHeld> what;
  EventKind kind() const;
};

// ---- effects ---------------------------------------------------------------------------------

// The gate map entry of `pid` holds `credits` request starts (created if absent).
struct WriteCredit {
  uint32_t pid = 0;
  int64_t credits = 0;
};
// The process is no longer gated: its gate map entry goes.
struct RemoveGate {
  uint32_t pid = 0;
};
// Hold the process. Stop: the kernel holds it already; its record must stay (restored if it
// went with a capture record deleted just then). Freeze: freeze its cgroup.
struct Hold {
  uint32_t pid = 0;
  uint64_t start_time = 0;  // with pid, names the process (pid reuse)
  HoldReason reason = HoldReason::Budget;
  HoldVia via = HoldVia::Stop;
};
// Let a hold go: SIGCONT (or thaw), then its record goes; a capture record only if it is still
// one (a request start may have turned it into a budget hold's in between).
struct Release {
  uint32_t pid = 0;
  uint64_t start_time = 0;
  HoldReason reason = HoldReason::Budget;
  HoldVia via = HoldVia::Stop;
};
// New connects to LLM endpoints from the entity fail; Undeny lifts that.
struct Deny {
  EntityKey entity;
};
struct Undeny {
  EntityKey entity;
};
struct Kill {
  EntityKey entity;
};
// The process exited: whatever the kernel side keeps for it (gate entry, denied pid) goes.
struct ForgetProcess {
  uint32_t pid = 0;
};
struct Record {
  Event event;
};

using Effect = std::variant<WriteCredit, RemoveGate, Hold, Release, Deny, Undeny, Kill, ForgetProcess, Record>;
using EffectList = std::vector<Effect>;

// Whether an effect acts on the host (everything but Record).
inline bool acts(const Effect& e) { return !std::holds_alternative<Record>(e); }

// Whether it brakes: acts, and not on a capture hold (watching a process is not braking it:
// its capture hold is taken, and must be let go, in a dry run too).
bool brakes(const Effect& e);

class Effects {
 public:
  virtual ~Effects() = default;
  virtual void apply(const Effect&) = 0;
  void apply_all(const EffectList& list) {
    for (const auto& e : list) apply(e);
  }
};

// Dry run: records and capture holds are passed on to `inner`, every brake is withheld and
// counted. The ledger in a dry run asks for no brake anyway; this makes sure none slips
// through.
class DryRunEffects : public Effects {
 public:
  explicit DryRunEffects(Effects& inner) : inner_(inner) {}
  void apply(const Effect& e) override;
  uint64_t withheld() const { return withheld_; }  // brakes not applied

 private:
  Effects& inner_;
  uint64_t withheld_ = 0;
};

}  // namespace ab::gate

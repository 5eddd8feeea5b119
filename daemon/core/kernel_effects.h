// kernel_effects.h — the gate's effects (gate/effects.h) done on the host: BPF gate, holds and
// deny maps, SIGCONT/SIGKILL through pidfds, cgroup freeze and cgroup.kill.
//
// The ledger decides and this applies, in the order given. It decides nothing of its own but
// two refusals that protect the host whatever the policy says:
//   - no kill or deny of the root cgroup, init.scope, the daemon's own cgroup or any ancestor
//     of it, nor of the daemon's process (counted as actions_refused, logged as an error);
//   - a hold that could not be taken (a foreground job neither frozen nor traced) records no
//     paused and no resumed: what was not held is not reported as held;
//   - a foreground job's hold (HoldVia::Freeze) freezes its cgroup only when the cgroup holds
//     its job alone, else holds the process by ptrace (core/capture_freeze.h); its paused and
//     resumed then say via "ptrace".
// Records are handed to the daemon (Hooks::record), which renders and stores them.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/capture_freeze.h"
#include "gate/effects.h"
#include "loader/bpf_runtime.h"

namespace ab::core {

enum class KernelCounter : uint8_t {
  HoldRecordsRestored,      // a budget hold's kernel record re-made (gone with a capture record)
  CaptureFreezes,           // foreground jobs' cgroups frozen for a capture hold
  CaptureFreezesSkipped,    // ... not frozen (not safe, or the write failed)
  HoldFreezes,              // foreground jobs' cgroups frozen for a brake hold
  HoldFreezesSkipped,       // ... not frozen
  ActionsRefused,           // kills and denies refused: the daemon's own cgroup, an ancestor, init
  KillErrors,               // cgroup.kill or SIGKILL failed (partly)
  ReleasesOfGoneProcesses,  // SIGCONT found the process gone (or another one at its pid)
  ForegroundPtraceHolds,    // foreground jobs held by ptrace (their cgroup is shared: not frozen)
  ForegroundNotHeldTraced,  // ... not held: traced already (strace, gdb)
  ForegroundNotHeldPtrace,  // ... not held: ptrace not permitted (Yama ptrace_scope 3, an LSM)
};
inline constexpr size_t kKernelCounters = 11;
std::string_view to_string(KernelCounter);  // the status counter's name

class KernelEffects : public gate::Effects {
 public:
  struct Hooks {
    // Store the event (render its detail: gate/event_json.h, plus what the host adds).
    std::function<void(const gate::Event&)> record;
    // The cgroup path of a process ("/user.slice/..."; "" unknown): what a freeze freezes.
    std::function<std::string(uint32_t pid)> cgroup_of;
    // The processes of a tree or process entity, with their start times (0: unknown).
    std::function<std::vector<std::pair<int, uint64_t>>(const gate::EntityKey&)> members;
    // A hold taken (every kind): agentbrake_holds_total.
    std::function<void(uint32_t pid, gate::HoldReason)> hold_taken;
  };

  // capture_freezer / hold_freezer may be null (no cgroup2): foreground jobs are then not held.
  KernelEffects(loader::BpfRuntime& rt, CaptureFreezer* capture_freezer, CaptureFreezer* hold_freezer,
                std::string cg_mount, std::string self_cgroup, Hooks hooks);
  KernelEffects(const KernelEffects&) = delete;
  KernelEffects& operator=(const KernelEffects&) = delete;

  void apply(const gate::Effect& e) override;

  // Whether a kill or deny of `entity` is refused (see the top of this file).
  bool refused(const gate::EntityKey& entity) const;
  const std::array<uint64_t, kKernelCounters>& counters() const { return counters_; }
  // Whether new connects can be refused (the connect programs are loaded).
  void set_deny_available(bool v) { deny_available_ = v; }
  bool deny_available() const { return deny_available_; }

 private:
  void hold(const gate::Hold& h);
  void release(const gate::Release& r);
  void deny(const gate::EntityKey& e);
  void undeny(const gate::EntityKey& e);
  void kill(const gate::EntityKey& e);
  void forget(uint32_t pid);
  void record(const gate::Event& e);
  void count(KernelCounter c) { counters_[static_cast<size_t>(c)]++; }

  loader::BpfRuntime& rt_;
  CaptureFreezer* capture_freezer_;
  CaptureFreezer* hold_freezer_;
  std::string cg_mount_, self_cgroup_;
  Hooks hooks_;
  bool deny_available_ = false;
  struct DeniedIds {
    std::vector<uint64_t> cgroups;
    std::vector<uint32_t> pids;
  };
  std::map<gate::EntityKey, DeniedIds> denied_;
  // Holds not taken, by (pid, capture?): their paused and resumed are not recorded.
  std::set<std::pair<uint32_t, bool>> not_taken_;
  // Holds taken by ptrace, by (pid, capture?): their paused and resumed say so.
  std::set<std::pair<uint32_t, bool>> by_ptrace_;
  std::array<uint64_t, kKernelCounters> counters_{};
};

}  // namespace ab::core

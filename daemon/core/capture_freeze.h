// capture_freeze.h — holding a terminal's foreground job (capture holds and brake holds).
//
// The kernel holds a process with SIGSTOP, except a foreground job of a terminal: its shell
// would see the stop and move it to the background. Such a process is held here, in one of
// two ways that its shell cannot see:
//   - its cgroup is frozen (cgroup.freeze) when the cgroup holds the agent's own job alone:
//     every process in it (and below) is the held process, one of its descendants, or in its
//     process group (the job). Not the root, not one holding the daemon, at most 64 processes;
//   - otherwise the process alone is held with ptrace (core/ptrace_hold.h): the shell, the
//     sshd session, a tmux server and anything else sharing the cgroup run on. A process that
//     cannot be traced (traced already by strace or gdb; Yama ptrace_scope 3) is not held
//     at all (counted): never its cgroup, never with SIGSTOP.
// Frozen cgroups are written to a state file first, so a daemon that dies before thawing
// leaves a record that the next start or `--release-all` thaws. A ptrace hold needs no record:
// the kernel detaches a dead tracer's tracees.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/ptrace_hold.h"

namespace ab::core {

// ---- the decision (pure) -----------------------------------------------------------------------

// One process as the decision sees it (pgrp 0: unknown).
struct ProcIds {
  int pid = 0;
  int ppid = 0;
  int pgrp = 0;
};

enum class HoldMethod : uint8_t { Freeze, Ptrace };

struct HoldSite {
  std::string cgroup;       // the held process's cgroup ("" unknown)
  std::string self_cgroup;  // the daemon's
  ProcIds held;
  // Every live process of the cgroup and its descendants; nullopt when they could not be read.
  std::optional<std::vector<ProcIds>> members;
  size_t max_processes = 64;
};

struct HoldChoice {
  HoldMethod method = HoldMethod::Ptrace;
  std::string why;  // why not a freeze (for the log); empty for a freeze
};

// Freeze only a cgroup that holds the held process's job alone (see the top); Ptrace otherwise.
// A member whose ids are unknown is not of the job.
HoldChoice choose_hold(const HoldSite& site);

class CaptureFreezer {
 public:
  static constexpr size_t kMaxProcesses = 64;  // a bigger cgroup is not frozen (counted)

  // Reads a process's ids (nullopt: gone). Default: /proc/PID/stat.
  using ReadIds = std::function<std::optional<ProcIds>(int pid)>;

  // mount: the cgroup2 mount; state_file: where frozen cgroups are recorded; self_cgroup: the
  // daemon's own cgroup path (never frozen, nor any ancestor of it). tracer: holds a process
  // whose cgroup is not frozen (null: such a process is not held, -EPERM); shared by the
  // freezers of one daemon (a process has one tracer).
  CaptureFreezer(std::string mount, std::string state_file, std::string self_cgroup,
                 std::shared_ptr<PtraceHolder> tracer = nullptr, ReadIds read_ids = {});

  // Holds pid (see the top) until release(pid). Returns 0 when held: its cgroup frozen (or
  // already frozen for another pid, or by someone else: then it is left frozen when pid is
  // released), or pid held by ptrace; *how says which. Not held: -EPERM (no tracer, or ptrace
  // not permitted), -EBUSY (traced already), -ESRCH (gone), another negative errno (the
  // freeze's write failed). start_ns: the process's start time (checked before a ptrace hold).
  int freeze_for(uint32_t pid, const std::string& cgroup, uint64_t now_ns, uint64_t start_ns = 0,
                 HoldMethod* how = nullptr);
  // pid is attached (or gone): let it go (thaw its cgroup when nobody else waits on it).
  void release(uint32_t pid);
  // Lets go holds older than max_ns. Returns how many.
  size_t sweep(uint64_t now_ns, uint64_t max_ns);
  // Lets go everything this object holds.
  void release_all();
  // Holds in force: cgroups frozen plus processes held by ptrace.
  size_t frozen() const { return frozen_.size() + traced_.size(); }

  // Thaws every cgroup recorded in state_file (a crashed daemon's) and removes the file.
  // Returns how many were thawed.
  static size_t thaw_recorded(const std::string& mount, const std::string& state_file);

 private:
  struct Frozen {
    std::set<uint32_t> waiting;
    uint64_t since_ns = 0;
    bool ours = true;  // false: frozen already (a manual pause, systemctl freeze): never thawed by us
  };
  void thaw(const std::string& cgroup);
  void save() const;

  struct Traced {
    PtraceHold hold;
    uint64_t since_ns = 0;
  };
  std::string mount_, state_file_, self_;
  std::map<std::string, Frozen> frozen_;
  std::shared_ptr<PtraceHolder> tracer_;  // before traced_: its holds end first
  ReadIds read_ids_;
  std::map<uint32_t, Traced> traced_;
};

}  // namespace ab::core

// capture_freeze.h — the capture hold for a terminal's foreground job.
//
// The kernel holds a process at its first LLM connect with SIGSTOP, except a foreground job
// of a terminal: its shell would see the stop and move it to the background. For those, the
// daemon freezes the process's cgroup (cgroup.freeze is invisible to the parent) until the
// probes are attached. Only a cgroup that is safe to freeze is used: not the root, not one
// holding the daemon itself, and a small one (a session, a tmux server, an agent's unit),
// never a whole slice. Frozen cgroups are written to a state file first, so a daemon that
// dies before thawing leaves a record that the next start or `--release-all` thaws.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace ab::core {

class CaptureFreezer {
 public:
  static constexpr size_t kMaxProcesses = 64;  // a bigger cgroup is not frozen (counted)

  // mount: the cgroup2 mount; state_file: where frozen cgroups are recorded; self_cgroup: the
  // daemon's own cgroup path (never frozen, nor any ancestor of it).
  CaptureFreezer(std::string mount, std::string state_file, std::string self_cgroup);

  // Freezes `cgroup` until pid's probes are attached. Returns 0 when frozen (or already frozen
  // for another pid, or by someone else: then it is left frozen when pid is released), -EPERM when the cgroup is not safe to freeze, another negative errno
  // when the write failed.
  int freeze_for(uint32_t pid, const std::string& cgroup, uint64_t now_ns);
  // pid is attached (or gone): thaw its cgroup when nobody else waits on it.
  void release(uint32_t pid);
  // Thaws cgroups frozen longer than max_ns. Returns how many.
  size_t sweep(uint64_t now_ns, uint64_t max_ns);
  // Thaws everything this object froze.
  void release_all();
  size_t frozen() const { return frozen_.size(); }

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

  std::string mount_, state_file_, self_;
  std::map<std::string, Frozen> frozen_;
};

}  // namespace ab::core

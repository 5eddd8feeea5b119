// daemon.h — agentbraked's manager: owns the event loop and everything it drives.
//
//   ring buffer ──► decode ──► ProcessTable (lineage), StreamTable (TLS → HTTP exchanges)
//        │                          │
//        │ connect/hold             └──► LlmCall: attribution, price ──► Store, LiveUsage
//        ▼
//   AttachWorker (thread) ──► probes attached ──► capture hold released (SIGCONT)
//
// One epoll loop over: the ring buffer, a signalfd (TERM/INT: release holds, flush, exit 0;
// HUP: reload the policy), a timerfd (flush the store, sweep stale holds, refresh budget
// matches, watchdog), the control server and the attach worker's eventfd. Nothing in the loop
// attaches or detaches probes or waits on the network.
#pragma once
#include <memory>
#include <optional>
#include <string>

namespace ab::core {

struct DaemonOptions {
  std::optional<std::string> policy_path;  // nullopt: /etc/agentbrake/policy.d, else built-in
  std::string db_path = "/var/lib/agentbrake/agentbrake.db";
  std::string socket_path = "/run/agentbrake/control.sock";
  std::optional<std::string> state_dir;    // nullopt: /sys/fs/bpf/agentbrake + /run/agentbrake
  bool dry_run = false;
  uint32_t ring_buffer_mb = 16;            // event ring buffer, MiB (a power of two)
  // --cgroup-scope: watch and enforce only inside this cgroup subtree (a host path such as
  // "/S"), naming cgroups relative to it; "/" = the whole host (process/cgroup_scope.h).
  std::string cgroup_scope = "/";
  std::string version = "0";
};

// Runs the daemon until SIGTERM/SIGINT. Returns the process exit status: 0 after a clean
// stop, 1 when start-up failed (the reason is logged).
int run_daemon(const DaemonOptions& opts);

// Releases every hold recorded in the state dir's pinned map and exits (the unit's stop path).
// Returns 0 (also when nothing was pinned), 1 when the map exists but cannot be read.
int release_all(const DaemonOptions& opts);

// The directory for runtime state files (--state-dir, else /run/agentbrake).
std::string run_dir_for(const DaemonOptions& opts);

// The bpffs directory holding the pinned maps for these options.
std::string pin_dir_for(const DaemonOptions& opts);

}  // namespace ab::core

// bpf_runtime.h — owns the three BPF skeletons (proc, net, tls) and the maps they share.
// Non-copyable; teardown order is fixed: host-wide links first (no new events), then the TLS
// object, then the object that owns the shared maps. Per-process TLS links are owned by
// TlsAttacher and must be gone before the runtime is destroyed.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agentbrake_events.h"
#include "loader/typed_map.h"

struct ab_proc;
struct ab_net;
struct ab_tls;
struct ab_sock;
struct bpf_link;
struct bpf_program;

namespace ab::loader {

struct RuntimeOptions {
  std::string pin_dir;        // on bpffs; the holds map is pinned here as "holds"
  uint32_t daemon_tgid = 0;   // never watched or held
  bool capture_holds = true;  // hold a process at its first qualifying connect until attached
  uint32_t call_capture_cap = AB_CALL_CAP_MAX;
  // Size of the event ring buffer (a power of two, page multiple). Its data pages are mapped
  // twice into the daemon, so its RSS grows by twice this. 0: kDefaultRingBytes.
  uint32_t ring_bytes = 0;
  // Plaintext data records do not wake the daemon (it drains them by a short timer while they
  // flow: Daemon::loop). false: a wakeup per record, as the kernel does by default.
  bool quiet_data_records = true;
  // --cgroup-scope: id (inode) and level of the scope's root cgroup; 0 = the whole host. The
  // host-wide programs ignore tasks outside it (bpf/maps.bpf.h, ab_in_scope).
  uint64_t scope_cgroup_id = 0;
  uint32_t scope_level = 0;
};
// 16 MiB: ~17 ms of capture at the 933 MB/s the capture bench sustains; reserve failures are
// counted (ring_buffer_lost), never silent.
constexpr uint32_t kDefaultRingBytes = 16u << 20;

// Which TLS program a uprobe link runs; index into BpfRuntime::tls_programs().
enum class TlsHook {
  WriteEnter, WriteExit, WriteExEnter, WriteExExit,
  ReadEnter, ReadExit, ReadExEnter, ReadExExit,
  NewExit, FreeEnter,
  // Go crypto/tls (go_attach.cpp): all plain uprobes, the *Ret ones on each RET instruction
  GoWriteEnter, GoWriteRet, GoReadEnter, GoReadRet, GoCloseEnter,
  // Plain HTTP (plain_attach.cpp): the C library's write/send/sendto, read/recv/recvfrom
  // (entry + return) and close; Go's internal/poll.(*FD) Write, Read (entry + RETs) and Close
  PlainWriteEnter, PlainWriteExit, PlainReadEnter, PlainReadExit, PlainCloseEnter,
  GoPlainWriteEnter, GoPlainWriteRet, GoPlainReadEnter, GoPlainReadRet, GoPlainCloseEnter,
  Count
};
bool tls_hook_is_return(TlsHook h);

class BpfRuntime {
 public:
  // Opens, loads and attaches the host-wide programs. Returns nullptr and sets *error on
  // failure (the message names the step and errno).
  static std::unique_ptr<BpfRuntime> create(const RuntimeOptions& opts, std::string* error);
  ~BpfRuntime();
  BpfRuntime(const BpfRuntime&) = delete;
  BpfRuntime& operator=(const BpfRuntime&) = delete;

  int events_fd() const;
  int watch_fd() const;
  int holds_fd() const;
  int matched_pids_fd() const;
  int matched_cgroups_fd() const;
  int endpoints_fd() const;
  int endpoint_hints_fd() const;  // struct ab_endpoint_hint_key -> 1: one uid's unconfirmed endpoints
  int gate_fd() const;            // pid -> struct ab_gate (Brake admission credits)
  int denied_cgroups_fd() const;  // cgroup id -> 1: new connects to endpoints fail (deny)
  int denied_pids_fd() const;     // pid -> 1: the same per process

  // The same maps with their key and value types (typed_map.h).
  TypedMap<uint32_t, ab_watch_value> watch() const { return TypedMap<uint32_t, ab_watch_value>(watch_fd()); }
  TypedMap<uint32_t, ab_hold_value> holds() const { return TypedMap<uint32_t, ab_hold_value>(holds_fd()); }
  TypedMap<uint32_t, uint8_t> matched_pids() const { return TypedMap<uint32_t, uint8_t>(matched_pids_fd()); }
  TypedMap<uint64_t, uint8_t> matched_cgroups() const { return TypedMap<uint64_t, uint8_t>(matched_cgroups_fd()); }
  TypedMap<ab_endpoint_key, uint32_t> endpoints() const { return TypedMap<ab_endpoint_key, uint32_t>(endpoints_fd()); }
  TypedMap<ab_endpoint_hint_key, uint32_t> endpoint_hints() const {
    return TypedMap<ab_endpoint_hint_key, uint32_t>(endpoint_hints_fd());
  }
  TypedMap<uint32_t, ab_gate> gate() const { return TypedMap<uint32_t, ab_gate>(gate_fd()); }
  TypedMap<uint64_t, uint32_t> denied_cgroups() const { return TypedMap<uint64_t, uint32_t>(denied_cgroups_fd()); }
  TypedMap<uint32_t, uint32_t> denied_pids() const { return TypedMap<uint32_t, uint32_t>(denied_pids_fd()); }

  // The deny action's cgroup/connect4 and connect6 programs, attached at the cgroup2 root.
  // Returns 0 or negative errno (deny then falls back to holding requests).
  int attach_deny(const std::string& cgroup_root);

  // Socket-level capture of opaque processes (sock.bpf.c): the sock_ops program at the cgroup2
  // root and the sk_msg program on the opaque_socks sockhash. Returns 0 or negative errno (the
  // daemon then sees opaque processes' connects only).
  int attach_opaque(const std::string& cgroup_root);
  bool opaque_attached() const { return opaque_attached_; }
  int opaque_exes_fd() const;   // struct ab_exe_key -> struct ab_exe_value
  int opaque_state_fd() const;  // sk_storage: socket fd -> struct ab_opaque_sock
  int opaque_socks_fd() const;  // sockhash: cookie -> socket
  TypedMap<ab_exe_key, ab_exe_value> opaque_exes() const { return TypedMap<ab_exe_key, ab_exe_value>(opaque_exes_fd()); }
  // Keyed by a socket fd of the daemon's own (the kernel finds the socket behind it).
  TypedMap<int, ab_opaque_sock> opaque_state() const { return TypedMap<int, ab_opaque_sock>(opaque_state_fd()); }
  // Valued by a socket fd of the daemon's own, 8 bytes.
  TypedMap<uint64_t, uint64_t> opaque_socks() const { return TypedMap<uint64_t, uint64_t>(opaque_socks_fd()); }

  // true: TLS programs were loaded as uprobe_multi (attach with raw BPF_LINK_CREATE, ~0.06 ms);
  // false: classic perf-event uprobes through libbpf (slower to detach).
  bool uprobe_multi() const { return uprobe_multi_; }
  bpf_program* tls_program(TlsHook h) const;
  int tls_program_fd(TlsHook h) const;
  // Tells the TLS programs whether the daemon is polling the ring (their data records then need
  // not wake it). A store into the programs' mapped .bss: no system call.
  void set_daemon_polls_ring(bool polling);

  // Host-wide getaddrinfo probes on the given C library (learns provider addresses).
  // Returns 0 or negative errno.
  int attach_dns(const std::string& libc_path);

  // Sums of the per-CPU counters (index enum ab_counter).
  std::array<uint64_t, AB_CNT_MAX> read_counters() const;
  // Number of host-wide links attached.
  size_t host_links() const { return host_links_.size(); }

 private:
  BpfRuntime() = default;
  ab_proc* proc_ = nullptr;
  ab_net* net_ = nullptr;
  ab_tls* tls_ = nullptr;
  ab_sock* sock_ = nullptr;
  bool uprobe_multi_ = false;
  bool opaque_attached_ = false;
  int sk_msg_attached_map_ = -1;
  std::vector<bpf_link*> host_links_;
};

// Releases every hold recorded in the pinned holds map at pin_dir: SIGCONT to each recorded
// process that is still the same process (pid + start time), then deletes the record.
// Returns the number of processes released, or negative errno if the map cannot be opened
// (-ENOENT: nothing was ever pinned there).
int release_pinned_holds(const std::string& pin_dir, std::vector<int>* released_pids = nullptr);

// Mounts tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf if they are missing
// (libbpf needs tracefs for tracepoints). Returns 0 or negative errno; *what names the failure.
int ensure_kernel_filesystems(std::string* what);

// Pin directory for a state dir: the default layout uses /sys/fs/bpf/agentbrake; a custom
// --state-dir gets its own sub-directory there so two daemons in tests never collide.
std::string pin_dir_for_state_dir(const std::string& state_dir, bool is_default);

}  // namespace ab::loader

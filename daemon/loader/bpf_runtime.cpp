#include <fcntl.h>
#include "loader/bpf_runtime.h"
#include "loader/elf_symbols.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <spdlog/spdlog.h>

#include "net.skel.h"
#include "proc.skel.h"
#include "sock.skel.h"
#include "tls.skel.h"

namespace ab::loader {

namespace {

constexpr unsigned kBpfTraceUprobeMulti = 48;  // enum bpf_attach_type, kernel >= 6.6
constexpr unsigned long kTracefsMagic = 0x74726163;
constexpr unsigned long kBpffsMagic = 0xcafe4a11;

std::string errstr(int err) { return std::string(strerror(err < 0 ? -err : err)); }

bool is_fs(const char* path, unsigned long magic) {
  struct statfs s {};
  return statfs(path, &s) == 0 && (unsigned long)s.f_type == magic;
}

// Shares one set of maps between objects: the maps of `owner` are reused by `obj`.
int reuse_shared_maps(bpf_object* owner, bpf_object* obj) {
  static const char* kShared[] = {"events", "counters", "watch", "holds",
                                  "matched_pids", "matched_cgroups", "endpoints", "endpoint_hints", "gate",
                                  "denied_cgroups", "denied_pids", "opaque_exes", "plain_socks"};
  for (const char* name : kShared) {
    bpf_map* src = bpf_object__find_map_by_name(owner, name);
    bpf_map* dst = bpf_object__find_map_by_name(obj, name);
    if (!src || !dst) continue;
    int err = bpf_map__reuse_fd(dst, bpf_map__fd(src));
    if (err) return err;
  }
  return 0;
}

bpf_program* hook_program(ab_tls* t, TlsHook h) {
  switch (h) {
    case TlsHook::WriteEnter: return t->progs.ab_ssl_write_enter;
    case TlsHook::WriteExit: return t->progs.ab_ssl_write_exit;
    case TlsHook::WriteExEnter: return t->progs.ab_ssl_write_ex_enter;
    case TlsHook::WriteExExit: return t->progs.ab_ssl_write_ex_exit;
    case TlsHook::ReadEnter: return t->progs.ab_ssl_read_enter;
    case TlsHook::ReadExit: return t->progs.ab_ssl_read_exit;
    case TlsHook::ReadExEnter: return t->progs.ab_ssl_read_ex_enter;
    case TlsHook::ReadExExit: return t->progs.ab_ssl_read_ex_exit;
    case TlsHook::NewExit: return t->progs.ab_ssl_new_exit;
    case TlsHook::FreeEnter: return t->progs.ab_ssl_free_enter;
    case TlsHook::GoWriteEnter: return t->progs.ab_go_write_enter;
    case TlsHook::GoWriteRet: return t->progs.ab_go_write_ret;
    case TlsHook::GoReadEnter: return t->progs.ab_go_read_enter;
    case TlsHook::GoReadRet: return t->progs.ab_go_read_ret;
    case TlsHook::GoCloseEnter: return t->progs.ab_go_close_enter;
    case TlsHook::PlainWriteEnter: return t->progs.ab_plain_write_enter;
    case TlsHook::PlainWriteExit: return t->progs.ab_plain_write_exit;
    case TlsHook::PlainReadEnter: return t->progs.ab_plain_read_enter;
    case TlsHook::PlainReadExit: return t->progs.ab_plain_read_exit;
    case TlsHook::PlainCloseEnter: return t->progs.ab_plain_close_enter;
    case TlsHook::GoPlainWriteEnter: return t->progs.ab_go_plain_write_enter;
    case TlsHook::GoPlainWriteRet: return t->progs.ab_go_plain_write_ret;
    case TlsHook::GoPlainReadEnter: return t->progs.ab_go_plain_read_enter;
    case TlsHook::GoPlainReadRet: return t->progs.ab_go_plain_read_ret;
    case TlsHook::GoPlainCloseEnter: return t->progs.ab_go_plain_close_enter;
    default: return nullptr;
  }
}

}  // namespace

bool tls_hook_is_return(TlsHook h) {
  switch (h) {
    case TlsHook::WriteExit: case TlsHook::WriteExExit: case TlsHook::ReadExit:
    case TlsHook::ReadExExit: case TlsHook::NewExit:
    case TlsHook::PlainWriteExit: case TlsHook::PlainReadExit: return true;
    default: return false;
  }
}

int ensure_kernel_filesystems(std::string* what) {
  if (!is_fs("/sys/kernel/tracing", kTracefsMagic)) {
    mkdir("/sys/kernel/tracing", 0700);
    if (mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, nullptr) != 0 && errno != EBUSY) {
      int e = errno;
      if (what) *what = "mount tracefs at /sys/kernel/tracing: " + errstr(e);
      return -e;
    }
  }
  if (!is_fs("/sys/fs/bpf", kBpffsMagic)) {
    mkdir("/sys/fs/bpf", 0700);
    if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0 && errno != EBUSY) {
      int e = errno;
      if (what) *what = "mount bpffs at /sys/fs/bpf: " + errstr(e);
      return -e;
    }
  }
  return 0;
}

std::string pin_dir_for_state_dir(const std::string& state_dir, bool is_default) {
  if (is_default) return "/sys/fs/bpf/agentbrake";
  std::error_code ec;
  auto canon = std::filesystem::weakly_canonical(state_dir, ec).string();
  if (canon.empty()) canon = state_dir;
  uint64_t h = 1469598103934665603ULL;  // FNV-1a: stable name from the state dir's path
  for (unsigned char c : canon) { h ^= c; h *= 1099511628211ULL; }
  char buf[64];
  snprintf(buf, sizeof buf, "/sys/fs/bpf/agentbrake/s-%016llx", (unsigned long long)h);
  return buf;
}

std::unique_ptr<BpfRuntime> BpfRuntime::create(const RuntimeOptions& opts, std::string* error) {
  auto fail = [&](const std::string& msg) -> std::unique_ptr<BpfRuntime> {
    if (error) *error = msg;
    return nullptr;
  };
  std::unique_ptr<BpfRuntime> rt(new BpfRuntime());
  std::error_code ec;
  std::filesystem::create_directories(opts.pin_dir, ec);
  if (ec) return fail("create pin dir " + opts.pin_dir + ": " + ec.message());

  rt->proc_ = ab_proc__open();
  if (!rt->proc_) return fail("open proc BPF object: " + errstr(errno));
  std::string holds_pin = opts.pin_dir + "/holds";
  if (int err = bpf_map__set_pin_path(rt->proc_->maps.holds, holds_pin.c_str()))
    return fail("pin path for holds map: " + errstr(err));
  uint32_t ring = opts.ring_bytes ? opts.ring_bytes : kDefaultRingBytes;
  if (ring < 4096 || (ring & (ring - 1)) != 0)
    return fail("ring buffer size " + std::to_string(ring) + " is not a power of two of at least 4096 bytes");
  if (int err = bpf_map__set_max_entries(rt->proc_->maps.events, ring))
    return fail("ring buffer size: " + errstr(err));
  rt->proc_->rodata->cfg_scope_cgroup_id = opts.scope_cgroup_id;
  rt->proc_->rodata->cfg_scope_level = opts.scope_level;
  if (int err = ab_proc__load(rt->proc_)) return fail("load proc BPF object: " + errstr(err));

  rt->net_ = ab_net__open();
  if (!rt->net_) return fail("open net BPF object: " + errstr(errno));
  if (int err = reuse_shared_maps(rt->proc_->obj, rt->net_->obj)) return fail("share maps with net: " + errstr(err));
  rt->net_->rodata->cfg_daemon_tgid = opts.daemon_tgid;
  rt->net_->rodata->cfg_capture_holds = opts.capture_holds ? 1 : 0;
  rt->net_->rodata->cfg_scope_cgroup_id = opts.scope_cgroup_id;
  rt->net_->rodata->cfg_scope_level = opts.scope_level;
  bpf_program__set_autoattach(rt->net_->progs.ab_getaddrinfo_enter, false);
  bpf_program__set_autoattach(rt->net_->progs.ab_getaddrinfo_exit, false);
  bpf_program__set_autoattach(rt->net_->progs.ab_deny_connect4, false);  // attach_deny()
  bpf_program__set_autoattach(rt->net_->progs.ab_deny_connect6, false);
  if (int err = ab_net__load(rt->net_)) return fail("load net BPF object: " + errstr(err));

  // TLS programs: uprobe_multi when the kernel has it (cheap attach and detach), else classic.
  for (int attempt = 0; attempt < 2; attempt++) {
    bool multi = attempt == 0;
    rt->tls_ = ab_tls__open();
    if (!rt->tls_) return fail("open tls BPF object: " + errstr(errno));
    if (int err = reuse_shared_maps(rt->proc_->obj, rt->tls_->obj)) return fail("share maps with tls: " + errstr(err));
    rt->tls_->rodata->cfg_call_capture_cap = opts.call_capture_cap;
    rt->tls_->rodata->cfg_quiet_data_records = opts.quiet_data_records ? 1 : 0;
    for (int h = 0; h < (int)TlsHook::Count; h++) {
      bpf_program* p = hook_program(rt->tls_, (TlsHook)h);
      bpf_program__set_autoattach(p, false);
      if (multi) bpf_program__set_expected_attach_type(p, (bpf_attach_type)kBpfTraceUprobeMulti);
    }
    int err = ab_tls__load(rt->tls_);
    if (err == 0) {
      rt->uprobe_multi_ = multi;
      break;
    }
    ab_tls__destroy(rt->tls_);
    rt->tls_ = nullptr;
    if (!multi) return fail("load tls BPF object: " + errstr(err));
    spdlog::info("uprobe_multi unavailable ({}), using perf-event uprobes", errstr(err));
  }

  // Socket capture of opaque processes: optional (a kernel without sk_msg or sk_storage still
  // runs the daemon; attach_opaque() then reports why).
  rt->sock_ = ab_sock__open();
  if (rt->sock_) {
    int err = reuse_shared_maps(rt->proc_->obj, rt->sock_->obj);
    if (!err) {
      rt->sock_->rodata->cfg_daemon_tgid = opts.daemon_tgid;
      bpf_program__set_autoattach(rt->sock_->progs.ab_sockops, false);
      bpf_program__set_autoattach(rt->sock_->progs.ab_opaque_msg, false);
      err = ab_sock__load(rt->sock_);
    }
    if (err) {
      spdlog::warn("socket capture of opaque processes unavailable: load sock BPF object: {}", errstr(err));
      ab_sock__destroy(rt->sock_);
      rt->sock_ = nullptr;
    }
  }

  if (int err = ab_proc__attach(rt->proc_)) return fail("attach process tracepoints: " + errstr(err));
  if (int err = ab_net__attach(rt->net_)) return fail("attach connect tracepoints: " + errstr(err));
  return rt;
}

BpfRuntime::~BpfRuntime() {
  for (auto* l : host_links_) bpf_link__destroy(l);
  host_links_.clear();
  if (sock_ && sk_msg_attached_map_ >= 0)
    bpf_prog_detach2(bpf_program__fd(sock_->progs.ab_opaque_msg), sk_msg_attached_map_, BPF_SK_MSG_VERDICT);
  if (sock_) ab_sock__destroy(sock_);
  if (net_) ab_net__destroy(net_);
  if (tls_) ab_tls__destroy(tls_);
  if (proc_) ab_proc__destroy(proc_);
}

int BpfRuntime::attach_deny(const std::string& cgroup_root) {
  int fd = open(cgroup_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = 0;
  for (bpf_program* p : {net_->progs.ab_deny_connect4, net_->progs.ab_deny_connect6}) {
    bpf_link* l = bpf_program__attach_cgroup(p, fd);
    if (!l) {
      rc = -errno;
      break;
    }
    host_links_.push_back(l);
  }
  close(fd);
  return rc;
}

int BpfRuntime::attach_opaque(const std::string& cgroup_root) {
  if (!sock_) return -EOPNOTSUPP;
  int map = bpf_map__fd(sock_->maps.opaque_socks);
  if (bpf_prog_attach(bpf_program__fd(sock_->progs.ab_opaque_msg), map, BPF_SK_MSG_VERDICT, 0) != 0) return -errno;
  sk_msg_attached_map_ = map;
  int fd = open(cgroup_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  bpf_link* l = bpf_program__attach_cgroup(sock_->progs.ab_sockops, fd);
  int rc = l ? 0 : -errno;
  close(fd);
  if (l) host_links_.push_back(l);
  opaque_attached_ = rc == 0;
  return rc;
}
int BpfRuntime::opaque_exes_fd() const { return bpf_map__fd(proc_->maps.opaque_exes); }
int BpfRuntime::opaque_state_fd() const { return sock_ ? bpf_map__fd(sock_->maps.opaque_state) : -1; }
int BpfRuntime::opaque_socks_fd() const { return sock_ ? bpf_map__fd(sock_->maps.opaque_socks) : -1; }

int BpfRuntime::gate_fd() const { return bpf_map__fd(proc_->maps.gate); }
int BpfRuntime::denied_cgroups_fd() const { return bpf_map__fd(proc_->maps.denied_cgroups); }
int BpfRuntime::denied_pids_fd() const { return bpf_map__fd(proc_->maps.denied_pids); }
int BpfRuntime::events_fd() const { return bpf_map__fd(proc_->maps.events); }
int BpfRuntime::watch_fd() const { return bpf_map__fd(proc_->maps.watch); }
int BpfRuntime::holds_fd() const { return bpf_map__fd(proc_->maps.holds); }
int BpfRuntime::matched_pids_fd() const { return bpf_map__fd(proc_->maps.matched_pids); }
int BpfRuntime::matched_cgroups_fd() const { return bpf_map__fd(proc_->maps.matched_cgroups); }
int BpfRuntime::endpoints_fd() const { return bpf_map__fd(proc_->maps.endpoints); }
int BpfRuntime::endpoint_hints_fd() const { return bpf_map__fd(proc_->maps.endpoint_hints); }
bpf_program* BpfRuntime::tls_program(TlsHook h) const { return hook_program(tls_, h); }
int BpfRuntime::tls_program_fd(TlsHook h) const { return bpf_program__fd(hook_program(tls_, h)); }

void BpfRuntime::set_daemon_polls_ring(bool polling) {
  if (tls_ && tls_->bss) __atomic_store_n(&tls_->bss->daemon_polls_ring, polling ? 1u : 0u, __ATOMIC_SEQ_CST);
}

int BpfRuntime::attach_dns(const std::string& libc_path) {
  auto syms = resolve_symbols(libc_path, {"getaddrinfo"});
  if (!syms || !syms->count("getaddrinfo")) return -ENOENT;
  uint64_t off = syms->at("getaddrinfo");
  for (bool ret : {false, true}) {
    LIBBPF_OPTS(bpf_uprobe_opts, uo, .retprobe = ret);
    bpf_program* p = ret ? net_->progs.ab_getaddrinfo_exit : net_->progs.ab_getaddrinfo_enter;
    bpf_link* l = bpf_program__attach_uprobe_opts(p, -1, libc_path.c_str(), off, &uo);
    if (!l) return -errno;
    host_links_.push_back(l);
  }
  return 0;
}

std::array<uint64_t, AB_CNT_MAX> BpfRuntime::read_counters() const {
  std::array<uint64_t, AB_CNT_MAX> out{};
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return out;
  std::vector<uint64_t> vals(ncpu);
  int fd = bpf_map__fd(proc_->maps.counters);
  for (uint32_t i = 0; i < AB_CNT_MAX; i++) {
    if (bpf_map_lookup_elem(fd, &i, vals.data()) != 0) continue;
    for (auto v : vals) out[i] += v;
  }
  return out;
}

int release_pinned_holds(const std::string& pin_dir, std::vector<int>* released_pids) {
  std::string path = pin_dir + "/holds";
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return -errno;
  long ticks = sysconf(_SC_CLK_TCK);
  if (ticks <= 0) ticks = 100;
  std::vector<uint32_t> keys;
  uint32_t key = 0, next = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    keys.push_back(next);
    key = next;
    prev = &key;
  }
  int released = 0;
  for (uint32_t pid : keys) {
    ab_hold_value hv{};
    if (bpf_map_lookup_elem(fd, &pid, &hv) != 0) continue;
    // Same process? /proc/<pid>/stat field 22 is start_boottime in clock ticks.
    bool same = false;
    std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (std::getline(st, line)) {
      auto rp = line.rfind(')');
      if (rp != std::string::npos) {
        std::istringstream rest(line.substr(rp + 2));
        std::string f;
        uint64_t start_ticks = 0;
        for (int field = 3; field <= 22 && (rest >> f); field++)
          if (field == 22) start_ticks = strtoull(f.c_str(), nullptr, 10);
        uint64_t rec_ticks = hv.start_time_ns / (1000000000ULL / (uint64_t)ticks);
        same = start_ticks + 1 >= rec_ticks && start_ticks <= rec_ticks + 1;
      }
    }
    if (same && kill((pid_t)pid, SIGCONT) == 0) {
      released++;
      if (released_pids) released_pids->push_back((int)pid);
    }
    bpf_map_delete_elem(fd, &pid);
  }
  close(fd);
  return released;
}

}  // namespace ab::loader

// opaque.cpp — processes whose TLS agentbrake cannot read (no supported stack found, rustls,
// a Go binary whose .gopclntab is damaged, a Bun build not recognised). They are never
// invisible: their connections to endpoints are counted at the socket (bpf/sock.bpf.c), each
// request start becomes an estimated call (estimate_reason "opaque_tls"), budgets count them,
// and the verdict is kept per process (never held or rescanned again at a connect) and, when
// it depends only on the executable, per executable (the opaque_exes map: a new process of
// the same file is not scanned; it is held at its first connect only until gated).
// docs/interface.md, "Opaque processes".
#include <elf.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <tuple>

#include "core/daemon_impl.h"
#include "util/faults.h"

namespace ab::core {

namespace {

constexpr uint64_t kOpaqueIdleNs = 120ull * 1'000'000'000;       // a quiet open request ends
constexpr int64_t kOpaqueExitGraceNs = 1'000'000'000;            // closes reported after the exit
constexpr size_t kMaxEndpointFds = 8;
// Attach health: a hooked process that sent and received this much plaintext for this long
// with no HTTP exchange parsed is reported capture blind (its capture is broken, not silent).
constexpr uint64_t kHealthMinBytesOut = 512, kHealthMinBytesIn = 64;
constexpr int64_t kHealthAfterNs = 5'000'000'000;

// Whether the ELF file has no program interpreter (statically linked: it cannot load a TLS
// library later, so "none found" is a property of the file).
bool is_static_elf(int fd) {
  Elf64_Ehdr eh;
  if (pread(fd, &eh, sizeof eh, 0) != sizeof eh) return false;
  if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64) return false;
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 512) return false;
  for (int i = 0; i < eh.e_phnum; i++) {
    Elf64_Phdr ph;
    if (pread(fd, &ph, sizeof ph, off_t(eh.e_phoff + uint64_t(i) * sizeof ph)) != sizeof ph) return false;
    if (ph.p_type == PT_INTERP) return false;
  }
  return true;
}

}  // namespace

bool Daemon::judge_unreadable(uint32_t pid, const std::string& why) {
  auto it = watched_.find(pid);
  if (it == watched_.end() || it->second.endpoint_host.empty()) return false;  // never talked to an endpoint
  become_opaque(pid, why, false);
  return true;
}

void Daemon::opaque_from_kernel(uint32_t pid) {
  std::string why = "its executable was judged before";
  struct stat st {};
  if (stat(("/proc/" + std::to_string(pid) + "/exe").c_str(), &st) == 0) {
    const uint64_t kdev = (uint64_t(major(st.st_dev)) << 20) | minor(st.st_dev);
    if (auto e = opaque_exes_.find({kdev, st.st_ino}); e != opaque_exes_.end()) why = e->second.why;
  }
  stats_[DaemonCounter::OpaqueExeCacheHits]++;
  become_opaque(pid, why, true);
}

void Daemon::become_opaque(uint32_t pid, const std::string& why, bool cached) {
  auto& w = watched_[pid];
  if (w.opaque) return;
  w.opaque = true;
  w.attached = true;  // watched: budgets gate it (at the socket), agents and status count it
  w.attaching = false;
  set_watch(pid, AB_WATCH_OPAQUE);
  const Attribution who = attribute(pid);
  opaque_who_[pid] = who;
  opaque_why_[pid] = why;
  opaque_ep_[pid] = {w.endpoint_api, w.endpoint_host};
  stats_[DaemonCounter::OpaqueProcesses]++;
  stats_[DaemonCounter::CaptureBlind]++;
  spdlog::warn("pid {} ({}) capture blind, counted at the socket{}: {}", pid, who.comm,
               cached ? " (executable known)" : "", why);
  record_event("capture_blind", pid, who.cgroup, who.comm,
               {{"pid", pid}, {"exe", who.exe}, {"why", why}, {"capture", "opaque"},
                {"socket_capture", opaque_capture_}, {"cached", cached}});
  for (int fd : w.endpoint_fds) opaque_track_socket(pid, static_cast<int>(fd));
  w.endpoint_fds.clear();

  // The verdict is the executable's when the file itself carries the TLS stack that cannot be
  // read, or when it is statically linked (nothing can be loaded later). A dynamic program that
  // just has not loaded its TLS library yet (an interpreter) is judged per process only.
  if (!cached && !who.exe.empty()) {
    int fd = open(("/proc/" + std::to_string(pid) + "/exe").c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd >= 0 && fstat(fd, &st) == 0) {
      const bool exe_named = why.rfind(who.exe, 0) == 0 || why.find(" " + who.exe + ":") != std::string::npos;
      if (exe_named || is_static_elf(fd)) {
        ab_exe_key k{};
        k.dev = (uint64_t(major(st.st_dev)) << 20) | minor(st.st_dev);
        k.ino = st.st_ino;
        ab_exe_value v{};
        v.mtime_sec = st.st_mtim.tv_sec;
        v.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
        if (rt_->opaque_exes().update(k, v) == 0) {
          opaque_exes_[{k.dev, k.ino}] = OpaqueExe{v.mtime_sec, v.mtime_nsec, why};
          stats_[DaemonCounter::OpaqueExesCached] = opaque_exes_.size();
        } else {
          stats_[DaemonCounter::OpaqueExeCacheErrors]++;
        }
      }
    }
    if (fd >= 0) close(fd);
  }
  // from now on gated like an attached process: a gating budget deals it credits before its
  // first request (the socket hook reads the same gate map)
  if (gate_) apply_gate(gate_->process_attached(gate_info(pid), clock_ns(CLOCK_MONOTONIC)));
}

// The connection that made the process judged was opened before the verdict: the kernel did
// not put it under socket capture. The process is still held (capture hold) or has just
// connected, so its socket is added here, from a duplicate of its fd.
void Daemon::opaque_track_socket(uint32_t pid, int fd) {
  if (!opaque_capture_ || fd < 0) return;
  spdlog::debug("pid {}: socket capture for fd {}", pid, fd);
  int pfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) return;
  int sfd = static_cast<int>(syscall(SYS_pidfd_getfd, pfd, fd, 0));
  close(pfd);
  if (sfd < 0) {
    stats_[DaemonCounter::OpaqueSocketErrors]++;
    return;
  }
  int type = 0, proto = 0;
  socklen_t len = sizeof type;
  uint64_t cookie = 0;
  socklen_t clen = sizeof cookie;
  tcp_info ti {};
  socklen_t tlen = sizeof ti;
  bool ok = getsockopt(sfd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM &&
            (len = sizeof proto, getsockopt(sfd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0) && proto == IPPROTO_TCP &&
            getsockopt(sfd, SOL_SOCKET, SO_COOKIE, &cookie, &clen) == 0;
  ab_opaque_sock v{};
  if (auto known = ok ? rt_->opaque_state().lookup(sfd) : std::nullopt; known && (known->flags & AB_OPQ_SOCK_OPAQUE)) {
    close(sfd);  // the kernel put it under capture already (connected after the verdict)
    return;
  }
  if (ok) {
    v = ab_opaque_sock{};
    v.conn = cookie;
    v.pid = pid;
    if (const auto* p = procs_.find(static_cast<int>(pid))) v.cgroup_id = p->cgroup_id;
    v.flags = AB_OPQ_SOCK_TLS | AB_OPQ_SOCK_OPAQUE;
    if (getsockopt(sfd, IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0) {
      v.rcv_at_last_write = ti.tcpi_bytes_received;
      v.bytes_out = ti.tcpi_bytes_sent;
    }
    const uint64_t sock_fd = static_cast<uint64_t>(sfd);  // the sockhash's value is 8 bytes
    int err = rt_->opaque_state().update(sfd, v);
    if (err == 0) err = rt_->opaque_socks().update(cookie, sock_fd);
    ok = err == 0;
    if (!ok) spdlog::debug("pid {} fd {}: socket capture not added: {}", pid, fd, strerror(-err));
  }
  stats_[ok ? DaemonCounter::OpaqueSocketsAdded : DaemonCounter::OpaqueSocketErrors]++;
  close(sfd);
}

void Daemon::on_opaque_event(const ab_opaque_event& e) {
  const uint32_t pid = e.hdr.pid;
  spdlog::debug("opaque pid {} conn {:x} kind {} out {} in {} requests {}", pid, e.conn, e.kind, e.bytes_out,
                e.bytes_in, e.requests);
  switch (e.kind) {
    case AB_OPQ_REQUEST: {
      stats_[DaemonCounter::OpaqueRequests]++;
      if (!opaque_who_.count(pid)) opaque_who_[pid] = attribute(pid);
      if (auto ended = opaque_.on_request(pid, e.conn, e.bytes_out, e.bytes_in, e.hdr.ts_ns)) account_opaque(*ended);
      capture::CapturedRequest cr;
      cr.pid = pid;
      cr.ssl = e.conn;
      cr.request.method = "POST";
      cr.request.is_llm = true;
      if (auto ep = opaque_ep_.find(pid); ep != opaque_ep_.end()) {
        cr.request.api = cr.request.provider = ep->second.first;
        cr.request.host = ep->second.second;
      }
      cr.request.request_start_ns = e.hdr.ts_ns;
      on_request_seen(cr);  // counted: requests_per_minute, max_inflight, reservations
      return;
    }
    case AB_OPQ_REFUSED: {
      stats_[DaemonCounter::OpaqueRequestsRefused]++;
      spdlog::info("pid {}: opaque request refused at the socket (no credit, or denied)", pid);
      // Where a readable request would have been held: the budget that closed the gate is
      // reported as for a hold (budget_exceeded), with nothing reserved.
      if (gate_) apply_gate(gate_->request_refused(pid, clock_ns(CLOCK_MONOTONIC)));
      return;
    }
    case AB_OPQ_CLOSE:
      if (auto ended = opaque_.on_close(pid, e.conn, e.bytes_out, e.bytes_in, e.hdr.ts_ns)) account_opaque(*ended);
      return;
    default:
      stats_[DaemonCounter::MalformedRecords]++;
  }
}

void Daemon::account_opaque(const capture::OpaqueCall& c) {
  LlmCall call;
  std::string api, host;
  if (auto ep = opaque_ep_.find(c.pid); ep != opaque_ep_.end()) std::tie(api, host) = ep->second;
  capture::fill_opaque_call(c, api, host, &call);
  Attribution who = opaque_who_.count(c.pid) ? opaque_who_[c.pid] : attribute(c.pid);
  stats_[DaemonCounter::OpaqueCalls]++;
  record_call(std::move(call), c.pid, c.conn, c.start_ns, c.end_ns, c.complete ? c.end_ns : 0, &who);
  agents_[who.tree_root_pid].opaque = true;
}

void Daemon::opaque_on_exit(uint32_t pid) {
  if (opaque_who_.count(pid)) opaque_exited_[pid] = clock_ns(CLOCK_MONOTONIC);
}

void Daemon::opaque_tick() {
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  for (auto it = opaque_exited_.begin(); it != opaque_exited_.end();) {
    if (now - it->second < kOpaqueExitGraceNs) {
      ++it;
      continue;
    }
    const uint32_t pid = it->first;
    for (const auto& c : opaque_.on_exit(pid, static_cast<uint64_t>(now))) account_opaque(c);
    opaque_who_.erase(pid);
    opaque_why_.erase(pid);
    opaque_ep_.erase(pid);
    it = opaque_exited_.erase(it);
  }
  for (const auto& c : opaque_.expire(static_cast<uint64_t>(now), kOpaqueIdleNs)) account_opaque(c);
  check_attach_health(now);
}

void Daemon::note_tls_bytes(const void* record) {
  ab_tls_event e;
  std::memcpy(&e, record, sizeof e);
  auto it = watched_.find(e.hdr.pid);
  if (it == watched_.end() || it->second.opaque || it->second.health_reported) return;
  auto& w = it->second;
  if (!w.tls_first_ns) w.tls_first_ns = static_cast<int64_t>(e.hdr.ts_ns);
  (e.dir == AB_DIR_WRITE ? w.tls_out : w.tls_in) += e.len;
}

// Reach I item 6: bytes flow between a hooked process and an endpoint but nothing parses
// (an agent update moved its HTTP layer, HTTP/2, an unknown framing): say so once.
void Daemon::check_attach_health(int64_t now) {
  for (auto& [pid, w] : watched_) {
    if (w.opaque || w.health_reported || !w.attached || w.exchanges || w.endpoint_host.empty()) continue;
    if (w.tls_out < kHealthMinBytesOut || w.tls_in < kHealthMinBytesIn || !w.tls_first_ns ||
        now - w.tls_first_ns < kHealthAfterNs)
      continue;
    w.health_reported = true;
    const Attribution who = attribute(pid);
    const std::string why = fmt::format("{} bytes sent and {} received over its TLS probes in {:.0f} s, no HTTP "
                                        "exchange parsed (HTTP/2 or an unknown framing)",
                                        w.tls_out, w.tls_in, double(now - w.tls_first_ns) / 1e9);
    stats_[DaemonCounter::CaptureBlind]++;
    stats_[DaemonCounter::CaptureBlindUnparsed]++;
    spdlog::warn("pid {} ({}) capture blind: {}", pid, who.comm, why);
    record_event("capture_blind", pid, who.cgroup, who.comm,
                 {{"pid", pid}, {"exe", who.exe}, {"why", why}, {"capture", "unparsed"}});
  }
}

void Daemon::opaque_start() {
  int rc = util::faults().no_socket_capture ? -ECANCELED : rt_->attach_opaque(cg_mount_);
  opaque_capture_ = rc == 0;
  if (rc == 0)
    spdlog::info("socket capture of opaque processes attached at {}", cg_mount_);
  else
    spdlog::warn("socket capture of opaque processes unavailable ({}): they are seen at their connects only",
                 strerror(-rc));
}

json Daemon::opaque_status() const {
  size_t n = 0;
  for (const auto& [pid, w] : watched_) n += w.opaque ? 1 : 0;
  return {{"socket_capture", opaque_capture_},
          {"processes", n},
          {"executables", opaque_exes_.size()},
          {"open_requests", opaque_.open_requests()}};
}

}  // namespace ab::core

#include "loader/tls_attach.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "loader/go_attach.h"
#include "util/faults.h"

namespace ab::loader {

namespace {

// BPF_LINK_CREATE for uprobe_multi. libbpf 1.1.2 has no API for it, so the attr is laid out
// here as the kernel's union bpf_attr defines link_create (kernel >= 6.6).
struct UprobeMultiLinkAttr {
  uint32_t prog_fd;
  uint32_t target_fd;
  uint32_t attach_type;
  uint32_t flags;
  uint64_t path;
  uint64_t offsets;
  uint64_t ref_ctr_offsets;
  uint64_t cookies;
  uint32_t cnt;
  uint32_t multi_flags;
  uint32_t pid;
  uint32_t pad_;
  uint8_t tail[64];  // rest of union bpf_attr, must be zero
};
constexpr uint32_t kBpfLinkCreate = 28;
constexpr uint32_t kAttachUprobeMulti = 48;
constexpr uint32_t kUprobeMultiReturn = 1;

int uprobe_multi_link(int prog_fd, const std::string& path, uint64_t offset, int pid, bool ret) {
  UprobeMultiLinkAttr a;
  memset(&a, 0, sizeof a);
  a.prog_fd = (uint32_t)prog_fd;
  a.attach_type = kAttachUprobeMulti;
  a.path = (uint64_t)(uintptr_t)path.c_str();
  a.offsets = (uint64_t)(uintptr_t)&offset;
  a.cnt = 1;
  a.multi_flags = ret ? kUprobeMultiReturn : 0;
  a.pid = (uint32_t)pid;
  long fd = syscall(__NR_bpf, kBpfLinkCreate, &a, sizeof a);
  return fd < 0 ? -errno : (int)fd;
}

uint64_t hook_offset(const TlsSymbols& s, TlsHook h) {
  switch (h) {
    case TlsHook::WriteEnter: case TlsHook::WriteExit: return s.ssl_write;
    case TlsHook::WriteExEnter: case TlsHook::WriteExExit: return s.ssl_write_ex;
    case TlsHook::ReadEnter: case TlsHook::ReadExit: return s.ssl_read;
    case TlsHook::ReadExEnter: case TlsHook::ReadExExit: return s.ssl_read_ex;
    case TlsHook::NewExit: return s.ssl_new;
    case TlsHook::FreeEnter: return s.ssl_free;
    default: return 0;
  }
}

}  // namespace

std::optional<MappedObject> parse_maps_line(const std::string& line) {
  // address perms offset dev inode path
  std::istringstream is(line);
  std::string addr, perms, off, dev, inode, path;
  if (!(is >> addr >> perms >> off >> dev >> inode)) return std::nullopt;
  std::getline(is >> std::ws, path);
  if (perms.size() < 3 || perms[2] != 'x' || path.empty() || path[0] != '/') return std::nullopt;
  if (path.find(" (deleted)") != std::string::npos) return std::nullopt;
  // maps pads addresses to 8 digits; map_files names them "%lx-%lx", without leading zeros
  const auto dash = addr.find('-');
  if (dash == std::string::npos || addr.find_first_not_of("0123456789abcdef-") != std::string::npos) return std::nullopt;
  auto unpad = [](std::string h) {
    const auto nz = h.find_first_not_of('0');
    return nz == std::string::npos ? std::string("0") : h.substr(nz);
  };
  const std::string lo = unpad(addr.substr(0, dash)), hi = unpad(addr.substr(dash + 1));
  if (lo.empty() || hi.empty() || hi.find('-') != std::string::npos) return std::nullopt;
  return MappedObject{path, lo + "-" + hi};
}

std::vector<MappedObject> mapped_executable_files(int pid, const std::string& proc_root) {
  std::vector<MappedObject> out;
  std::set<std::string> seen;
  std::ifstream f(proc_root + "/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(f, line)) {
    auto m = parse_maps_line(line);
    if (m && seen.insert(m->path).second) out.push_back(std::move(*m));
  }
  return out;
}

int TlsAttacher::attach_object(int pid, const ObjectFile& f, const std::string& path, const TlsSymbols& syms,
                               ProcessLinks* out, std::string* error) {
  // The kernel resolves this name in the daemon's own fd table: the inode the process maps,
  // whatever its path names now (or in its mount namespace).
  const std::string target = f.fd_path();
  // Return probes first: an entry without its return would leave scratch state behind.
  static const TlsHook kOrder[] = {TlsHook::WriteExit, TlsHook::WriteExExit, TlsHook::ReadExit,
                                   TlsHook::ReadExExit, TlsHook::NewExit, TlsHook::FreeEnter,
                                   TlsHook::WriteEnter, TlsHook::WriteExEnter, TlsHook::ReadEnter,
                                   TlsHook::ReadExEnter};
  for (TlsHook h : kOrder) {
    uint64_t off = hook_offset(syms, h);
    if (!off) continue;
    bool ret = tls_hook_is_return(h);
    if (rt_.uprobe_multi()) {
      int fd = uprobe_multi_link(rt_.tls_program_fd(h), target, off, pid, ret);
      if (fd < 0) {
        if (error) *error = "uprobe_multi on " + path + ": " + strerror(-fd);
        return fd;
      }
      out->multi_link_fds.push_back(fd);
    } else {
      LIBBPF_OPTS(bpf_uprobe_opts, uo, .retprobe = ret);
      bpf_link* l = bpf_program__attach_uprobe_opts(rt_.tls_program(h), pid, target.c_str(), off, &uo);
      if (!l) {
        int e = -errno;
        if (error) *error = "uprobe on " + path + ": " + strerror(-e);
        return e;
      }
      out->perf_links.push_back(l);
    }
  }
  out->objects.push_back(path);
  return 0;
}

int TlsAttacher::attach(int pid, ProcessLinks* out, std::string* error, int64_t deadline_ms, bool plain) {
  out->pid = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  auto files = mapped_executable_files(pid);
  if (files.empty()) {
    if (error) *error = "process has no mapped files (exited?)";
    return -ESRCH;
  }
  std::string go_problem;  // a Go binary that cannot be watched says why
  std::string unreadable;  // the first mapped object that could not be opened safely
  for (size_t i = 0; i < files.size(); i++) {
    const auto& [path, range] = files[i];
    if (std::chrono::steady_clock::now() > deadline) {
      detach(*out);
      if (error)
        *error = "attach deadline (" + std::to_string(deadline_ms) + " ms) exceeded at " + path + " (" +
                 std::to_string(i) + " of " + std::to_string(files.size()) + " mapped objects read)";
      return -ETIMEDOUT;
    }
    std::string why;
    auto f = ObjectFile::open_mapped(pid, range, &why);
    if (!f) {  // gone, not a regular file, FUSE: never opened by name instead
      if (unreadable.empty()) unreadable = path + " (" + why + ")";
      continue;
    }
    auto syms = symbols_.get(*f);
    std::string stack = "openssl:symbols";
    if (!syms || !syms->usable()) {
      const size_t before = out->objects.size();
      if (int err = attach_go(pid, *f, path, out, &go_problem, error)) {  // Go crypto/tls (.gopclntab)
        detach(*out);
        return err;
      }
      if (out->objects.size() > before) {
        out->stacks.push_back("go:gopclntab");
        continue;
      }
      if (!go_problem.empty()) continue;  // a Go binary it cannot watch: not a locator's job
      TlsLocation loc = locator_.locate(*f);  // GnuTLS, stripped BoringSSL (cached per file)
      if (loc.kind == TlsLocation::Kind::Unrecognised && out->blind.empty())
        out->blind = path + ": " + loc.why + (loc.build_id.empty() ? "" : " (build id " + loc.build_id + ")");
      if (loc.kind != TlsLocation::Kind::Found) continue;
      syms = loc.syms;
      stack = loc.library + ":" + loc.method;
    }
    int err = attach_object(pid, *f, path, *syms, out, error);
    if (err) {
      detach(*out);
      return err;
    }
    out->stacks.push_back(stack);
  }
  if (plain) {
    const size_t before = out->objects.size();
    std::string plain_error;
    int err = attach_plain(pid, out, &plain_error);
    if (err && err != -ENOENT) {
      detach(*out);
      if (error) *error = plain_error;
      return err;
    }
    if (out->objects.size() > before) return 0;  // plain sockets are readable: watched
  }
  if (out->objects.empty()) {
    if (error)
      *error = !out->blind.empty()   ? out->blind
               : !go_problem.empty() ? go_problem
               : "no OpenSSL (SSL_write/SSL_read), GnuTLS, BoringSSL or Go crypto/tls in any mapped object" +
                     (unreadable.empty() ? std::string() : "; not read: " + unreadable);
    return -ENOENT;
  }
  return 0;
}

int TlsAttacher::attach_plain(int pid, ProcessLinks* out, std::string* error) {
  if (out->plain) return 0;
  ProcessLinks added;
  std::vector<std::string> seen;
  for (const auto& [path, range] : mapped_executable_files(pid)) {
    std::string why;
    auto f = ObjectFile::open_mapped(pid, range, &why);
    if (!f) continue;
    int err = 0;
    if (is_c_library_path(path)) {
      auto syms = libc_io_.get(*f);
      if (!syms || !syms->usable()) continue;
      err = attach_plain_libc(rt_, pid, *f, path, *syms, &added, error);
      if (!err) added.stacks.push_back("plain:libc");
    } else if (auto go = go_symbols_.get(*f, path); go && go->is_go) {
      if (!go->plain_usable()) {
        if (out->plain_problem.empty()) out->plain_problem = "Go binary " + path + ": " + go->plain_problem;
        continue;
      }
      err = attach_plain_go(rt_, pid, f->fd_path(), path, *go, &added, error);
      if (!err) added.stacks.push_back("plain:go");
    } else {
      continue;
    }
    if (err) {
      detach(added);
      return err;
    }
    added.objects.push_back(path);
  }
  if (added.objects.empty()) {
    if (out->plain_problem.empty()) out->plain_problem = "no C library and no Go internal/poll in any mapped object";
    if (error) *error = out->plain_problem;
    return -ENOENT;
  }
  out->multi_link_fds.insert(out->multi_link_fds.end(), added.multi_link_fds.begin(), added.multi_link_fds.end());
  out->perf_links.insert(out->perf_links.end(), added.perf_links.begin(), added.perf_links.end());
  for (auto& o : added.objects) {
    if (std::find(out->objects.begin(), out->objects.end(), o) == out->objects.end()) out->objects.push_back(o);
  }
  out->stacks.insert(out->stacks.end(), added.stacks.begin(), added.stacks.end());
  out->plain = true;
  out->plain_problem.clear();
  return 0;
}

// Go executables (crypto/tls): located through .gopclntab, once per file.
int TlsAttacher::attach_go(int pid, const ObjectFile& f, const std::string& path, ProcessLinks* out,
                           std::string* problem, std::string* error) {
  auto go = go_symbols_.get(f, path);
  if (!go || !go->is_go) return 0;
  if (!go->usable()) {
    *problem = "Go binary " + path + ": " + go->problem;
    return 0;
  }
  return attach_go_object(rt_, pid, f.fd_path(), path, *go, out, error);
}

// Each link's release waits in the kernel (~40-60 ms here) for probes in flight; the waits
// overlap when the links are closed from threads of their own (measured: 10 links ~60 ms
// together instead of ~0.5 s one after another).
void TlsAttacher::detach(ProcessLinks& links) { detach_all(&links, 1); }

// Closing a uprobe_multi link waits for an RCU tasks-trace grace period in the kernel
// (uprobe_unregister_sync, ~20-60 ms here), and closes are serialised only if they are made one
// after another: closes made at the same time share grace periods. So every link goes to a pool
// of threads at once. (A daemon that exits with its links open pays the same waits one by one
// in its exit path: minutes with 1,000 watched processes.)
void TlsAttacher::detach_all(ProcessLinks* sets, size_t n) {
  std::vector<int> fds;
  std::vector<bpf_link*> perf;
  for (size_t i = 0; i < n; i++) {
    fds.insert(fds.end(), sets[i].multi_link_fds.begin(), sets[i].multi_link_fds.end());
    perf.insert(perf.end(), sets[i].perf_links.begin(), sets[i].perf_links.end());
    sets[i].multi_link_fds.clear();
    sets[i].perf_links.clear();
  }
  const size_t total = fds.size() + perf.size();
  if (total == 0) return;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k; (k = next.fetch_add(1)) < total;) {
      if (k < fds.size())
        close(fds[k]);
      else
        bpf_link__destroy(perf[k - fds.size()]);
    }
  };
  const size_t threads = std::min<size_t>(total, kMaxCloserThreads);
  std::vector<std::thread> closers;
  closers.reserve(threads);
  for (size_t t = 0; t < threads; t++) closers.emplace_back(work);
  for (auto& t : closers) t.join();
}

AttachWorker::AttachWorker(BpfRuntime& rt) : rt_(rt), attacher_(rt) {
  efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
  detach_thread_ = std::thread([this] { run_detach(); });
}

AttachWorker::~AttachWorker() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  detach_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (detach_thread_.joinable()) detach_thread_.join();
  std::vector<ProcessLinks> all = std::move(attached_);
  attached_.clear();
  for (auto& l : detach_queue_) all.push_back(std::move(l));
  detach_queue_.clear();
  attacher_.detach_all(all.data(), all.size());
  if (efd_ >= 0) close(efd_);
}

void AttachWorker::request_attach(int pid, bool plain) {
  {
    std::lock_guard lk(mu_);
    queue_.push_back(Request{true, pid, plain});
  }
  cv_.notify_one();
}

// Detaching is slow (the kernel waits for probes in flight) and must not delay the next
// attach, which has a process held: links go to the detach thread's queue. A detach of a pid
// whose attach is still queued goes through the attach queue, to keep their order.
void AttachWorker::request_detach(int pid) {
  {
    std::lock_guard lk(mu_);
    bool queued = false;
    for (auto& q : queue_) queued |= q.attach && q.pid == pid;
    if (queued || attaching_pid_ == pid) {
      queue_.push_back(Request{false, pid, false});
    } else {
      for (auto it = attached_.begin(); it != attached_.end(); ++it)
        if (it->pid == pid) {
          detach_queue_.push_back(std::move(*it));
          attached_.erase(it);
          break;
        }
    }
  }
  cv_.notify_one();
  detach_cv_.notify_one();
}

void AttachWorker::run_detach() {
  for (;;) {
    std::vector<ProcessLinks> batch;  // every process queued by now: their closes overlap
    {
      std::unique_lock lk(mu_);
      detach_cv_.wait(lk, [&] { return stop_ || !detach_queue_.empty(); });
      if (stop_) return;
      for (auto& l : detach_queue_) batch.push_back(std::move(l));
      detach_queue_.clear();
    }
    attacher_.detach_all(batch.data(), batch.size());
  }
}

std::vector<AttachWorker::Result> AttachWorker::take_completed() {
  uint64_t v;
  while (read(efd_, &v, sizeof v) > 0) {
  }
  std::lock_guard lk(mu_);
  std::vector<Result> out;
  out.swap(done_);
  return out;
}

size_t AttachWorker::attached_processes() const {
  std::lock_guard lk(mu_);
  return attached_.size();
}

size_t AttachWorker::attached_links() const {
  std::lock_guard lk(mu_);
  size_t n = 0;
  for (auto& l : attached_) n += l.count();
  return n;
}

bool AttachWorker::is_attached(int pid) const {
  std::lock_guard lk(mu_);
  for (auto& l : attached_)
    if (l.pid == pid) return true;
  return false;
}

void AttachWorker::run() {
  for (;;) {
    Request req;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      req = queue_.front();
      queue_.pop_front();
    }
    const bool is_attach = req.attach;
    const int pid = req.pid;
    if (is_attach) {
      ProcessLinks stale;  // links of an earlier image of this pid still waiting to be closed
      {
        std::lock_guard lk(mu_);
        attaching_pid_ = pid;
        for (auto it = detach_queue_.begin(); it != detach_queue_.end(); ++it)
          if (it->pid == pid) {
            stale = std::move(*it);
            detach_queue_.erase(it);
            break;
          }
      }
      if (stale.count()) attacher_.detach(stale);
      {
        std::lock_guard lk(mu_);
        ProcessLinks* already = nullptr;
        for (auto& l : attached_)
          if (l.pid == pid) already = &l;
        if (already && req.plain && !already->plain) {
          // plain probes for a process attached already: made here, under the lock (the
          // detach path takes links out of attached_ under it too); a few ms
          std::string err;
          int rc = attacher_.attach_plain(pid, already, &err);
          Result r;
          r.pid = pid;
          r.err = rc == -ENOENT ? 0 : rc;
          r.error = rc == -ENOENT ? "" : err;
          r.objects = already->objects;
          r.stacks = already->stacks;
          r.plain = already->plain;
          r.plain_problem = already->plain_problem;
          r.plain_added = true;
          attaching_pid_ = 0;
          done_.push_back(std::move(r));
          uint64_t one = 1;
          (void)!write(efd_, &one, sizeof one);
          continue;
        }
        if (already) {
          attaching_pid_ = 0;
          Result r;
          r.pid = pid;
          r.objects = already->objects;
          r.stacks = already->stacks;
          r.plain = already->plain;
          done_.push_back(std::move(r));
          uint64_t one = 1;
          (void)!write(efd_, &one, sizeof one);
          continue;
        }
      }
      if (int64_t ms = util::faults().attach_delay_ms) {
        // test-only: keep the process in its capture hold (see util/faults.h); stop still wins
        std::unique_lock lk(mu_);
        if (cv_.wait_for(lk, std::chrono::milliseconds(ms), [&] { return stop_; })) return;
      }
      auto t0 = std::chrono::steady_clock::now();
      ProcessLinks links;
      std::string err;
      int rc = attacher_.attach(pid, &links, &err, kAttachDeadlineMs, req.plain);
      Result r;
      r.pid = pid;
      r.err = rc;
      r.error = err;
      r.objects = links.objects;
      r.duration_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      r.stacks = links.stacks;
      r.blind = links.blind;
      r.plain = links.plain;
      r.plain_problem = links.plain_problem;
      std::lock_guard lk(mu_);
      attaching_pid_ = 0;
      if (rc == 0) attached_.push_back(std::move(links));
      done_.push_back(std::move(r));
    } else {
      ProcessLinks links;
      {
        std::lock_guard lk(mu_);
        for (auto it = attached_.begin(); it != attached_.end(); ++it)
          if (it->pid == pid) {
            links = std::move(*it);
            attached_.erase(it);
            break;
          }
      }
      if (links.count()) {
        std::lock_guard lk(mu_);
        detach_queue_.push_back(std::move(links));
      }
      detach_cv_.notify_one();
      continue;  // detaches are not reported
    }
    uint64_t one = 1;
    (void)!write(efd_, &one, sizeof one);
  }
}

}  // namespace ab::loader

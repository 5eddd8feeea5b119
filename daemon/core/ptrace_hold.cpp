#include "core/ptrace_hold.h"

#include <dirent.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <spdlog/spdlog.h>

#include "process/procfs.h"

namespace ab::core {

namespace {

constexpr int kMaxSeizeRounds = 64;   // /proc/PID/task read again until no new thread appears
constexpr int kReleaseWaitMs = 20;    // a release waits this long for threads that had not stopped
constexpr int kShutdownWaitMs = 1000; // the holder's end: all of them together

pid_t this_tid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

int64_t mono_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

std::vector<pid_t> list_tids(uint32_t pid) {
  std::vector<pid_t> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long v = std::strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0' && v > 0) out.push_back(static_cast<pid_t>(v));
  }
  closedir(d);
  return out;
}

// TracerPid of a thread (the tracer's thread-group id; 0: none; -1: gone or unreadable).
int tracer_of(pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("TracerPid:", 0) == 0) return std::atoi(line.c_str() + 10);
  return -1;
}

}  // namespace

// ---- the handle ------------------------------------------------------------------------------

PtraceHold& PtraceHold::operator=(PtraceHold&& o) noexcept {
  if (this != &o) {
    reset();
    holder_ = o.holder_;
    pid_ = o.pid_;
    serial_ = o.serial_;
    o.holder_ = nullptr;
    o.pid_ = 0;
    o.serial_ = 0;
  }
  return *this;
}

void PtraceHold::reset() {
  if (!holder_) return;
  PtraceHolder* h = holder_;
  holder_ = nullptr;
  h->let_go(pid_, serial_);
}

// ---- the holder ------------------------------------------------------------------------------

PtraceHolder::PtraceHolder() : tracer_tid_(this_tid()) {
  std::ifstream in("/proc/sys/kernel/yama/ptrace_scope");
  int scope = 0;
  if (in >> scope && scope >= 3) {
    available_ = false;
    spdlog::warn("Yama ptrace_scope is {}: no process can be traced, so a terminal's foreground job that shares "
                 "its cgroup with other processes is not held (counted in ptrace_holds_refused_denied)",
                 scope);
  }
}

PtraceHolder::~PtraceHolder() {
  if (!on_tracer_thread("shutdown")) return;
  const int64_t deadline = mono_ms() + kShutdownWaitMs;
  for (auto& [pid, p] : procs_) p.refs = 0;
  for (auto it = procs_.begin(); it != procs_.end(); ++it)
    finish(it->first, it->second, static_cast<int>(std::max<int64_t>(0, deadline - mono_ms())));
  // Whatever is left (a thread in uninterruptible sleep that never stopped) is detached by
  // the kernel when this thread exits.
}

bool PtraceHolder::on_tracer_thread(const char* what) const {
  if (this_tid() == tracer_tid_) return true;
  spdlog::error("ptrace {} from thread {}, not the tracer thread {}: refused", what, this_tid(), tracer_tid_);
  return false;
}

int PtraceHolder::hold(uint32_t pid, uint64_t start_boottime_ns, PtraceHold* out) {
  if (!out) return -EINVAL;
  out->reset();
  if (pid <= 1 || pid == static_cast<uint32_t>(getpid())) return -EINVAL;
  if (!on_tracer_thread("hold")) return -EINVAL;
  if (!available_) {
    counters_.refused_denied++;
    return -EPERM;
  }
  if (start_boottime_ns && !process::same_process(static_cast<int>(pid), start_boottime_ns)) return -ESRCH;
  auto it = procs_.find(pid);
  if (it != procs_.end() && !it->second.threads.empty()) {
    // Ours already (a live tracee's pid cannot be reused): one more handle. A process being
    // let go is seized again (the threads detached so far) and interrupted.
    Proc& p = it->second;
    if (p.refs == 0) {
      if (int rc = seize_all(pid, p); rc < 0) {
        finish(pid, p, kReleaseWaitMs);
        return rc;
      }
      counters_.holds++;
    }
    p.refs++;
    out->holder_ = this;
    out->pid_ = pid;
    out->serial_ = p.serial;
    return 0;
  }
  if (it != procs_.end()) procs_.erase(it);  // all its threads are gone: its handles are inert
  const int tracer = tracer_of(static_cast<pid_t>(pid));
  if (tracer < 0) return -ESRCH;
  if (tracer > 0 && tracer != getpid()) {
    counters_.refused_traced++;
    return -EBUSY;
  }
  Proc& p = procs_[pid];
  p.serial = next_serial_++;
  p.start = start_boottime_ns;
  int rc = seize_all(pid, p);
  // Seized, the leader's pid cannot be reused any more: check again that it is the process meant.
  if (rc == 0 && start_boottime_ns && !process::same_process(static_cast<int>(pid), start_boottime_ns)) rc = -ESRCH;
  if (rc < 0) {
    if (rc == -EBUSY) counters_.refused_traced++;
    else if (rc == -EPERM) counters_.refused_denied++;
    p.refs = 0;
    finish(pid, p, kReleaseWaitMs);
    if (p.threads.empty()) procs_.erase(pid);
    return rc;
  }
  p.refs = 1;
  collect(pid, p);
  counters_.holds++;
  out->holder_ = this;
  out->pid_ = pid;
  out->serial_ = p.serial;
  return 0;
}

int PtraceHolder::seize_all(uint32_t pid, Proc& p) {
  const int self = getpid();
  for (int round = 0; round < kMaxSeizeRounds; round++) {
    const auto tids = list_tids(pid);
    if (tids.empty()) return -ESRCH;
    bool added = false;
    for (pid_t tid : tids) {
      if (p.threads.count(tid)) continue;
      if (ptrace(PTRACE_SEIZE, tid, nullptr, reinterpret_cast<void*>(static_cast<long>(PTRACE_O_TRACECLONE))) != 0) {
        const int e = errno;
        if (e == ESRCH) continue;  // the thread exited meanwhile
        const int t = tracer_of(tid);
        if (t != self) return t > 0 ? -EBUSY : (e == EPERM ? -EPERM : -e);
        // ours already: a thread a traced thread created (TRACECLONE attached it)
      }
      p.threads[tid] = Thread{};
      ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);  // ESRCH: it died; the wait sees it
      added = true;
    }
    if (!added) return 0;
  }
  return -EAGAIN;
}

void PtraceHolder::collect(uint32_t pid, Proc& p) {
  // Other threads first: a thread-group leader's zombie is reaped only after theirs.
  for (int pass = 0; pass < 2; pass++) {
    for (auto it = p.threads.begin(); it != p.threads.end();) {
      const bool leader = it->first == static_cast<pid_t>(pid);
      if (leader != (pass == 1)) {
        ++it;
        continue;
      }
      int st = 0;
      pid_t r;
      do r = waitpid(it->first, &st, __WALL | WNOHANG);
      while (r < 0 && errno == EINTR);
      if (r == 0) {
        ++it;
        continue;
      }
      if (r < 0) {  // ECHILD: not our tracee any more
        it = p.threads.erase(it);
        continue;
      }
      if (WIFEXITED(st) || WIFSIGNALED(st)) {
        counters_.threads_reaped++;
        it = p.threads.erase(it);
        continue;
      }
      if (WIFSTOPPED(st)) {
        it->second.stopped = true;
        // event 0: a signal-delivery-stop (the signal is ours to give back); otherwise our
        // interrupt, a group-stop or a clone event: nothing to give back
        it->second.sig = (st >> 16) == 0 ? WSTOPSIG(st) : 0;
      }
      ++it;
    }
  }
}

void PtraceHolder::adopt_new(uint32_t pid, Proc& p) {
  const int self = getpid();
  for (pid_t tid : list_tids(pid))
    if (!p.threads.count(tid) && tracer_of(tid) == self) p.threads[tid] = Thread{};
}

void PtraceHolder::detach_stopped(Proc& p) {
  for (auto it = p.threads.begin(); it != p.threads.end();) {
    Thread& t = it->second;
    if (!t.stopped) {
      ptrace(PTRACE_INTERRUPT, it->first, nullptr, nullptr);  // again: harmless if pending
      ++it;
      continue;
    }
    if (ptrace(PTRACE_DETACH, it->first, nullptr, reinterpret_cast<void*>(static_cast<long>(t.sig))) == 0) {
      if (t.sig) counters_.signals_given_back++;
      it = p.threads.erase(it);
    } else if (errno == ESRCH) {
      t.stopped = false;  // not in a stop any more: killed, on its way out; its exit is reaped
      ++it;
    } else {
      spdlog::warn("detaching thread {}: {}", it->first, std::strerror(errno));
      it = p.threads.erase(it);
    }
  }
}

void PtraceHolder::finish(uint32_t pid, Proc& p, int wait_ms) {
  const int64_t deadline = mono_ms() + wait_ms;
  adopt_new(pid, p);
  for (;;) {
    collect(pid, p);
    detach_stopped(p);
    if (p.threads.empty() || mono_ms() >= deadline) return;
    usleep(200);
  }
}

void PtraceHolder::let_go(uint32_t pid, uint64_t serial) {
  if (!on_tracer_thread("release")) return;
  auto it = procs_.find(pid);
  if (it == procs_.end() || it->second.serial != serial || it->second.refs <= 0) return;
  Proc& p = it->second;
  if (--p.refs > 0) return;
  finish(pid, p, kReleaseWaitMs);
  if (p.threads.empty()) procs_.erase(it);
  else counters_.releases_deferred++;
}

void PtraceHolder::poll() {
  if (procs_.empty() || !on_tracer_thread("poll")) return;
  for (auto it = procs_.begin(); it != procs_.end();) {
    Proc& p = it->second;
    if (p.refs == 0) {
      finish(it->first, p, 0);
    } else {
      collect(it->first, p);  // stops seen; a killed process's threads reaped
      bool all_stopped = true;
      for (const auto& [tid, t] : p.threads) all_stopped = all_stopped && t.stopped;
      if (!all_stopped) adopt_new(it->first, p);
    }
    // gone: erased once no handle refers to it (a dead entry with handles is inert)
    if (p.threads.empty() && p.refs == 0) it = procs_.erase(it);
    else ++it;
  }
}

bool PtraceHolder::held(uint32_t pid) const {
  auto it = procs_.find(pid);
  return it != procs_.end() && it->second.refs > 0 && !it->second.threads.empty();
}

size_t PtraceHolder::holding() const {
  size_t n = 0;
  for (const auto& [pid, p] : procs_) n += p.refs > 0 && !p.threads.empty();
  return n;
}

size_t PtraceHolder::pending() const {
  size_t n = 0;
  for (const auto& [pid, p] : procs_) n += p.refs == 0 && !p.threads.empty();
  return n;
}

std::vector<std::pair<std::string, uint64_t>> PtraceHolder::named_counters() const {
  return {{"ptrace_holds", counters_.holds},
          {"ptrace_holds_refused_traced", counters_.refused_traced},
          {"ptrace_holds_refused_denied", counters_.refused_denied},
          {"ptrace_threads_reaped", counters_.threads_reaped},
          {"ptrace_signals_given_back", counters_.signals_given_back},
          {"ptrace_releases_deferred", counters_.releases_deferred}};
}

}  // namespace ab::core

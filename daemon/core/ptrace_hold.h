// ptrace_hold.h — holding one process with ptrace, invisibly to its shell's job control.
//
// Why. A terminal's foreground job cannot be held with SIGSTOP: its shell sees the stop
// (waitpid WUNTRACED), takes the terminal back and shows "Stopped". Freezing its cgroup is
// invisible to the shell but freezes everything else in that cgroup too (the shell itself, the
// sshd session, a tmux server with every pane) when the job shares it. A ptrace stop is the
// third way: PTRACE_SEIZE + PTRACE_INTERRUPT stops each thread in a ptrace-stop, which the
// kernel reports to the tracer (the daemon) only. The parent's waitpid(WUNTRACED) never
// reports it (no group stop happens: SIGNAL_STOP_STOPPED is never set), /proc shows
// "t (tracing stop)", and only the held process pauses.
//
// Contract.
//   - One thread. Linux makes the THREAD that seized a task its tracer: every ptrace request
//     and the waits must come from it. Construct, use and destroy a PtraceHolder on one thread
//     (the daemon's event loop); a call from another thread is refused (-EINVAL, logged).
//   - hold(pid, start) seizes every thread of the process (PTRACE_O_TRACECLONE: a thread it
//     creates meanwhile is traced and starts stopped) and interrupts each; /proc/PID/task is
//     read again until no new thread appears. It returns at once: a thread stops when it next
//     runs (in a syscall: at its return, or at once if the syscall is interruptible).
//     Refused, nothing held:
//       -EBUSY  traced already (strace, gdb): a process has one tracer;
//       -EPERM  not permitted: Yama ptrace_scope 3, an LSM, no CAP_SYS_PTRACE, seccomp;
//       -ESRCH  gone, or another process at that pid (start time checked);
//       -EAGAIN its threads kept appearing faster than they were seized.
//   - A PtraceHold is the hold's handle: move-only, the process is let go when the last handle
//     on it ends (destructor or reset()). Letting go detaches every thread (PTRACE_DETACH):
//       * a signal the thread had stopped to report (a signal-delivery-stop, before our
//         interrupt took effect) is given back to it by PTRACE_DETACH; signals that arrived
//         during the ptrace-stop stayed pending and are delivered as usual once detached (a
//         ^C or ^Z typed while held acts after the hold, as the user meant it);
//       * a thread that has not stopped yet is interrupted again and detached when it stops
//         (up to a few ms here, the rest by poll()).
//   - SIGKILL ends a held process (a ptrace-stop is killable). A traced thread that exits stays
//     a zombie until its tracer reaps it, and until then its parent does not see the process
//     end: poll() reaps every thread of a held or released process that exited. Call it often
//     (the daemon: every tick, 100 ms).
//   - Nothing to record for a crash: when the tracer dies, the kernel detaches its tracees and
//     they run on (exit_ptrace).
//   - A held process's other state is not touched: its cgroup, process group, terminal,
//     children and siblings run on; its pending signals, its sockets and their data stay as
//     they are.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ab::core {

class PtraceHolder;

// One hold on one process. Empty when default-made or moved from.
class PtraceHold {
 public:
  PtraceHold() = default;
  PtraceHold(const PtraceHold&) = delete;
  PtraceHold& operator=(const PtraceHold&) = delete;
  PtraceHold(PtraceHold&& o) noexcept { *this = std::move(o); }
  PtraceHold& operator=(PtraceHold&& o) noexcept;
  ~PtraceHold() { reset(); }

  explicit operator bool() const { return holder_ != nullptr; }
  uint32_t pid() const { return pid_; }
  // Lets the process go (if this was its last hold).
  void reset();

 private:
  friend class PtraceHolder;
  PtraceHolder* holder_ = nullptr;
  uint32_t pid_ = 0;
  uint64_t serial_ = 0;
};

class PtraceHolder {
 public:
  struct Counters {
    uint64_t holds = 0;               // processes held
    uint64_t refused_traced = 0;      // ... not held: traced already by another tracer
    uint64_t refused_denied = 0;      // ... not held: ptrace not permitted
    uint64_t threads_reaped = 0;      // held threads that exited (killed) and were reaped
    uint64_t signals_given_back = 0;  // signals a thread had stopped for, re-delivered at detach
    uint64_t releases_deferred = 0;   // releases finished by poll(): a thread had not stopped yet
  };

  // Reads Yama's ptrace_scope: 3 means nothing can be traced (available() false, every hold
  // -EPERM); 1 and 2 let root (CAP_SYS_PTRACE) trace any process. The calling thread becomes
  // the tracer thread.
  PtraceHolder();
  // Lets every process go. It must outlive its handles (the freezers keep it by shared_ptr).
  ~PtraceHolder();
  PtraceHolder(const PtraceHolder&) = delete;
  PtraceHolder& operator=(const PtraceHolder&) = delete;

  // See the contract at the top. start_boottime_ns: the process's start (0: not checked).
  int hold(uint32_t pid, uint64_t start_boottime_ns, PtraceHold* out);
  // Collects stops and exits; finishes deferred releases; reaps exited threads.
  void poll();

  bool held(uint32_t pid) const;
  size_t holding() const;  // processes held now
  size_t pending() const;  // processes let go whose threads are not all detached or reaped yet
  bool available() const { return available_; }
  const Counters& counters() const { return counters_; }
  // The counters by the names `agentbrake status` shows (zeros included).
  std::vector<std::pair<std::string, uint64_t>> named_counters() const;

 private:
  friend class PtraceHold;
  struct Thread {
    bool stopped = false;  // its ptrace-stop was reported (else: seized, interrupted, not seen yet)
    int sig = 0;           // the signal of a signal-delivery-stop: given back at detach
  };
  struct Proc {
    uint64_t serial = 0;
    uint64_t start = 0;
    int refs = 0;  // handles; 0: being let go
    std::map<pid_t, Thread> threads;
  };

  bool on_tracer_thread(const char* what) const;
  int seize_all(uint32_t pid, Proc& p);
  void collect(uint32_t pid, Proc& p);  // waits (WNOHANG) on each thread
  void detach_stopped(Proc& p);
  void let_go(uint32_t pid, uint64_t serial);
  void finish(uint32_t pid, Proc& p, int wait_ms);
  void adopt_new(uint32_t pid, Proc& p);  // threads traced by us that it does not list yet

  std::map<uint32_t, Proc> procs_;
  uint64_t next_serial_ = 1;
  pid_t tracer_tid_ = 0;
  bool available_ = true;
  Counters counters_;
};

}  // namespace ab::core

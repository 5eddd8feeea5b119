// Reading processes from procfs. Every function takes the proc root ("/proc" on a host) so
// tests can use a fake tree. pid always means the thread-group id (see docs/interface.md, "Values").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ab::process {

struct ProcInfo {
	int pid = 0;  // thread-group id
	int ppid = 0; // parent's tgid as /proc says now (after any re-parenting)
	char state = '?';
	std::string comm; // task name, at most 15 bytes, may hold spaces and ')'
	std::string exe;  // /proc/<pid>/exe target, " (deleted)" stripped; empty if unreadable
	uint32_t uid = 0; // real uid (as bpf_get_current_uid_gid() reports it)
	uint64_t start_ticks = 0; // stat field 22: start after boot, clock ticks (sysconf(_SC_CLK_TCK))
	int pgrp = 0, session = 0;
	int tty_nr = 0; // controlling terminal (0: none)
	int tpgid = -1; // foreground process group of that terminal (-1: none)
	bool kernel_thread = false; // PF_KTHREAD in stat field 9
	std::string cgroup;         // v2 path ("0::" line); empty if unreadable
};

// Parse the content of /proc/<pid>/stat into `out` (pid, comm, state, ppid, pgrp, session,
// tty_nr, tpgid, kernel_thread, start_ticks). comm is everything between the first '(' and
// the LAST ')' (a comm may contain ')' and spaces). false on malformed input.
bool parse_proc_stat(std::string_view content, ProcInfo& out);

// Everything about one process: stat (required), status (real uid; a thread id that is not
// its thread-group leader yields nullopt), exe and cgroup (best effort). nullopt when the
// process does not exist (any more) or its stat is unreadable/malformed, and for a process
// outside the --cgroup-scope (cgroup_scope.h): such a process does not exist for the daemon.
std::optional<ProcInfo> read_proc(int pid, const std::string& proc_root = "/proc");

// Numeric entries of proc_root (thread-group ids; threads are not listed), ascending.
std::vector<int> list_pids(const std::string& proc_root = "/proc");

// The process is in its terminal's foreground process group (tty_nr != 0 && tpgid == pgrp).
// A SIGSTOP would be seen by the interactive shell waiting on it (the job is moved to the
// background and the user loses it), so the brake must not stop such a process; freezing
// its cgroup is invisible to the shell.
bool is_terminal_foreground(const ProcInfo& p);

// sysconf(_SC_CLK_TCK) (100 on Linux), cached.
long clock_ticks_per_sec();

// task->start_boottime (ns) in the kernel's /proc tick unit (the same truncating division
// the kernel does, nsec_to_clock_t).
uint64_t boottime_ns_to_ticks(uint64_t ns);

// Start time of `pid` in ticks (stat field 22), nullopt when it is gone.
std::optional<uint64_t> read_start_ticks(int pid, const std::string& proc_root = "/proc");

// Is `pid` still the process that was recorded with `start_boottime_ns` (the thread-group
// leader's task->start_boottime, as the BPF events carry it)? Compared at tick granularity.
// Use before signalling a pid recorded earlier: the pid may have been reused.
bool same_process(int pid, uint64_t start_boottime_ns, const std::string& proc_root = "/proc");

// Send `sig` to `pid` only if it is still the process recorded with `start_boottime_ns`.
// Race-free against pid reuse: opens a pidfd first, then checks the start time, then signals
// through the pidfd (a pid reused after the check cannot be hit). Returns 0 when sent,
// -ESRCH when the process is gone or is another process, another negative errno otherwise
// (-EPERM; -ENOSYS before Linux 5.3, below what the BPF ring buffer already needs: it never
// falls back to a blind kill()).
int signal_same_process(int pid, uint64_t start_boottime_ns, int sig,
                        const std::string& proc_root = "/proc");

} // namespace ab::process

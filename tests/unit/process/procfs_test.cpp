#include "process/cgroup.h"
#include "process/procfs.h"

#include "test_util.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <filesystem>
#include <fstream>
#include <thread>

namespace ab::process {
namespace {

using test::data_path;
using test::FakeProc;
using test::TempDir;
using test::write_fake_proc;

std::string slurp(const std::string& path) {
	std::ifstream f(path, std::ios::binary);
	return std::string(std::istreambuf_iterator<char>(f), {});
}

// ---- stat parsing ---------------------------------------------------------------------------

TEST(ProcStat, ParsesTheFieldsItNeeds) {
	ProcInfo p;
	ASSERT_TRUE(parse_proc_stat(test::stat_line({.pid = 4242,
	                                             .ppid = 7,
	                                             .comm = "python3",
	                                             .state = 'R',
	                                             .pgrp = 4240,
	                                             .session = 4000,
	                                             .tty_nr = 34817,
	                                             .tpgid = 4240,
	                                             .start_ticks = 123456789}),
	                            p));
	EXPECT_EQ(p.pid, 4242);
	EXPECT_EQ(p.ppid, 7);
	EXPECT_EQ(p.comm, "python3");
	EXPECT_EQ(p.state, 'R');
	EXPECT_EQ(p.pgrp, 4240);
	EXPECT_EQ(p.session, 4000);
	EXPECT_EQ(p.tty_nr, 34817);
	EXPECT_EQ(p.tpgid, 4240);
	EXPECT_EQ(p.start_ticks, 123456789u);
	EXPECT_FALSE(p.kernel_thread);
}

TEST(ProcStat, CommWithSpacesAndParentheses) {
	ProcInfo p;
	ASSERT_TRUE(parse_proc_stat(test::stat_line({.pid = 9, .ppid = 1, .comm = ") S 1 2 (x) ", .start_ticks = 77}), p));
	EXPECT_EQ(p.comm, ") S 1 2 (x) ");
	EXPECT_EQ(p.ppid, 1);
	EXPECT_EQ(p.start_ticks, 77u);
	// a fixture file with a nasty comm, as the kernel prints it
	ASSERT_TRUE(parse_proc_stat(slurp(data_path("stat_nasty_comm")), p));
	EXPECT_EQ(p.pid, 31337);
	EXPECT_EQ(p.comm, "a) (b c)");
	EXPECT_EQ(p.ppid, 1234);
	EXPECT_EQ(p.tty_nr, 0);
	EXPECT_EQ(p.tpgid, -1);
	EXPECT_EQ(p.start_ticks, 98765u);
}

TEST(ProcStat, KernelThreadFlag) {
	ProcInfo p;
	ASSERT_TRUE(parse_proc_stat(test::stat_line({.pid = 2, .ppid = 0, .comm = "kthreadd", .flags = 0x208040}), p));
	EXPECT_TRUE(p.kernel_thread);
}

TEST(ProcStat, RejectsMalformed) {
	ProcInfo p;
	EXPECT_FALSE(parse_proc_stat("", p));
	EXPECT_FALSE(parse_proc_stat("12 (x", p));
	EXPECT_FALSE(parse_proc_stat("12 x) S 1 2 3", p));
	EXPECT_FALSE(parse_proc_stat("12 (x) S 1 2 3 0 -1 4194560 0 0", p)); // truncated
	EXPECT_FALSE(parse_proc_stat("abc (x) S 1 2 3 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0", p));
	EXPECT_FALSE(parse_proc_stat("12 (x) S one 2 3 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0", p));
	EXPECT_FALSE(parse_proc_stat("12 (x) S 1 2 3 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 -5 0", p));
	EXPECT_FALSE(parse_proc_stat("0 (x) S 1 2 3 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0", p));
	EXPECT_FALSE(parse_proc_stat("99999999999 (x) S 1 2 3 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0", p));
	EXPECT_TRUE(parse_proc_stat("12 (x) S 1 2 3 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5", p));
}

// ---- read_proc on a fake tree ------------------------------------------------------------

TEST(ReadProc, FakeTree) {
	TempDir proc;
	write_fake_proc(proc.path(), {.pid = 100,
	                              .ppid = 1,
	                              .comm = "my agent",
	                              .uid = 1001,
	                              .exe = "/opt/agent/bin/python3.11 (deleted)",
	                              .cgroup = "/agents/a",
	                              .hybrid = true});
	auto p = read_proc(100, proc.path());
	ASSERT_TRUE(p.has_value());
	EXPECT_EQ(p->pid, 100);
	EXPECT_EQ(p->ppid, 1);
	EXPECT_EQ(p->comm, "my agent");
	EXPECT_EQ(p->uid, 1001u);
	EXPECT_EQ(p->exe, "/opt/agent/bin/python3.11");
	EXPECT_EQ(p->cgroup, "/agents/a");
	EXPECT_EQ(p->start_ticks, 1000u);
}

TEST(ReadProc, MissingPiecesAreBestEffortButStatAndStatusAreRequired) {
	TempDir proc;
	write_fake_proc(proc.path(), {.pid = 5, .ppid = 1, .exe = "", .cgroup = ""});
	auto p = read_proc(5, proc.path());
	ASSERT_TRUE(p.has_value());
	EXPECT_EQ(p->exe, "");
	EXPECT_EQ(p->cgroup, "");

	write_fake_proc(proc.path(), {.pid = 6, .ppid = 1});
	std::filesystem::remove(proc / "6/status");
	EXPECT_EQ(read_proc(6, proc.path()), std::nullopt);

	write_fake_proc(proc.path(), {.pid = 7, .ppid = 1});
	test::write_text(proc / "7/stat", "garbage\n");
	EXPECT_EQ(read_proc(7, proc.path()), std::nullopt);

	// a stat whose pid disagrees with the directory
	write_fake_proc(proc.path(), {.pid = 8, .ppid = 1});
	test::write_text(proc / "8/stat", test::stat_line({.pid = 9, .ppid = 1}));
	EXPECT_EQ(read_proc(8, proc.path()), std::nullopt);

	EXPECT_EQ(read_proc(404, proc.path()), std::nullopt);
	EXPECT_EQ(read_proc(-1, proc.path()), std::nullopt);
}

TEST(ReadProc, ThreadIdIsNotAProcess) {
	TempDir proc;
	write_fake_proc(proc.path(), {.pid = 501, .ppid = 1, .tgid = 500});
	EXPECT_EQ(read_proc(501, proc.path()), std::nullopt);
}

TEST(ListPids, NumericEntriesSorted) {
	TempDir proc;
	for (int pid : {300, 2, 41}) write_fake_proc(proc.path(), {.pid = pid, .ppid = 1});
	std::filesystem::create_directories(proc / "self");
	std::filesystem::create_directories(proc / "sys");
	test::write_text(proc / "12abc", "");
	EXPECT_EQ(list_pids(proc.path()), (std::vector<int>{2, 41, 300}));
	EXPECT_TRUE(list_pids(proc / "nope").empty());
}

// ---- live /proc -------------------------------------------------------------------------------

TEST(LiveProc, Self) {
	auto p = read_proc(::getpid());
	ASSERT_TRUE(p.has_value());
	EXPECT_EQ(p->pid, ::getpid());
	EXPECT_EQ(p->ppid, ::getppid());
	EXPECT_EQ(p->uid, ::getuid());
	EXPECT_EQ(p->pgrp, ::getpgrp());
	EXPECT_EQ(p->session, ::getsid(0));
	std::string comm = slurp("/proc/self/comm");
	if (!comm.empty() && comm.back() == '\n') comm.pop_back();
	EXPECT_EQ(p->comm, comm);
	EXPECT_EQ(p->exe, std::filesystem::read_symlink("/proc/self/exe").string());
	EXPECT_FALSE(p->kernel_thread);
	EXPECT_EQ(p->state, 'R');
	EXPECT_GT(p->start_ticks, 0u);
	auto pids = list_pids();
	EXPECT_TRUE(std::binary_search(pids.begin(), pids.end(), ::getpid()));
}

TEST(LiveProc, Parent) {
	auto p = read_proc(::getppid());
	ASSERT_TRUE(p.has_value());
	EXPECT_EQ(p->pid, ::getppid());
	auto me = read_proc(::getpid());
	ASSERT_TRUE(me.has_value());
	EXPECT_LE(p->start_ticks, me->start_ticks);
}

TEST(LiveProc, ThreadIdIsRejected) {
	std::atomic<int> tid{0};
	std::atomic<bool> stop{false};
	std::thread t([&] {
		tid = static_cast<int>(::syscall(SYS_gettid));
		while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(1));
	});
	while (tid == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
	EXPECT_TRUE(std::filesystem::exists("/proc/" + std::to_string(tid.load()) + "/stat"));
	EXPECT_EQ(read_proc(tid), std::nullopt);
	stop = true;
	t.join();
}

TEST(LiveProc, KernelThreadIsFlagged) {
	auto p = read_proc(2); // kthreadd on a host pid namespace
	if (!p || p->comm != "kthreadd") GTEST_SKIP() << "not in the host pid namespace";
	EXPECT_TRUE(p->kernel_thread);
}

// ---- identity -------------------------------------------------------------------------------

TEST(Identity, TickConversionTruncatesLikeTheKernel) {
	const uint64_t ns_per_tick = 1000000000ULL / static_cast<uint64_t>(clock_ticks_per_sec());
	EXPECT_EQ(boottime_ns_to_ticks(0), 0u);
	EXPECT_EQ(boottime_ns_to_ticks(ns_per_tick - 1), 0u);
	EXPECT_EQ(boottime_ns_to_ticks(ns_per_tick), 1u);
	EXPECT_EQ(boottime_ns_to_ticks(5 * ns_per_tick + ns_per_tick / 2), 5u);
}

TEST(Identity, SameProcessOnFakeTree) {
	TempDir proc;
	const uint64_t ns_per_tick = 1000000000ULL / static_cast<uint64_t>(clock_ticks_per_sec());
	write_fake_proc(proc.path(), {.pid = 77, .ppid = 1, .start_ticks = 5000});
	EXPECT_TRUE(same_process(77, 5000 * ns_per_tick, proc.path()));
	EXPECT_TRUE(same_process(77, 5000 * ns_per_tick + ns_per_tick - 1, proc.path()));
	EXPECT_FALSE(same_process(77, 5001 * ns_per_tick, proc.path())); // pid reused later
	EXPECT_FALSE(same_process(77, 4999 * ns_per_tick, proc.path()));
	EXPECT_FALSE(same_process(78, 5000 * ns_per_tick, proc.path())); // gone
	EXPECT_EQ(read_start_ticks(77, proc.path()), 5000u);
}

TEST(Identity, LiveSelf) {
	auto t = read_start_ticks(::getpid());
	ASSERT_TRUE(t.has_value());
	const uint64_t ns_per_tick = 1000000000ULL / static_cast<uint64_t>(clock_ticks_per_sec());
	EXPECT_TRUE(same_process(::getpid(), *t * ns_per_tick + ns_per_tick / 3));
	EXPECT_FALSE(same_process(::getpid(), (*t + 1) * ns_per_tick));
}

TEST(Identity, SignalOnlyTheRecordedProcess) {
	pid_t child = ::fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		for (;;) ::pause();
	}
	struct Reaper {
		pid_t pid;
		~Reaper() {
			if (pid > 0) {
				::kill(pid, SIGKILL);
				::waitpid(pid, nullptr, 0);
			}
		}
	} reaper{child};
	std::optional<uint64_t> ticks;
	for (int i = 0; i < 100 && !ticks; ++i) ticks = read_start_ticks(child);
	ASSERT_TRUE(ticks.has_value());
	const uint64_t ns_per_tick = 1000000000ULL / static_cast<uint64_t>(clock_ticks_per_sec());
	const uint64_t right = *ticks * ns_per_tick + 1234;
	const uint64_t wrong = (*ticks + 7) * ns_per_tick;

	EXPECT_EQ(signal_same_process(child, wrong, SIGTERM), -ESRCH);
	int st = 0;
	EXPECT_EQ(::waitpid(child, &st, WNOHANG), 0) << "a mismatched start time must not be signalled";

	EXPECT_EQ(signal_same_process(child, right, SIGTERM), 0);
	ASSERT_EQ(::waitpid(child, &st, 0), child);
	reaper.pid = -1;
	EXPECT_TRUE(WIFSIGNALED(st));
	EXPECT_EQ(WTERMSIG(st), SIGTERM);
	// reaped: the pid is gone (or someone else's)
	EXPECT_EQ(signal_same_process(child, right, SIGTERM), -ESRCH);
	EXPECT_EQ(signal_same_process(0, right, SIGTERM), -ESRCH);
}

// ---- terminal foreground -------------------------------------------------------------------

TEST(TerminalForeground, Rule) {
	ProcInfo p;
	p.pgrp = 100;
	p.tty_nr = 34816;
	p.tpgid = 100;
	EXPECT_TRUE(is_terminal_foreground(p));
	p.tpgid = 200; // a background job
	EXPECT_FALSE(is_terminal_foreground(p));
	p.tty_nr = 0; // no terminal (a service)
	p.tpgid = -1;
	p.pgrp = -1;
	EXPECT_FALSE(is_terminal_foreground(p));
	p.tty_nr = 0;
	p.tpgid = 100;
	p.pgrp = 100;
	EXPECT_FALSE(is_terminal_foreground(p));
}

// A real pseudo-terminal: a session leader that owns it is in the foreground; a process it
// moves to its own process group is a background job.
TEST(TerminalForeground, LivePty) {
	int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0)
		GTEST_SKIP() << "no pseudo-terminals here";
	std::string slave_name = ::ptsname(master);
	int ready[2];
	ASSERT_EQ(::pipe(ready), 0);

	pid_t leader = ::fork();
	ASSERT_GE(leader, 0);
	if (leader == 0) {
		::setsid();
		int s = ::open(slave_name.c_str(), O_RDWR);
		if (s < 0 || ::ioctl(s, TIOCSCTTY, 0) != 0) ::_exit(3);
		pid_t bg = ::fork();
		if (bg == 0) {
			::setpgid(0, 0);
			for (;;) ::pause();
		}
		::setpgid(bg, bg);
		int pids[1] = {bg};
		if (::write(ready[1], pids, sizeof pids) != sizeof pids) ::_exit(4);
		for (;;) ::pause();
	}
	::close(ready[1]);
	int bg = 0;
	ssize_t n = ::read(ready[0], &bg, sizeof bg);
	::close(ready[0]);
	struct Cleanup {
		pid_t leader;
		int bg, master;
		~Cleanup() {
			if (bg > 0) ::kill(bg, SIGKILL);
			::kill(leader, SIGKILL);
			::waitpid(leader, nullptr, 0);
			::close(master);
		}
	} cleanup{leader, n == sizeof bg ? bg : 0, master};
	ASSERT_EQ(n, static_cast<ssize_t>(sizeof bg));

	// the background child's setpgid may land just after the leader reported it
	std::optional<ProcInfo> lp, bp;
	for (int i = 0; i < 200; ++i) {
		lp = read_proc(leader);
		bp = read_proc(bg);
		if (lp && bp && bp->pgrp == bg) break;
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
	ASSERT_TRUE(lp && bp);
	EXPECT_NE(lp->tty_nr, 0);
	EXPECT_EQ(lp->session, leader);
	EXPECT_EQ(lp->tpgid, leader);
	EXPECT_TRUE(is_terminal_foreground(*lp));
	EXPECT_EQ(bp->tty_nr, lp->tty_nr);
	EXPECT_EQ(bp->pgrp, bg);
	EXPECT_FALSE(is_terminal_foreground(*bp));
	// our own test process has no part in that terminal
	auto me = read_proc(::getpid());
	ASSERT_TRUE(me.has_value());
	EXPECT_NE(me->tty_nr, lp->tty_nr);
}

} // namespace
} // namespace ab::process

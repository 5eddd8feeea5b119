#include "process/lineage.h"
#include "process/procfs.h"

#include "test_util.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace ab::process {
namespace {

using test::FakeProc;
using test::TempDir;
using test::write_fake_proc;

const uint64_t kTick = 1000000000ULL / static_cast<uint64_t>(clock_ticks_per_sec());

// Drives a ProcessTable the way the daemon's BPF event handler does. Each new process starts
// one tick after the previous one; cgroup ids are derived from the path.
struct Host {
	ProcessTable t;
	uint64_t now = 1000 * kTick;
	explicit Host(ProcessTable::Options o = {}) : t(std::move(o)) {}

	static uint64_t cgid(const std::string& cg) { return std::hash<std::string>{}(cg) | 1; }

	// fork + exec, as a shell or an agent starting a program
	void spawn(int parent, int child, const std::string& comm, const std::string& cgroup) {
		now += kTick;
		t.on_fork(parent, child, now);
		t.on_exec(child, comm, "/usr/bin/" + comm, 1000, cgid(cgroup), cgroup, now);
	}
	void fork_only(int parent, int child) {
		now += kTick;
		t.on_fork(parent, child, now);
	}
	void exec(int pid, const std::string& comm, const std::string& cgroup) {
		t.on_exec(pid, comm, "/usr/bin/" + comm, 1000, cgid(cgroup), cgroup);
	}
	// the session a terminal user has: init, sshd, a login shell
	void boot(const std::string& user_cg = "/user.slice/session-1.scope") {
		ProcInfo init;
		init.pid = 1;
		init.comm = "systemd";
		init.cgroup = "/init.scope";
		init.start_ticks = 1;
		t.upsert(init);
		t.on_exec(1, "systemd", "/usr/lib/systemd/systemd", 0, cgid("/init.scope"), "/init.scope", 1 * kTick);
		spawn(1, 50, "sshd", "/system.slice/ssh.service");
		fork_only(50, 60);
		exec(60, "sshd-session", user_cg);
		fork_only(60, 61);
		exec(61, "bash", user_cg);
	}
};

const std::string kUser = "/user.slice/session-1.scope";

TEST(TreeRoot, AgentStartedFromBashIsItsOwnRoot) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	EXPECT_EQ(h.t.tree_root(70), 70);
	EXPECT_EQ(h.t.tree_members(70), std::vector<int>{70});
	// the login shell and its helpers are not part of the agent's tree
	EXPECT_EQ(h.t.tree_root(61), 61);
	EXPECT_EQ(h.t.tree_root(60), 60);
	EXPECT_EQ(h.t.tree_root(50), 50);
	EXPECT_EQ(h.t.tree_root(1), 1);
	EXPECT_EQ(h.t.tree_members(61), std::vector<int>{61});
	EXPECT_EQ(h.t.find(70)->ppid, 61);
	EXPECT_EQ(h.t.find(70)->comm, "python3");
	EXPECT_EQ(h.t.find(70)->cgroup, kUser);
}

TEST(TreeRoot, SubAgentsAndToolsShareTheTopAgent) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	// before its exec a forked child is a copy of the agent: already in its tree
	h.fork_only(70, 71);
	EXPECT_EQ(h.t.tree_root(71), 70);
	EXPECT_EQ(h.t.find(71)->comm, "python3");
	h.exec(71, "sh", kUser);                // subprocess.run("curl ...", shell=True)
	h.spawn(71, 72, "curl", kUser);         // the tool, through the shell
	h.spawn(70, 73, "python3", kUser);      // a sub-agent
	h.spawn(73, 74, "node", kUser);         // the sub-agent's tool
	h.spawn(70, 75, "curl", kUser);         // a tool, directly
	h.fork_only(70, 76);                    // a multiprocessing worker (no exec)
	h.spawn(73, 77, "bash", kUser);         // a shell of the sub-agent...
	h.spawn(77, 78, "python3", kUser);      // ...running a sub-sub-agent
	for (int pid : {70, 71, 72, 73, 74, 75, 76, 77, 78}) EXPECT_EQ(h.t.tree_root(pid), 70) << pid;
	EXPECT_EQ(h.t.tree_members(70), (std::vector<int>{70, 71, 72, 73, 74, 75, 76, 77, 78}));
	EXPECT_EQ(h.t.tree_members(61), std::vector<int>{61});
}

TEST(TreeRoot, ShellsAndWrappersBetweenAgentsAreWalkedThrough) {
	Host h;
	h.boot();
	h.spawn(61, 62, "timeout", kUser); // timeout 1h python agent.py: timeout stays the parent
	h.spawn(62, 70, "python3", kUser);
	h.spawn(70, 71, "sh", kUser);
	h.spawn(71, 72, "bash", kUser);
	h.spawn(72, 73, "env", kUser);
	h.spawn(73, 74, "python3", kUser);
	EXPECT_EQ(h.t.tree_root(70), 70);
	EXPECT_EQ(h.t.tree_root(74), 70);
	EXPECT_EQ(h.t.tree_root(62), 62); // the wrapper itself has no agent above it
}

TEST(TreeRoot, AgentMovedToItsOwnCgroupBeforeExec) {
	Host h;
	h.boot(); // (sshd and the session moved cgroups at their execs, too)
	const uint64_t moves = h.t.stats().cgroup_moves;
	// systemd-run --scope / a launcher moves the child, then it execs the agent
	h.fork_only(61, 80);
	EXPECT_EQ(h.t.find(80)->cgroup, kUser);
	h.exec(80, "python3", "/agents/b");
	EXPECT_EQ(h.t.tree_root(80), 80);
	h.spawn(80, 81, "curl", "/agents/b");
	EXPECT_EQ(h.t.tree_root(81), 80);
	EXPECT_EQ(h.t.tree_members(80), (std::vector<int>{80, 81}));
	EXPECT_EQ(h.t.tree_members(61), std::vector<int>{61});
	EXPECT_EQ(h.t.stats().cgroup_moves, moves + 1);
}

TEST(TreeRoot, CgroupBoundaryBetweenTwoAgents) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", "/agents/a");
	h.fork_only(70, 90);
	h.exec(90, "python3", "/agents/b"); // an orchestrator put its worker in another cgroup
	h.spawn(90, 91, "python3", "/agents/b");
	EXPECT_EQ(h.t.tree_root(70), 70);
	EXPECT_EQ(h.t.tree_root(90), 90);
	EXPECT_EQ(h.t.tree_root(91), 90);
	EXPECT_EQ(h.t.tree_members(70), std::vector<int>{70});
}

TEST(TreeRoot, MoveAfterExecIsAppliedToTheProcessAndItsChildren) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.spawn(70, 71, "python3", kUser);
	h.spawn(71, 72, "curl", kUser);
	const uint64_t moves = h.t.stats().cgroup_moves;
	EXPECT_EQ(h.t.tree_root(72), 70);
	h.t.on_cgroup(71, Host::cgid("/agents/x"), "/agents/x"); // written to cgroup.procs later
	EXPECT_EQ(h.t.tree_root(71), 71);
	// 72 stayed behind in the old cgroup: its walk stops at 71's boundary, it is its own root
	EXPECT_EQ(h.t.tree_root(72), 72);
	h.t.on_cgroup(72, Host::cgid("/agents/x"), "/agents/x");
	EXPECT_EQ(h.t.tree_root(72), 71);
	// the same cgroup again is not a move
	h.t.on_cgroup(72, Host::cgid("/agents/x"), "/agents/x");
	EXPECT_EQ(h.t.stats().cgroup_moves, moves + 2);
	h.t.on_cgroup(4242, 1, "/x"); // unknown pid: ignored
	EXPECT_EQ(h.t.find(4242), nullptr);
}

TEST(TreeRoot, StopsAtPid1EvenWhenInitIsNotTransparent) {
	Host h;
	ProcInfo init;
	init.pid = 1;
	init.comm = "my-init";
	init.cgroup = "/";
	init.start_ticks = 1;
	h.t.upsert(init);
	h.spawn(1, 95, "python3", "/");
	h.spawn(95, 96, "curl", "/");
	EXPECT_EQ(h.t.tree_root(95), 95);
	EXPECT_EQ(h.t.tree_root(96), 95);
	EXPECT_EQ(h.t.tree_root(1), 1);
	EXPECT_EQ(h.t.tree_members(1), std::vector<int>{1});
}

TEST(TreeRoot, InteractiveShellsWithoutAgentAboveAreTheirOwnRoots) {
	Host h;
	h.boot();
	h.fork_only(61, 63); // a subshell: ( cd x; make )
	EXPECT_EQ(h.t.tree_root(63), 63);
	h.spawn(61, 64, "tmux: server", kUser);
	h.spawn(64, 65, "bash", kUser);
	h.spawn(65, 66, "node", kUser);
	EXPECT_EQ(h.t.tree_root(64), 64);
	EXPECT_EQ(h.t.tree_root(66), 66);
	EXPECT_TRUE(h.t.is_transparent("tmux: client"));
	EXPECT_TRUE(h.t.is_transparent("bash"));
	EXPECT_FALSE(h.t.is_transparent("python3"));
	EXPECT_FALSE(h.t.is_transparent("bashful"));
	EXPECT_FALSE(h.t.is_transparent(""));
}

TEST(TreeRoot, ExecThatChangesEligibilityRecomputesDescendants) {
	Host h;
	h.boot();
	h.spawn(61, 67, "bash", kUser);     // a script's shell...
	h.spawn(67, 68, "python3", kUser);  // ...with a background agent
	EXPECT_EQ(h.t.tree_root(68), 68);
	h.exec(67, "python3", kUser);       // ...that then does `exec python3 orchestrator.py`
	EXPECT_EQ(h.t.tree_root(67), 67);
	EXPECT_EQ(h.t.tree_root(68), 67);
	EXPECT_EQ(h.t.tree_members(67), (std::vector<int>{67, 68}));
	EXPECT_TRUE(h.t.tree_members(68).empty());
}

TEST(TreeRoot, CustomTransparentSet) {
	ProcessTable::Options o;
	o.transparent_comms = {"launcher"};
	o.transparent_prefixes = {};
	Host h(o);
	h.spawn(1, 10, "bash", "/");
	h.spawn(10, 11, "launcher", "/");
	h.spawn(11, 12, "python3", "/");
	EXPECT_EQ(h.t.tree_root(12), 10); // bash is an ordinary process here
	EXPECT_FALSE(h.t.is_transparent("tmux: server"));
	EXPECT_TRUE(h.t.is_transparent("launcher"));
}

// ---- exits ----------------------------------------------------------------------------------

TEST(ParentExit, ChildrenKeepTheirTreeRoot) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.spawn(70, 73, "python3", kUser);
	h.spawn(73, 74, "curl", kUser);
	h.t.on_exit(73); // the sub-agent exits, the tool lives on (re-parented by the kernel)
	EXPECT_EQ(h.t.find(73), nullptr);
	const auto* d = h.t.find(74);
	ASSERT_NE(d, nullptr);
	EXPECT_TRUE(d->parent_gone);
	EXPECT_EQ(d->anchor_root, 70);
	EXPECT_EQ(d->ppid, 73); // the recorded parent, not the reaper
	EXPECT_EQ(h.t.tree_root(74), 70);
	EXPECT_EQ(h.t.tree_members(70), (std::vector<int>{70, 74}));
	// it still belongs there after an exec, and so do its new children
	h.exec(74, "node", kUser);
	EXPECT_EQ(h.t.tree_root(74), 70);
	h.spawn(74, 79, "python3", kUser);
	EXPECT_EQ(h.t.tree_root(79), 70);
	// the root itself exits: the tree keeps its id while members live
	h.t.on_exit(70);
	EXPECT_EQ(h.t.tree_root(70), 0);
	EXPECT_EQ(h.t.tree_root(74), 70);
	EXPECT_EQ(h.t.tree_root(79), 70);
	EXPECT_EQ(h.t.tree_members(70), (std::vector<int>{74, 79}));
	h.t.on_exit(74);
	h.t.on_exit(79);
	EXPECT_TRUE(h.t.tree_members(70).empty());
	EXPECT_EQ(h.t.stats().exits, 4u);
}

TEST(ParentExit, ReusedParentPidIsNotFollowed) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.spawn(70, 73, "python3", kUser);
	h.spawn(73, 74, "curl", kUser);
	h.t.on_exit(73);
	h.spawn(61, 73, "node", kUser); // pid 73 reused by an unrelated agent
	EXPECT_EQ(h.t.tree_root(73), 73);
	EXPECT_EQ(h.t.tree_root(74), 70);
	h.exec(74, "wget", kUser);
	EXPECT_EQ(h.t.tree_root(74), 70);
	EXPECT_EQ(h.t.tree_members(73), std::vector<int>{73});
}

TEST(ParentExit, OrphanOfAnAgentFreeChainStaysItsOwnRoot) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.t.on_exit(61); // the login shell closes; nohup'd agent lives on
	EXPECT_TRUE(h.t.find(70)->parent_gone);
	EXPECT_EQ(h.t.find(70)->anchor_root, 0);
	EXPECT_EQ(h.t.tree_root(70), 70);
	h.spawn(70, 71, "curl", kUser);
	EXPECT_EQ(h.t.tree_root(71), 70);
}

TEST(ParentExit, UnknownExitIsCounted) {
	Host h;
	h.t.on_exit(12345);
	EXPECT_EQ(h.t.stats().unknown_exits, 1u);
	EXPECT_EQ(h.t.size(), 0u);
}

// ---- identity, ordering, unknowns ---------------------------------------------------------

TEST(Events, PidReuseReplacesTheEntry) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.spawn(70, 100, "curl", kUser);
	h.spawn(100, 101, "python3", kUser);
	// 100's exit was lost; the pid comes back as someone else's child
	h.spawn(61, 100, "node", kUser);
	EXPECT_EQ(h.t.stats().reused_pids, 1u);
	EXPECT_EQ(h.t.find(100)->comm, "node");
	EXPECT_EQ(h.t.find(100)->ppid, 61);
	EXPECT_EQ(h.t.tree_root(100), 100);
	EXPECT_EQ(h.t.tree_root(101), 70); // orphaned with its old root
	EXPECT_TRUE(h.t.find(101)->parent_gone);
	// an exec carrying another start time also means reuse
	h.t.on_exec(100, "ruby", "/usr/bin/ruby", 0, Host::cgid(kUser), kUser, h.now + 50 * kTick);
	EXPECT_EQ(h.t.stats().reused_pids, 2u);
	EXPECT_EQ(h.t.find(100)->ppid, 0); // lineage unknown now
}

TEST(Events, DuplicateForkIsIgnored) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.t.on_fork(61, 70, h.now);
	EXPECT_EQ(h.t.find(70)->comm, "python3");
	EXPECT_EQ(h.t.stats().reused_pids, 0u);
}

TEST(Events, ExecBeforeForkLearnsTheParentLater) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.now += kTick;
	h.t.on_exec(200, "curl", "/usr/bin/curl", 1000, Host::cgid(kUser), kUser, h.now);
	EXPECT_EQ(h.t.find(200)->ppid, 0);
	EXPECT_EQ(h.t.tree_root(200), 200);
	h.t.on_fork(70, 200, h.now);
	EXPECT_EQ(h.t.find(200)->ppid, 70);
	EXPECT_EQ(h.t.find(200)->comm, "curl");
	EXPECT_EQ(h.t.tree_root(200), 70);
}

TEST(Events, ExecOfAnUnknownPidTakesTheEventsParent) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	h.now += kTick;
	h.t.on_exec(201, "node", "/usr/bin/node", 1000, Host::cgid(kUser), kUser, h.now, 70);
	EXPECT_EQ(h.t.find(201)->ppid, 70);
	EXPECT_EQ(h.t.tree_root(201), 70);
	// for a known pid the recorded parent wins over the event's (a reaper after re-parenting)
	h.t.on_exit(70);
	h.t.on_exec(201, "node", "/usr/bin/node", 1000, Host::cgid(kUser), kUser, h.now, 1);
	EXPECT_EQ(h.t.find(201)->ppid, 70);
	EXPECT_EQ(h.t.tree_root(201), 70);
}

TEST(Events, ExitOfAnotherProcessOnTheSamePidIsIgnored) {
	Host h;
	h.boot();
	h.spawn(61, 70, "python3", kUser);
	const uint64_t start = h.now;
	h.t.on_exit(70, start - 40 * kTick); // a stale exit of an earlier owner of the pid
	EXPECT_NE(h.t.find(70), nullptr);
	EXPECT_EQ(h.t.stats().unknown_exits, 1u);
	h.t.on_exit(70, start);
	EXPECT_EQ(h.t.find(70), nullptr);
	// the last thread to exit is not always the leader: its later start is still this process
	h.spawn(61, 71, "python3", kUser);
	h.t.on_exit(71, h.now + 300 * kTick);
	EXPECT_EQ(h.t.find(71), nullptr);
	EXPECT_EQ(h.t.stats().unknown_exits, 1u);
}

TEST(Events, CgroupIdChangeWithoutPathForgetsTheStalePath) {
	Host h;
	h.spawn(1, 10, "python3", "/a");
	h.t.on_cgroup(10, 777, "");
	EXPECT_EQ(h.t.find(10)->cgroup_id, 777u);
	EXPECT_EQ(h.t.find(10)->cgroup, "");
	h.t.on_cgroup(10, 777, "/b"); // the path, once resolved: the same cgroup, not a move
	EXPECT_EQ(h.t.find(10)->cgroup, "/b");
	EXPECT_EQ(h.t.stats().cgroup_moves, 1u);
}

TEST(Events, ForkFromUnknownParent) {
	Host h;
	h.t.on_fork(999, 1000, 5 * kTick);
	const auto* e = h.t.find(1000);
	ASSERT_NE(e, nullptr);
	EXPECT_EQ(e->ppid, 999);
	EXPECT_EQ(e->comm, "");
	EXPECT_EQ(h.t.tree_root(1000), 1000);
	EXPECT_EQ(h.t.tree_root(999), 0);
	EXPECT_TRUE(h.t.tree_members(999).empty());
}

TEST(Events, ParentThatStartedAfterTheChildIsNotItsParent) {
	Host h;
	// the child is known from an exec only, with a ppid learned from /proc later...
	ProcInfo child;
	child.pid = 300;
	child.ppid = 299;
	child.comm = "curl";
	child.cgroup = "/";
	child.start_ticks = 100;
	h.t.upsert(child);
	// ...and pid 299 now is a process that started after it: a reused pid, not the parent
	ProcInfo later;
	later.pid = 299;
	later.ppid = 1;
	later.comm = "python3";
	later.cgroup = "/";
	later.start_ticks = 500;
	h.t.upsert(later);
	h.t.upsert(child);
	EXPECT_EQ(h.t.tree_root(300), 300);
	EXPECT_EQ(h.t.tree_members(299), std::vector<int>{299});
}

TEST(Events, UnknownLookups) {
	ProcessTable t;
	EXPECT_EQ(t.find(1), nullptr);
	EXPECT_EQ(t.tree_root(1), 0);
	EXPECT_TRUE(t.tree_members(1).empty());
	EXPECT_EQ(t.size(), 0u);
	t.on_fork(1, 0, 1);
	t.on_fork(5, 5, 1);
	t.on_exec(-3, "x", "", 0, 0, "");
	EXPECT_EQ(t.size(), 0u);
}

TEST(Events, DeepChainIsRootedAtTheTop) {
	Host h;
	h.boot();
	h.spawn(61, 1000, "python3", kUser);
	for (int pid = 1001; pid < 1500; ++pid) h.spawn(pid - 1, pid, pid % 2 ? "sh" : "python3", kUser);
	EXPECT_EQ(h.t.tree_root(1499), 1000);
	EXPECT_EQ(h.t.tree_members(1000).size(), 500u);
}

// ---- bounds ----------------------------------------------------------------------------------

TEST(Bounds, CapEvictsLeastRecentlyTouchedAndCounts) {
	ProcessTable::Options o;
	o.max_entries = 64;
	Host h(o);
	h.spawn(1, 10, "python3", "/a"); // an agent that keeps being active
	for (int i = 0; i < 1000; ++i) {
		h.spawn(10, 2000 + i, "curl", "/a"); // whose exits are all lost
		h.exec(10, "python3", "/a");          // (activity touches the agent)
	}
	EXPECT_LE(h.t.size(), 64u);
	EXPECT_GE(h.t.stats().evicted, 1000u + 1 - 64);
	EXPECT_NE(h.t.find(10), nullptr);
	EXPECT_EQ(h.t.tree_root(2999), 10);
	EXPECT_EQ(h.t.find(2000), nullptr);
	EXPECT_EQ(h.t.tree_root(2000), 0);
	// the members index holds only live entries
	EXPECT_LE(h.t.tree_members(10).size(), 64u);
}

// ---- /proc scans -------------------------------------------------------------------------------

// init, sshd, a session with a login shell, an agent with tools and a sub-agent, an agent in
// its own cgroup, a tmux session with an agent, kernel threads.
struct FakeHost : ::testing::Test {
	TempDir proc;
	const std::string sess = "/user.slice/user-1000.slice/session-1.scope";
	void add(int pid, int ppid, const std::string& comm, const std::string& cg, unsigned long long start,
	         unsigned long flags = 0x400000) {
		FakeProc p;
		p.pid = pid;
		p.ppid = ppid;
		p.comm = comm;
		p.cgroup = cg;
		p.start_ticks = start;
		p.flags = flags;
		p.exe = "/usr/bin/" + comm;
		write_fake_proc(proc.path(), p);
	}
	void SetUp() override {
		add(1, 0, "systemd", "/init.scope", 1);
		add(2, 0, "kthreadd", "/", 1, 0x208040);
		add(3, 2, "kworker/0:0", "/", 2, 0x4208060);
		add(50, 1, "sshd", "/system.slice/ssh.service", 10);
		add(60, 50, "sshd-session", sess, 100);
		add(61, 60, "bash", sess, 101);
		add(70, 61, "python3", sess, 200);
		add(71, 70, "sh", sess, 210);
		add(72, 71, "curl", sess, 211);
		add(73, 70, "python3", sess, 220);
		add(74, 73, "node", sess, 230);
		add(80, 61, "python3", "/agents/b", 300);
		add(81, 80, "curl", "/agents/b", 310);
		add(90, 1, "tmux: server", sess, 400);
		add(91, 90, "bash", sess, 401);
		add(92, 91, "node", sess, 402);
		add(95, 1, "python3", sess, 500);
	}
};

TEST_F(FakeHost, ScanBuildsTheTrees) {
	ProcessTable t;
	t.scan(proc.path());
	EXPECT_EQ(t.size(), 15u); // kernel threads skipped
	EXPECT_EQ(t.find(2), nullptr);
	EXPECT_EQ(t.find(3), nullptr);
	const std::pair<int, int> want[] = {{1, 1},   {50, 50}, {60, 60}, {61, 61}, {70, 70},
	                                    {71, 70}, {72, 70}, {73, 70}, {74, 70}, {80, 80},
	                                    {81, 80}, {90, 90}, {91, 91}, {92, 92}, {95, 95}};
	for (auto [pid, root] : want) EXPECT_EQ(t.tree_root(pid), root) << pid;
	EXPECT_EQ(t.tree_members(70), (std::vector<int>{70, 71, 72, 73, 74}));
	EXPECT_EQ(t.find(70)->exe, "/usr/bin/python3");
	EXPECT_EQ(t.find(70)->start_ns, 200 * kTick);
	EXPECT_EQ(t.find(80)->cgroup, "/agents/b");
	EXPECT_EQ(t.stats().scans, 1u);
}

TEST_F(FakeHost, ScanWithAResolverFillsCgroupIds) {
	TempDir cg;
	for (const char* d : {"init.scope", "system.slice/ssh.service", "user.slice/user-1000.slice/session-1.scope",
	                      "agents/b"})
		std::filesystem::create_directories(cg / d);
	CgroupResolver ids(cg.path());
	ProcessTable t;
	t.scan(proc.path(), &ids);
	EXPECT_EQ(t.find(70)->cgroup_id, *cgroup_id_of(cg.path(), sess));
	EXPECT_EQ(t.find(80)->cgroup_id, *cgroup_id_of(cg.path(), "/agents/b"));
	EXPECT_NE(t.find(70)->cgroup_id, t.find(80)->cgroup_id);
	EXPECT_EQ(t.tree_root(81), 80);
	// an exec event with the id only (path not resolved yet) is the same cgroup
	t.on_fork(70, 76, 2000 * kTick);
	t.on_exec(76, "curl", "/usr/bin/curl", 1000, *cgroup_id_of(cg.path(), sess), "", 2000 * kTick);
	EXPECT_EQ(t.tree_root(76), 70);
	EXPECT_EQ(t.find(76)->cgroup, sess);
}

TEST_F(FakeHost, RescanAfterLostEvents) {
	ProcessTable t;
	t.scan(proc.path());
	// the sub-agent 73 exited unseen; its tool 74 was re-parented to init
	std::filesystem::remove_all(proc / "73");
	add(74, 1, "node", sess, 230);
	// 72 exited and its pid was reused by a new agent under the tmux shell
	add(72, 91, "python3", sess, 900);
	// 81 exited, nothing else
	std::filesystem::remove_all(proc / "81");
	// a new process appeared under the agent
	add(75, 70, "git", sess, 950);
	t.scan(proc.path());
	EXPECT_EQ(t.find(73), nullptr);
	EXPECT_EQ(t.find(81), nullptr);
	ASSERT_NE(t.find(74), nullptr);
	EXPECT_TRUE(t.find(74)->parent_gone);
	EXPECT_EQ(t.find(74)->ppid, 73);
	EXPECT_EQ(t.tree_root(74), 70);
	EXPECT_EQ(t.find(72)->comm, "python3");
	EXPECT_EQ(t.tree_root(72), 72);
	EXPECT_EQ(t.tree_root(75), 70);
	EXPECT_EQ(t.tree_members(70), (std::vector<int>{70, 71, 74, 75}));
	EXPECT_EQ(t.tree_members(80), std::vector<int>{80});
	EXPECT_EQ(t.stats().scan_removed, 3u); // 73, 81, and the old 72
	EXPECT_EQ(t.stats().reused_pids, 1u);
}

TEST_F(FakeHost, ReparentingSeenOnlyInProcKeepsTheRoot) {
	ProcessTable t;
	t.scan(proc.path());
	// 73 still listed (a zombie, say) but 74 now reports init as its parent
	add(74, 1, "node", sess, 230);
	t.upsert(*read_proc(74, proc.path()));
	EXPECT_TRUE(t.find(74)->parent_gone);
	EXPECT_EQ(t.tree_root(74), 70);
	EXPECT_EQ(t.find(74)->anchor_root, 70);
	t.scan(proc.path());
	EXPECT_EQ(t.tree_root(74), 70);
	EXPECT_EQ(t.tree_members(70), (std::vector<int>{70, 71, 72, 73, 74}));
}

TEST_F(FakeHost, EventsContinueFromAScan) {
	ProcessTable t;
	t.scan(proc.path());
	const uint64_t start = 1000 * kTick + 12345;
	t.on_fork(73, 76, start);
	t.on_exec(76, "curl", "/usr/bin/curl", 1000, 0, sess, start);
	EXPECT_EQ(t.tree_root(76), 70);
	t.on_exit(70);
	EXPECT_EQ(t.tree_root(73), 70);
	EXPECT_EQ(t.tree_root(76), 70);
	// the next scan still lists 70 (its exit raced the listing): nothing moves
	t.scan(proc.path());
	EXPECT_EQ(t.tree_root(73), 70);
	EXPECT_EQ(t.find(76), nullptr); // 76 is not in the fake /proc: gone
}

// ---- the real /proc -----------------------------------------------------------------------------

TEST(LiveLineage, ScanFindsThisProcessAndAForkedChild) {
	ProcessTable t;
	t.scan();
	const auto* me = t.find(::getpid());
	ASSERT_NE(me, nullptr);
	auto info = read_proc(::getpid());
	ASSERT_TRUE(info.has_value());
	EXPECT_EQ(me->comm, info->comm);
	EXPECT_EQ(me->ppid, ::getppid());
	const int my_root = t.tree_root(::getpid());
	ASSERT_NE(my_root, 0);
	// the root is this process or one of its ancestors
	bool found = false;
	for (int p = ::getpid(), i = 0; p > 0 && i < 64; ++i) {
		if (p == my_root) {
			found = true;
			break;
		}
		const auto* e = t.find(p);
		if (!e) break;
		p = e->ppid;
	}
	EXPECT_TRUE(found) << "root " << my_root;
	EXPECT_EQ(t.find(2), nullptr) << "kernel threads are not tracked";

	// a child that execs `sleep`: same cgroup, an eligible parent -> our tree
	pid_t child = ::fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		::execlp("sleep", "sleep", "30", static_cast<char*>(nullptr));
		::_exit(127);
	}
	struct Reaper {
		pid_t pid;
		~Reaper() {
			::kill(pid, SIGKILL);
			::waitpid(pid, nullptr, 0);
		}
	} reaper{child};
	std::optional<ProcInfo> ci;
	for (int i = 0; i < 400; ++i) {
		ci = read_proc(child);
		if (ci && ci->comm == "sleep") break;
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
	ASSERT_TRUE(ci && ci->comm == "sleep");
	t.upsert(*ci);
	EXPECT_EQ(t.find(child)->ppid, ::getpid());
	EXPECT_EQ(t.tree_root(child), my_root);
}

} // namespace
} // namespace ab::process

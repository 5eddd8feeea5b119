#include "process/cgroup.h"
#include "process/procfs.h"

#include "test_util.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace ab::process {
namespace {

using test::data_path;
using test::TempDir;
using test::write_text;

uint64_t ino_of(const std::string& path) {
	struct stat st {};
	EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
	return st.st_ino;
}

std::string slurp(const std::string& path) {
	std::ifstream f(path, std::ios::binary);
	return std::string(std::istreambuf_iterator<char>(f), {});
}

// ---- mountinfo ---------------------------------------------------------------------------

TEST(Cgroup2Mount, HybridHostFindsUnified) {
	EXPECT_EQ(find_cgroup2_mount(data_path("mountinfo_hybrid")), "/sys/fs/cgroup/unified");
}

TEST(Cgroup2Mount, UnifiedHostWithOptionalFields) {
	EXPECT_EQ(find_cgroup2_mount(data_path("mountinfo_unified")), "/sys/fs/cgroup");
}

TEST(Cgroup2Mount, OctalEscapesAreDecoded) {
	EXPECT_EQ(find_cgroup2_mount(data_path("mountinfo_escaped")), "/run/my cgroup\tv2\\x");
}

TEST(Cgroup2Mount, NoneWhenOnlyV1OrSourceNamedCgroup2) {
	EXPECT_EQ(find_cgroup2_mount(data_path("mountinfo_v1_only")), std::nullopt);
}

TEST(Cgroup2Mount, PrefersTheMountOfTheHierarchyRoot) {
	EXPECT_EQ(find_cgroup2_mount(data_path("mountinfo_subtree_first")), "/sys/fs/cgroup");
}

TEST(Cgroup2Mount, MissingFile) { EXPECT_EQ(find_cgroup2_mount(data_path("does_not_exist")), std::nullopt); }

TEST(Cgroup2Mount, UnescapeLeavesNonEscapesAlone) {
	EXPECT_EQ(unescape_mountinfo("a\\040b"), "a b");
	EXPECT_EQ(unescape_mountinfo("a\\04"), "a\\04");
	EXPECT_EQ(unescape_mountinfo("a\\98x"), "a\\98x");
	EXPECT_EQ(unescape_mountinfo("\\134\\134"), "\\\\");
	EXPECT_EQ(unescape_mountinfo("end\\"), "end\\");
}

TEST(Cgroup2Mount, LiveHostHasOne) {
	auto m = find_cgroup2_mount();
	if (!m) AB_SKIP_OR_FAIL("no cgroup2 mount on this host");
	EXPECT_TRUE(std::filesystem::exists(*m + "/cgroup.procs")) << *m;
}

// ---- /proc/<pid>/cgroup --------------------------------------------------------------------

TEST(CgroupPath, ParsesV2LineAmongV1Lines) {
	EXPECT_EQ(parse_cgroup_v2_line("12:pids:/user.slice\n1:name=systemd:/x\n0::/agents/a\n"), "/agents/a");
	EXPECT_EQ(parse_cgroup_v2_line("0::/\n"), "/");
	EXPECT_EQ(parse_cgroup_v2_line("0::/gone (deleted)\n"), "/gone");
	EXPECT_EQ(parse_cgroup_v2_line("0::/no-newline"), "/no-newline");
	EXPECT_EQ(parse_cgroup_v2_line("10::/not-v2\n"), std::nullopt);
	EXPECT_EQ(parse_cgroup_v2_line("4:memory:/x\n"), std::nullopt);
	EXPECT_EQ(parse_cgroup_v2_line(""), std::nullopt);
}

TEST(CgroupPath, ReadsFromAFakeProcTree) {
	TempDir proc;
	test::FakeProc p;
	p.pid = 42;
	p.cgroup = "/system.slice/agent.service";
	p.hybrid = true;
	test::write_fake_proc(proc.path(), p);
	EXPECT_EQ(read_cgroup_path(42, proc.path()), "/system.slice/agent.service");
	EXPECT_EQ(read_cgroup_path(43, proc.path()), std::nullopt);
	EXPECT_EQ(read_cgroup_path(0, proc.path()), std::nullopt);
}

TEST(CgroupPath, LiveSelfIsAnExistingCgroup) {
	auto m = find_cgroup2_mount();
	if (!m) AB_SKIP_OR_FAIL("no cgroup2 mount on this host");
	auto rel = read_cgroup_path(::getpid());
	ASSERT_TRUE(rel.has_value());
	EXPECT_TRUE(valid_cgroup_path(*rel)) << *rel;
	EXPECT_TRUE(cgroup_id_of(*m, *rel).has_value()) << *m << *rel;
	// A thread of this process reads the same.
	EXPECT_EQ(read_cgroup_path(::getpid(), "/proc"), rel);
}

TEST(CgroupPath, Validation) {
	EXPECT_TRUE(valid_cgroup_path("/"));
	EXPECT_TRUE(valid_cgroup_path("/agents/a"));
	EXPECT_TRUE(valid_cgroup_path("/a b/c.scope"));
	EXPECT_FALSE(valid_cgroup_path(""));
	EXPECT_FALSE(valid_cgroup_path("agents"));
	EXPECT_FALSE(valid_cgroup_path("/agents/"));
	EXPECT_FALSE(valid_cgroup_path("//a"));
	EXPECT_FALSE(valid_cgroup_path("/a/../b"));
	EXPECT_FALSE(valid_cgroup_path("/.."));
	EXPECT_FALSE(valid_cgroup_path("/./a"));
	EXPECT_FALSE(valid_cgroup_path(std::string_view("/a\0b", 4)));
	EXPECT_TRUE(valid_cgroup_path("/..a/b.."));
}

TEST(CgroupPath, AbsPath) {
	EXPECT_EQ(cgroup_abs_path("/sys/fs/cgroup", "/"), "/sys/fs/cgroup");
	EXPECT_EQ(cgroup_abs_path("/sys/fs/cgroup", "/a/b"), "/sys/fs/cgroup/a/b");
	EXPECT_EQ(cgroup_abs_path("/sys/fs/cgroup/", "/a"), "/sys/fs/cgroup/a");
}

TEST(SystemdUnit, LastServiceOrScopeElement) {
	EXPECT_EQ(systemd_unit_of("/system.slice/foo.service"), "foo.service");
	EXPECT_EQ(systemd_unit_of("/system.slice/foo.service/worker"), "foo.service");
	EXPECT_EQ(systemd_unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope"),
	          "run-r1.scope");
	EXPECT_EQ(systemd_unit_of("/user.slice/user-1000.slice/session-3.scope"), "session-3.scope");
	EXPECT_EQ(systemd_unit_of("/system.slice"), std::nullopt);
	EXPECT_EQ(systemd_unit_of("/agents/a"), std::nullopt);
	EXPECT_EQ(systemd_unit_of("/"), std::nullopt);
	EXPECT_EQ(systemd_unit_of(""), std::nullopt);
	EXPECT_EQ(systemd_unit_of("/.service"), std::nullopt); // a bare suffix is no unit name
}

// ---- resolver on a fake tree -------------------------------------------------------------

struct FakeCgroupTree : ::testing::Test {
	TempDir dir;
	void SetUp() override {
		for (const char* d : {"a", "a/b", "a/b/deep", "c"}) std::filesystem::create_directories(dir / d);
	}
	uint64_t id(const std::string& rel) { return ino_of(cgroup_abs_path(dir.path(), rel)); }
};

TEST_F(FakeCgroupTree, PathForIdRescansOnMissThenHitsCache) {
	CgroupResolver r(dir.path());
	EXPECT_EQ(r.path_for_id(id("/a/b")), "/a/b");
	EXPECT_EQ(r.stats().rescans, 1u);
	EXPECT_EQ(r.cached(), 5u); // "/", a, a/b, a/b/deep, c
	EXPECT_EQ(r.path_for_id(id("/c")), "/c");
	EXPECT_EQ(r.path_for_id(id("/")), "/");
	EXPECT_EQ(r.path_for_id(id("/a/b/deep")), "/a/b/deep");
	EXPECT_EQ(r.stats().rescans, 1u);
	EXPECT_EQ(r.stats().hits, 3u);
}

TEST_F(FakeCgroupTree, NewCgroupFoundByRescan) {
	CgroupResolver r(dir.path());
	r.rescan();
	std::filesystem::create_directories(dir / "a/new");
	EXPECT_EQ(r.path_for_id(id("/a/new")), "/a/new");
	EXPECT_EQ(r.stats().rescans, 2u);
}

TEST_F(FakeCgroupTree, UnknownIdIsNegativelyCached) {
	CgroupResolver::Options o;
	o.negative_ttl = std::chrono::hours(1);
	CgroupResolver r(dir.path(), o);
	const uint64_t bogus = 0x7fffffffffffull;
	EXPECT_EQ(r.path_for_id(bogus), std::nullopt);
	EXPECT_EQ(r.path_for_id(bogus), std::nullopt);
	EXPECT_EQ(r.stats().rescans, 1u);
	EXPECT_EQ(r.stats().negative_hits, 1u);
	// id_for_path of a real cgroup clears nothing it should not, and 0 is never an id.
	EXPECT_EQ(r.path_for_id(0), std::nullopt);
	EXPECT_EQ(r.stats().rescans, 1u);
}

TEST_F(FakeCgroupTree, ZeroTtlRescansEveryMiss) {
	CgroupResolver::Options o;
	o.negative_ttl = std::chrono::milliseconds(0);
	CgroupResolver r(dir.path(), o);
	EXPECT_EQ(r.path_for_id(0x7ffffffffffeull), std::nullopt);
	EXPECT_EQ(r.path_for_id(0x7ffffffffffeull), std::nullopt);
	EXPECT_EQ(r.stats().rescans, 2u);
}

// Harden M4: a storm of misses (new or vanished cgroups at every exec) rescans a bounded
// number of times; the rest are counted as deferred. Before: one full walk per distinct id.
TEST_F(FakeCgroupTree, RescansOnMissAreRateLimited) {
	CgroupResolver::Options o;
	o.rescan_burst = 4;
	o.rescan_refill = std::chrono::hours(1);
	CgroupResolver r(dir.path(), o);
	for (uint64_t i = 0; i < 1000; i++) EXPECT_EQ(r.path_for_id(0x7fff00000000ull + i), std::nullopt);
	EXPECT_EQ(r.stats().rescans, 4u);
	EXPECT_EQ(r.stats().rescans_deferred, 996u);
	// known ids are still served from the cache
	EXPECT_EQ(r.path_for_id(id("/a/b")), "/a/b");
	CgroupResolver::Options fast;
	fast.rescan_burst = 1;
	fast.rescan_refill = std::chrono::milliseconds(1);
	CgroupResolver f(dir.path(), fast);
	EXPECT_EQ(f.path_for_id(0x7ffffffffff0ull), std::nullopt);
	std::this_thread::sleep_for(std::chrono::milliseconds(5));  // refilled: a new cgroup is found
	std::filesystem::create_directories(dir / "later");
	EXPECT_EQ(f.path_for_id(id("/later")), "/later");
}

TEST_F(FakeCgroupTree, IdForPathStatsAndCaches) {
	CgroupResolver r(dir.path());
	EXPECT_EQ(r.id_for_path("/a/b"), id("/a/b"));
	EXPECT_EQ(r.id_for_path("/"), id("/"));
	EXPECT_EQ(r.id_for_path("/nope"), std::nullopt);
	EXPECT_EQ(r.id_for_path("/a/../c"), std::nullopt);
	EXPECT_EQ(r.id_for_path("a"), std::nullopt);
	// cached by id_for_path: no rescan needed
	EXPECT_EQ(r.path_for_id(id("/a/b")), "/a/b");
	EXPECT_EQ(r.stats().rescans, 0u);
	// forget drops it: the next lookup rescans
	r.forget(id("/a/b"));
	EXPECT_EQ(r.path_for_id(id("/a/b")), "/a/b");
	EXPECT_EQ(r.stats().rescans, 1u);
}

TEST_F(FakeCgroupTree, RescanBoundedByDirsAndDepth) {
	CgroupResolver::Options o;
	o.max_scan_dirs = 3;
	CgroupResolver r(dir.path(), o);
	EXPECT_EQ(r.rescan(), 3u);
	EXPECT_EQ(r.stats().rescans_truncated, 1u);

	CgroupResolver::Options d;
	d.max_scan_depth = 1;
	CgroupResolver shallow(dir.path(), d);
	EXPECT_EQ(shallow.path_for_id(id("/a")), "/a");
	EXPECT_EQ(shallow.path_for_id(id("/a/b")), std::nullopt);
	EXPECT_GE(shallow.stats().rescans_truncated, 1u);
}

TEST_F(FakeCgroupTree, CacheCapResets) {
	CgroupResolver::Options o;
	o.max_cached = 2;
	CgroupResolver r(dir.path(), o);
	r.id_for_path("/a");
	r.id_for_path("/c");
	EXPECT_EQ(r.cached(), 2u);
	r.id_for_path("/a/b");
	EXPECT_LE(r.cached(), 2u);
	EXPECT_EQ(r.stats().cache_resets, 1u);
}

TEST_F(FakeCgroupTree, SymlinksAreNotFollowed) {
	TempDir outside;
	std::filesystem::create_directories(outside / "target");
	std::filesystem::create_directory_symlink(outside / "target", dir / "link");
	CgroupResolver r(dir.path());
	EXPECT_EQ(r.path_for_id(ino_of(outside / "target")), std::nullopt);
	EXPECT_EQ(r.cached(), 5u);
}

// ---- side effects on a fake tree ---------------------------------------------------------

TEST_F(FakeCgroupTree, FreezeThawKillWriteTheControlFiles) {
	write_text(dir / "a/cgroup.freeze", "0\n");
	write_text(dir / "a/cgroup.kill", "");
	auto r = cgroup_freeze(dir.path(), "/a", true);
	EXPECT_TRUE(r);
	EXPECT_EQ(r.err, 0);
	EXPECT_EQ(slurp(dir / "a/cgroup.freeze").substr(0, 1), "1");
	EXPECT_TRUE(cgroup_freeze(dir.path(), "/a", false));
	EXPECT_EQ(slurp(dir / "a/cgroup.freeze").substr(0, 1), "0");
	EXPECT_TRUE(cgroup_kill(dir.path(), "/a"));
	EXPECT_EQ(slurp(dir / "a/cgroup.kill"), "1");
}

TEST_F(FakeCgroupTree, SideEffectErrorsAreNegativeErrno) {
	EXPECT_EQ(cgroup_freeze(dir.path(), "/missing", true).err, -ENOENT);
	EXPECT_EQ(cgroup_freeze(dir.path(), "/c", true).err, -ENOENT); // no cgroup.freeze file
	EXPECT_EQ(cgroup_kill(dir.path(), "/c").err, -ENOENT);
	EXPECT_EQ(cgroup_freeze(dir.path(), "/", true).err, -EINVAL);
	EXPECT_EQ(cgroup_kill(dir.path(), "/").err, -EINVAL);
	EXPECT_EQ(cgroup_kill(dir.path(), "/a/../..").err, -EINVAL);
	EXPECT_EQ(cgroup_kill(dir.path(), "relative").err, -EINVAL);
	EXPECT_FALSE(cgroup_kill(dir.path(), "/"));
	EXPECT_EQ(cgroup_create(dir.path(), "/a").err, -EEXIST);
	EXPECT_TRUE(cgroup_create(dir.path(), "/a/x"));
	EXPECT_TRUE(cgroup_remove(dir.path(), "/a/x"));
	EXPECT_EQ(cgroup_remove(dir.path(), "/a/x").err, -ENOENT);
	EXPECT_EQ(cgroup_attach(dir.path(), "/a", 0).err, -EINVAL);
}

TEST_F(FakeCgroupTree, ProcsAndEvents) {
	write_text(dir / "a/cgroup.procs", "12\n34\n");
	write_text(dir / "a/b/cgroup.procs", "56\n");
	write_text(dir / "a/b/deep/cgroup.procs", "");
	write_text(dir / "a/cgroup.events", "populated 1\nfrozen 1\n");
	write_text(dir / "a/b/cgroup.events", "populated 0\nfrozen 0\n");
	int err = 1;
	EXPECT_EQ(cgroup_procs(dir.path(), "/a", &err), (std::vector<int>{12, 34}));
	EXPECT_EQ(err, 0);
	EXPECT_TRUE(cgroup_procs(dir.path(), "/nope", &err).empty());
	EXPECT_EQ(err, -ENOENT);
	EXPECT_TRUE(cgroup_procs(dir.path(), "/../x", &err).empty());
	EXPECT_EQ(err, -EINVAL);
	auto all = cgroup_procs_recursive(dir.path(), "/a", &err);
	std::sort(all.begin(), all.end());
	EXPECT_EQ(all, (std::vector<int>{12, 34, 56}));
	EXPECT_EQ(err, 0);
	EXPECT_TRUE(cgroup_procs_recursive(dir.path(), "/nope", &err).empty());
	EXPECT_EQ(err, -ENOENT);

	EXPECT_EQ(is_frozen(dir.path(), "/a"), true);
	EXPECT_EQ(is_populated(dir.path(), "/a"), true);
	EXPECT_EQ(is_frozen(dir.path(), "/a/b"), false);
	EXPECT_EQ(is_populated(dir.path(), "/a/b"), false);
	EXPECT_EQ(is_frozen(dir.path(), "/c"), std::nullopt);
	EXPECT_TRUE(wait_frozen(dir.path(), "/a", true, std::chrono::milliseconds(0)));
	EXPECT_FALSE(wait_frozen(dir.path(), "/a/b", true, std::chrono::milliseconds(20)));
}

// ---- the real cgroup v2 tree (root only) -------------------------------------------------

// A child cgroup of the real v2 mount with one forked child process in it. The destructor
// always cleans up: thaw, SIGKILL and reap the child, remove the cgroup.
struct LiveCgroup {
	std::string mount, rel;
	pid_t child = -1;
	volatile uint64_t* counter = nullptr;

	~LiveCgroup() {
		if (!rel.empty()) (void)cgroup_freeze(mount, rel, false);
		if (child > 0) {
			::kill(child, SIGKILL);
			int st = 0;
			::waitpid(child, &st, 0);
		}
		if (!rel.empty()) {
			for (int i = 0; i < 200; ++i) {
				auto r = cgroup_remove(mount, rel);
				if (r || r.err == -ENOENT) break;
				std::this_thread::sleep_for(std::chrono::milliseconds(5));
			}
		}
		if (counter) ::munmap(const_cast<uint64_t*>(counter), sizeof(uint64_t));
	}
};

TEST(LiveCgroup, CreateResolveFreezeThawKillRemove) {
	if (::geteuid() != 0) AB_SKIP_OR_FAIL("needs root to create cgroups");
	auto mount = find_cgroup2_mount();
	if (!mount) AB_SKIP_OR_FAIL("no cgroup2 mount");

	LiveCgroup g;
	g.mount = *mount;
	const std::string rel = "/agentbrake-unit-process-" + std::to_string(::getpid());
	auto made = cgroup_create(g.mount, rel);
	ASSERT_TRUE(made) << "mkdir " << rel << ": " << -made.err;
	g.rel = rel;
	if (!std::filesystem::exists(cgroup_abs_path(g.mount, rel) + "/cgroup.freeze"))
		AB_SKIP_OR_FAIL("kernel without cgroup.freeze");

	// id <-> path, through a fresh resolver (cold cache: a real rescan of the host tree)
	CgroupResolver fresh(g.mount);
	auto id = cgroup_id_of(g.mount, rel);
	ASSERT_TRUE(id.has_value());
	EXPECT_EQ(*id, ino_of(cgroup_abs_path(g.mount, rel)));
	EXPECT_EQ(fresh.path_for_id(*id), rel);
	EXPECT_EQ(fresh.stats().rescans, 1u);
	EXPECT_EQ(fresh.path_for_id(*id), rel);
	EXPECT_EQ(fresh.stats().rescans, 1u);
	CgroupResolver other(g.mount);
	EXPECT_EQ(other.id_for_path(rel), id);

	// a child that counts as fast as it can in shared memory
	void* mem = ::mmap(nullptr, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(mem, MAP_FAILED);
	g.counter = static_cast<volatile uint64_t*>(mem);
	*g.counter = 0;
	g.child = ::fork();
	ASSERT_GE(g.child, 0);
	if (g.child == 0) {
		for (;;) {
			auto* c = static_cast<volatile uint64_t*>(mem);
			*c = *c + 1;
			::usleep(200);
		}
	}
	auto attached = cgroup_attach(g.mount, rel, g.child);
	ASSERT_TRUE(attached) << -attached.err;
	EXPECT_EQ(read_cgroup_path(g.child), rel);
	EXPECT_EQ(cgroup_procs(g.mount, rel), std::vector<int>{g.child});
	EXPECT_EQ(is_populated(g.mount, rel), true);
	EXPECT_EQ(is_frozen(g.mount, rel), false);

	// the child is running
	uint64_t before = *g.counter;
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	EXPECT_GT(*g.counter, before);

	// freeze: cgroup.events reports it and the child stops counting
	ASSERT_TRUE(cgroup_freeze(g.mount, rel, true));
	ASSERT_TRUE(wait_frozen(g.mount, rel, true, std::chrono::seconds(5)));
	EXPECT_EQ(is_frozen(g.mount, rel), true);
	uint64_t frozen_at = *g.counter;
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(*g.counter, frozen_at);
	// a frozen process is not "stopped" for its parent: no WUNTRACED report
	int st = 0;
	EXPECT_EQ(::waitpid(g.child, &st, WNOHANG | WUNTRACED), 0);

	// thaw: it counts again
	ASSERT_TRUE(cgroup_freeze(g.mount, rel, false));
	ASSERT_TRUE(wait_frozen(g.mount, rel, false, std::chrono::seconds(5)));
	uint64_t thawed_at = *g.counter;
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	EXPECT_GT(*g.counter, thawed_at);

	// kill: SIGKILL for every member
	ASSERT_TRUE(cgroup_kill(g.mount, rel));
	ASSERT_EQ(::waitpid(g.child, &st, 0), g.child);
	EXPECT_TRUE(WIFSIGNALED(st));
	EXPECT_EQ(WTERMSIG(st), SIGKILL);
	g.child = -1;

	// empty now: rmdir works, and the id no longer resolves by path
	bool removed = false;
	for (int i = 0; i < 200 && !removed; ++i) {
		removed = static_cast<bool>(cgroup_remove(g.mount, rel));
		if (!removed) std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
	EXPECT_TRUE(removed);
	g.rel.clear();
	EXPECT_EQ(cgroup_id_of(g.mount, rel), std::nullopt);
	fresh.forget(*id);
	CgroupResolver after(g.mount);
	EXPECT_EQ(after.path_for_id(*id), std::nullopt);
}

// The fallback for kernels without cgroup.kill: a member that forked a grandchild into a
// child cgroup; both die, nothing is left frozen.
TEST(LiveCgroup, KillBySignalReachesDescendantCgroups) {
	if (::geteuid() != 0) AB_SKIP_OR_FAIL("needs root to create cgroups");
	auto mount = find_cgroup2_mount();
	if (!mount) AB_SKIP_OR_FAIL("no cgroup2 mount");
	LiveCgroup g;
	g.mount = *mount;
	const std::string rel = "/agentbrake-unit-process-kill-" + std::to_string(::getpid());
	ASSERT_TRUE(cgroup_create(g.mount, rel));
	g.rel = rel;
	const std::string sub = rel + "/sub";
	ASSERT_TRUE(cgroup_create(g.mount, sub));
	struct SubGuard {
		std::string mount, rel;
		~SubGuard() {
			for (int i = 0; i < 200; ++i) {
				auto r = cgroup_remove(mount, rel);
				if (r || r.err == -ENOENT) break;
				std::this_thread::sleep_for(std::chrono::milliseconds(5));
			}
		}
	};
	// declared after g: destroyed first, before g removes the parent cgroup
	SubGuard sg{g.mount, sub};

	int ready[2];
	ASSERT_EQ(::pipe(ready), 0);
	g.child = ::fork();
	ASSERT_GE(g.child, 0);
	if (g.child == 0) {
		::close(ready[0]);
		pid_t gc = ::fork();
		if (gc == 0) {
			for (;;) ::pause();
		}
		if (::write(ready[1], &gc, sizeof gc) != sizeof gc) ::_exit(3);
		for (;;) ::pause();
	}
	::close(ready[1]);
	pid_t grandchild = 0;
	ASSERT_EQ(::read(ready[0], &grandchild, sizeof grandchild), static_cast<ssize_t>(sizeof grandchild));
	::close(ready[0]);
	ASSERT_TRUE(cgroup_attach(g.mount, rel, g.child));
	ASSERT_TRUE(cgroup_attach(g.mount, sub, grandchild));
	auto members = cgroup_procs_recursive(g.mount, rel);
	std::sort(members.begin(), members.end());
	auto want = std::vector<int>{g.child, grandchild};
	std::sort(want.begin(), want.end());
	EXPECT_EQ(members, want);

	// reap our child as soon as it dies (its zombie would otherwise stay a member)
	std::atomic<int> status{-1};
	std::thread reaper([&] {
		int st = 0;
		if (::waitpid(g.child, &st, 0) == g.child) status = st;
	});
	auto r = cgroup_kill_by_signal(g.mount, rel, std::chrono::seconds(5));
	reaper.join();
	EXPECT_TRUE(r) << r.err;
	ASSERT_NE(status.load(), -1);
	EXPECT_TRUE(WIFSIGNALED(status.load()));
	EXPECT_EQ(WTERMSIG(status.load()), SIGKILL);
	g.child = -1;
	EXPECT_TRUE(cgroup_procs_recursive(g.mount, rel).empty());
	EXPECT_EQ(is_frozen(g.mount, rel), false);
	// the grandchild is dead: gone, or a zombie until init reaps it
	auto gp = read_proc(grandchild);
	EXPECT_TRUE(!gp || gp->state == 'Z' || gp->state == 'X') << gp->state;
	EXPECT_EQ(cgroup_kill_by_signal(g.mount, "/", std::chrono::seconds(1)).err, -EINVAL);
	EXPECT_EQ(cgroup_kill_by_signal(g.mount, rel + "/nope", std::chrono::seconds(1)).err, -ENOENT);
}

TEST(LiveCgroup, RecursiveProcsAndRootIsRefused) {
	auto mount = find_cgroup2_mount();
	if (!mount) AB_SKIP_OR_FAIL("no cgroup2 mount");
	EXPECT_EQ(cgroup_kill(*mount, "/").err, -EINVAL);
	EXPECT_EQ(cgroup_freeze(*mount, "/", true).err, -EINVAL);
	// the whole host, recursively, contains this process
	auto all = cgroup_procs_recursive(*mount, "/");
	EXPECT_NE(std::find(all.begin(), all.end(), ::getpid()), all.end());
}

} // namespace
} // namespace ab::process

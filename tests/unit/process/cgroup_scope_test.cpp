// --cgroup-scope path mapping (process/cgroup_scope.h): cgroups named relative to the scope,
// processes outside it invisible, no relative path that leaves the scope.
#include "process/cgroup_scope.h"

#include "process/cgroup.h"
#include "process/procfs.h"

#include "test_util.h"

#include <gtest/gtest.h>

#include <unistd.h>

namespace ab::process {
namespace {

using test::TempDir;
using test::write_text;

TEST(CgroupScope, HostPathsRelativeToTheScope) {
	EXPECT_EQ(cgroup_path_in_scope("/S", "/S/agents/a"), "/agents/a");
	EXPECT_EQ(cgroup_path_in_scope("/S", "/S"), "/");
	EXPECT_EQ(cgroup_path_in_scope("/S/T", "/S/T/x"), "/x");
	EXPECT_EQ(cgroup_path_in_scope("/", "/S/agents/a"), "/S/agents/a");
	EXPECT_EQ(cgroup_path_in_scope("/", "/"), "/");
}

TEST(CgroupScope, PathsOutsideTheScopeAreNotInIt) {
	EXPECT_FALSE(cgroup_path_in_scope("/S", "/"));
	EXPECT_FALSE(cgroup_path_in_scope("/S", "/T/x"));
	EXPECT_FALSE(cgroup_path_in_scope("/S", "/ST"));      // a sibling sharing the prefix
	EXPECT_FALSE(cgroup_path_in_scope("/S", "/ST/agents"));
	EXPECT_FALSE(cgroup_path_in_scope("/S/T", "/S"));     // the scope's parent
	EXPECT_FALSE(cgroup_path_in_scope("/S", "/S/../T"));  // malformed input is not in it
	EXPECT_FALSE(cgroup_path_in_scope("/S", "S/x"));
}

TEST(CgroupScope, RelativePathsMapIntoTheScope) {
	EXPECT_EQ(cgroup_host_path("/S", "/agents/a"), "/S/agents/a");
	EXPECT_EQ(cgroup_host_path("/S", "/"), "/S");
	EXPECT_EQ(cgroup_host_path("/", "/agents/a"), "/agents/a");
}

TEST(CgroupScope, NoRelativePathEscapesTheScope) {
	for (const char* bad : {"/../x", "/..", "/a/../../x", "/./x", "..", "x", "", "/a//b", "/a/"})
		EXPECT_FALSE(cgroup_host_path("/S", bad)) << bad;
	// and the cgroupfs helpers refuse the same spellings, so `pause /../x` acts on nothing
	EXPECT_FALSE(valid_cgroup_path("/../x"));
}

TEST(CgroupScope, DepthIsTheCgroupLevel) {
	EXPECT_EQ(cgroup_path_depth("/"), 0u);
	EXPECT_EQ(cgroup_path_depth("/S"), 1u);
	EXPECT_EQ(cgroup_path_depth("/S/agents/a"), 3u);
}

TEST(CgroupScope, OpenRefusesWhatIsNotACgroupDirectory) {
	TempDir d;
	write_text(d / "file", "x");
	std::string why;
	EXPECT_FALSE(open_cgroup_scope(d.path(), "/missing", &why));
	EXPECT_NE(why.find("No such file"), std::string::npos) << why;
	EXPECT_FALSE(open_cgroup_scope(d.path(), "/file", &why));
	EXPECT_NE(why.find("not a directory"), std::string::npos) << why;
	std::filesystem::create_directories(d / "plain");
	EXPECT_FALSE(open_cgroup_scope(d.path(), "/plain", &why));  // a tmpfs directory, not cgroupfs
	EXPECT_NE(why.find("not on a cgroup v2 file system"), std::string::npos) << why;
	EXPECT_FALSE(open_cgroup_scope(d.path(), "/../etc", &why));
	EXPECT_NE(why.find(". or .."), std::string::npos) << why;
}

TEST(CgroupScope, OpenAcceptsTheRealHierarchy) {
	auto mount = find_cgroup2_mount();
	if (!mount) GTEST_SKIP() << "no cgroup v2 mount";
	auto self = read_host_cgroup_path(getpid());
	ASSERT_TRUE(self);
	std::string why;
	auto root = open_cgroup_scope(*mount, *self, &why);
	ASSERT_TRUE(root) << why;
	EXPECT_EQ(root->dir, cgroup_abs_path(*mount, *self));
	EXPECT_EQ(root->level, cgroup_path_depth(*self));
	EXPECT_NE(root->id, 0u);
}

// The process-wide scope changes what /proc reads say: relative names inside, absent outside.
TEST(CgroupScope, ProcReadsHonourTheScope) {
	TempDir proc;
	test::write_fake_proc(proc.path(), {.pid = 10, .ppid = 1, .comm = "in", .cgroup = "/S/agents/a"});
	test::write_fake_proc(proc.path(), {.pid = 20, .ppid = 1, .comm = "out", .cgroup = "/T/agents/a"});

	ASSERT_TRUE(read_proc(20, proc.path()));  // whole host: both visible, host names
	EXPECT_EQ(read_cgroup_path(10, proc.path()), "/S/agents/a");

	set_cgroup_scope("/S");
	EXPECT_EQ(read_cgroup_path(10, proc.path()), "/agents/a");
	EXPECT_FALSE(read_cgroup_path(20, proc.path()));
	EXPECT_EQ(read_host_cgroup_path(20, proc.path()), "/T/agents/a");
	auto in = read_proc(10, proc.path());
	ASSERT_TRUE(in);
	EXPECT_EQ(in->cgroup, "/agents/a");
	EXPECT_FALSE(read_proc(20, proc.path()));  // another scope's process does not exist here
	EXPECT_TRUE(pid_in_cgroup_scope(10, proc.path()));
	EXPECT_FALSE(pid_in_cgroup_scope(20, proc.path()));
	EXPECT_FALSE(pid_in_cgroup_scope(30, proc.path()));  // gone
	set_cgroup_scope("/");
	EXPECT_TRUE(pid_in_cgroup_scope(20, proc.path()));
}

} // namespace
} // namespace ab::process

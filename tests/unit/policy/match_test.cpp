// Globs, process matching and bucket selection.
#include <gtest/gtest.h>

#include "policy/policy.h"

using namespace ab::policy;

TEST(Glob, StarStaysWithinOneLevel) {
  EXPECT_TRUE(glob_match_cgroup("/agents/*", "/agents/a"));
  EXPECT_TRUE(glob_match_cgroup("/agents/*", "/agents/research-1"));
  EXPECT_FALSE(glob_match_cgroup("/agents/*", "/agents/a/b"));
  EXPECT_FALSE(glob_match_cgroup("/agents/*", "/agents"));
  EXPECT_FALSE(glob_match_cgroup("/agents/*", "/other/a"));
  EXPECT_TRUE(glob_match_cgroup("/agents/r*-?", "/agents/research-1"));
  EXPECT_FALSE(glob_match_cgroup("/agents/r*-?", "/agents/research-12"));
  EXPECT_TRUE(glob_match_cgroup("/*/worker", "/team/worker"));
  EXPECT_FALSE(glob_match_cgroup("/*/worker", "/a/b/worker"));
}

TEST(Glob, DoubleStarCrossesLevels) {
  EXPECT_TRUE(glob_match_cgroup("/agents/**", "/agents/a"));
  EXPECT_TRUE(glob_match_cgroup("/agents/**", "/agents/a/b/c"));
  EXPECT_TRUE(glob_match_cgroup("/agents/**", "/agents"));  // zero levels
  EXPECT_FALSE(glob_match_cgroup("/agents/**", "/agentsX/a"));
  EXPECT_TRUE(glob_match_cgroup("/**/job-*", "/job-1"));
  EXPECT_TRUE(glob_match_cgroup("/**/job-*", "/x/y/job-1"));
  EXPECT_FALSE(glob_match_cgroup("/**/job-*", "/x/y/job-1/sub"));
  EXPECT_TRUE(glob_match_cgroup("/user.slice/**/claude*.scope", "/user.slice/user-1000.slice/claude-42.scope"));
  EXPECT_TRUE(glob_match_cgroup("/a/**/b/**/c", "/a/x/b/y/z/c"));
  EXPECT_FALSE(glob_match_cgroup("/a/**/b/**/c", "/a/x/y/z/c"));
  EXPECT_TRUE(glob_match_cgroup("/**", "/"));
  EXPECT_TRUE(glob_match_cgroup("/**", "/anything/at/all"));
}

TEST(Glob, LiteralsClassesEscapesAndSlashes) {
  EXPECT_TRUE(glob_match_cgroup("/agents", "/agents"));
  EXPECT_TRUE(glob_match_cgroup("/agents", "/agents/"));  // trailing slash ignored
  EXPECT_FALSE(glob_match_cgroup("/agents", "/agents/a"));
  EXPECT_TRUE(glob_match_cgroup("/", "/"));
  EXPECT_FALSE(glob_match_cgroup("/", "/a"));
  EXPECT_TRUE(glob_match_cgroup("/agents/[ab]", "/agents/b"));
  EXPECT_FALSE(glob_match_cgroup("/agents/[ab]", "/agents/c"));
  EXPECT_TRUE(glob_match_cgroup("/agents/[!ab]", "/agents/c"));
  EXPECT_TRUE(glob_match_cgroup("/agents/[a-c]x", "/agents/bx"));
  EXPECT_TRUE(glob_match_cgroup("/agents/a\\*", "/agents/a*"));
  EXPECT_FALSE(glob_match_cgroup("/agents/a\\*", "/agents/ab"));
  EXPECT_FALSE(glob_match_cgroup("agents/*", "/agents/a"));  // patterns are absolute
  EXPECT_FALSE(glob_match_cgroup("/agents/*", "agents/a"));
  EXPECT_TRUE(glob_match_name("python3*", "python3.11"));
  EXPECT_TRUE(glob_match_name("*", ""));
  EXPECT_FALSE(glob_match_name("node", "nodejs"));
  EXPECT_TRUE(glob_match_name("*.service", "agent@1.service"));
}

TEST(Glob, Errors) {
  EXPECT_EQ(glob_error("/agents/*", true), std::nullopt);
  EXPECT_EQ(glob_error("/agents/**/x", true), std::nullopt);
  EXPECT_EQ(glob_error("/", true), std::nullopt);
  EXPECT_EQ(glob_error("", true), "empty pattern");
  EXPECT_EQ(glob_error("agents", true), "a cgroup pattern must start with '/'");
  EXPECT_EQ(glob_error("/a//b", true), "empty path component ('//')");
  EXPECT_EQ(glob_error("/a**", true), "'**' must be a whole path component (e.g. /a/**/b)");
  EXPECT_EQ(glob_error("/a/../b", true), "'.' and '..' are not allowed in a cgroup pattern");
  EXPECT_EQ(glob_error("/a/[bc", true), "unclosed '['");
  EXPECT_EQ(glob_error("py[", false), "unclosed '['");
  EXPECT_EQ(glob_error("py\\", false), "trailing backslash");
  EXPECT_EQ(glob_error("agents", false), std::nullopt);  // names need no leading '/'
}

TEST(Match, EmptyMatchSelectsEveryProcess) {
  Match m;
  EXPECT_TRUE(m.empty());
  EXPECT_TRUE(matches(m, ProcessFacts{"/x", "", "/bin/sh", "sh", 0}));
  EXPECT_TRUE(matches(m, ProcessFacts{}));
}

TEST(Match, CgroupSelectsTheCgroupOrAnyAncestor) {
  Match m;
  m.cgroup = "/agents";
  EXPECT_TRUE(matches(m, {"/agents", "", "", "", 0}));
  EXPECT_TRUE(matches(m, {"/agents/a/b", "", "", "", 0}));  // an ancestor is selected
  EXPECT_FALSE(matches(m, {"/other", "", "", "", 0}));
  EXPECT_FALSE(matches(m, {"/agentsX", "", "", "", 0}));
  m.cgroup = "/agents/*";
  EXPECT_FALSE(matches(m, {"/agents", "", "", "", 0}));
  EXPECT_TRUE(matches(m, {"/agents/a", "", "", "", 0}));
  EXPECT_TRUE(matches(m, {"/agents/a/deep/er", "", "", "", 0}));
}

TEST(Match, AllGivenFieldsMustMatch) {
  Match m;
  m.cgroup = "/agents/**";
  m.unit = "agent@*.service";
  m.exe = "python3*";  // no '/': the basename
  m.comm = "python*";
  m.uid = 1000;
  ProcessFacts f{"/agents/a", "agent@7.service", "/usr/bin/python3.11", "python3", 1000};
  EXPECT_TRUE(matches(m, f));
  auto with = [&](auto change) {
    ProcessFacts g = f;
    change(g);
    return matches(m, g);
  };
  EXPECT_FALSE(with([](ProcessFacts& g) { g.cgroup = "/other"; }));
  EXPECT_FALSE(with([](ProcessFacts& g) { g.unit = "sshd.service"; }));
  EXPECT_FALSE(with([](ProcessFacts& g) { g.unit = ""; }));
  EXPECT_FALSE(with([](ProcessFacts& g) { g.exe = "/usr/bin/node"; }));
  EXPECT_FALSE(with([](ProcessFacts& g) { g.comm = "node"; }));
  EXPECT_FALSE(with([](ProcessFacts& g) { g.uid = 0; }));
}

TEST(Match, ExeWithSlashMatchesTheWholePath) {
  Match m;
  m.exe = "/usr/bin/*";
  EXPECT_TRUE(matches(m, {"/", "", "/usr/bin/node", "node", 0}));
  EXPECT_FALSE(matches(m, {"/", "", "/usr/local/bin/node", "node", 0}));
  EXPECT_FALSE(matches(m, {"/", "", "/usr/bin/x/node", "node", 0}));
  m.exe = "/opt/**/node";
  EXPECT_TRUE(matches(m, {"/", "", "/opt/node", "node", 0}));
  EXPECT_TRUE(matches(m, {"/", "", "/opt/nvm/v20/bin/node", "node", 0}));
  m.exe = "node";
  EXPECT_TRUE(matches(m, {"/", "", "/opt/nvm/v20/bin/node", "node", 0}));
}

TEST(Bucket, ShallowestSelectedCgroupOnThePath) {
  Match m;
  m.cgroup = "/agents/*";
  EXPECT_EQ(bucket_cgroup(m, "/agents/a/b"), "/agents/a");
  EXPECT_EQ(bucket_cgroup(m, "/agents/a"), "/agents/a");
  EXPECT_EQ(bucket_cgroup(m, "/agents/b/x/y"), "/agents/b");
  EXPECT_EQ(bucket_cgroup(m, "/agents"), std::nullopt);
  EXPECT_EQ(bucket_cgroup(m, "/other/a"), std::nullopt);

  m.cgroup = "/agents";  // one bucket for the whole subtree
  EXPECT_EQ(bucket_cgroup(m, "/agents/a/b"), "/agents");
  EXPECT_EQ(bucket_cgroup(m, "/agents/c"), "/agents");

  m.cgroup = "/**/job-*";
  EXPECT_EQ(bucket_cgroup(m, "/ci/runner/job-7/step/2"), "/ci/runner/job-7");

  m.cgroup = "/agents/**";  // ** matches zero levels: /agents itself is the shallowest
  EXPECT_EQ(bucket_cgroup(m, "/agents/a/b"), "/agents");

  m.cgroup = "/**";
  EXPECT_EQ(bucket_cgroup(m, "/a/b"), "/");
}

TEST(Bucket, NoCgroupPatternGivesEachCgroupItsOwnBucket) {
  Match m;
  m.comm = "python*";
  EXPECT_EQ(bucket_cgroup(m, "/agents/a/b"), "/agents/a/b");
  EXPECT_EQ(bucket_cgroup(Match{}, "/"), "/");
}

TEST(Bucket, NestedBudgetsBothApplyToOneCall) {
  // "/agents/*" and "/agents" may both apply to the same call: one bucket each.
  Match per_child, all;
  per_child.cgroup = "/agents/*";
  all.cgroup = "/agents";
  ProcessFacts f{"/agents/a/worker", "", "/usr/bin/python3", "python3", 0};
  EXPECT_EQ(bucket_key(per_child, Per::Cgroup, f, 42, 40), "cgroup:/agents/a");
  EXPECT_EQ(bucket_key(all, Per::Cgroup, f, 42, 40), "cgroup:/agents");
}

TEST(Bucket, KeysPerTreeAndProcess) {
  Match m;
  m.cgroup = "/agents/*";
  ProcessFacts in{"/agents/a", "", "", "", 0};
  ProcessFacts out{"/system.slice/sshd.service", "", "", "", 0};
  EXPECT_EQ(bucket_key(m, Per::Tree, in, 4242, 4200), "tree:4200");
  EXPECT_EQ(bucket_key(m, Per::Tree, in, 4242, 0), "tree:4242");  // no known root: the process
  EXPECT_EQ(bucket_key(m, Per::Process, in, 4242, 4200), "process:4242");
  EXPECT_EQ(bucket_key(m, Per::Cgroup, out, 1, 1), std::nullopt);
  EXPECT_EQ(bucket_key(m, Per::Tree, out, 1, 1), std::nullopt);
}

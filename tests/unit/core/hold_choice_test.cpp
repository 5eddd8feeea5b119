// choose_hold: a foreground job's cgroup is frozen only when it holds that job alone.
#include <gtest/gtest.h>

#include "core/capture_freeze.h"

namespace ab::core {
namespace {

HoldSite site(ProcIds held, std::vector<ProcIds> members, std::string cg = "/user.slice/session-3.scope") {
  HoldSite s;
  s.cgroup = std::move(cg);
  s.self_cgroup = "/system.slice/agentbraked.service";
  s.held = held;
  s.members = std::move(members);
  return s;
}

TEST(ChooseHold, AloneInItsCgroupIsFrozen) {
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{100, 1, 100}})).method, HoldMethod::Freeze);
}

TEST(ChooseHold, ItsJobAndItsTreeAreFrozenWithIt) {
  // 100 the agent (pgrp 100), 101 its tool child in another pgrp, 102 a grandchild, 103 `tee`
  // in its pipeline (same pgrp, not its child)
  auto s = site({100, 50, 100}, {{100, 50, 100}, {101, 100, 101}, {102, 101, 102}, {103, 50, 100}});
  auto c = choose_hold(s);
  EXPECT_EQ(c.method, HoldMethod::Freeze) << c.why;
  EXPECT_TRUE(c.why.empty());
}

TEST(ChooseHold, ASharedSessionIsNeverFrozen) {
  // session-3.scope: sshd session 40, bash 50 (the session's shell), the agent 100 (its
  // foreground job, pgrp 100): a freeze would freeze the shell and the sshd session
  auto c = choose_hold(site({100, 50, 100}, {{40, 1, 40}, {50, 40, 50}, {100, 50, 100}}));
  EXPECT_EQ(c.method, HoldMethod::Ptrace);
  EXPECT_NE(c.why.find("40"), std::string::npos) << c.why;
}

TEST(ChooseHold, AHeartbeatBesideItIsNeverFrozen) {
  // an unrelated process (another pgrp, not below the agent) in the agent's own cgroup
  EXPECT_EQ(choose_hold(site({100, 50, 100}, {{100, 50, 100}, {7, 1, 7}})).method, HoldMethod::Ptrace);
  // its parent's other child (a sibling) is not of its job either
  EXPECT_EQ(choose_hold(site({100, 50, 100}, {{100, 50, 100}, {101, 50, 101}})).method, HoldMethod::Ptrace);
  // nor is its parent
  EXPECT_EQ(choose_hold(site({100, 50, 100}, {{100, 50, 100}, {50, 1, 50}})).method, HoldMethod::Ptrace);
}

TEST(ChooseHold, AProcessWhoseIdsAreUnknownIsNotOfTheJob) {
  EXPECT_EQ(choose_hold(site({100, 50, 100}, {{100, 50, 100}, {101, 0, 0}})).method, HoldMethod::Ptrace);
  // nor, with the held process's own pgrp unknown, a process with pgrp 0
  EXPECT_EQ(choose_hold(site({100, 50, 0}, {{100, 50, 0}, {101, 7, 0}})).method, HoldMethod::Ptrace);
  // a tmux server with a pane's shell below it is no descendant of a pane's agent
  EXPECT_EQ(choose_hold(site({300, 200, 300}, {{100, 1, 100}, {200, 100, 200}, {300, 200, 300}})).method,
            HoldMethod::Ptrace);
}

TEST(ChooseHold, UnsafeCgroupsAreNeverFrozen) {
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{100, 1, 100}}, "/")).method, HoldMethod::Ptrace);
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{100, 1, 100}}, "")).method, HoldMethod::Ptrace);
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{100, 1, 100}}, "/system.slice")).method, HoldMethod::Ptrace);
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{100, 1, 100}}, "/system.slice/agentbraked.service")).method,
            HoldMethod::Ptrace);
  // a sibling whose name starts like the daemon's is not an ancestor
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{100, 1, 100}}, "/system.slice/agentbraked.service2")).method,
            HoldMethod::Freeze);
  auto unreadable = site({100, 1, 100}, {});
  unreadable.members.reset();
  EXPECT_EQ(choose_hold(unreadable).method, HoldMethod::Ptrace);
  // not (any more) in that cgroup
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{101, 100, 101}})).method, HoldMethod::Ptrace);
}

TEST(ChooseHold, ABigCgroupIsNotFrozenEvenIfItIsAllItsTree) {
  std::vector<ProcIds> m{{100, 1, 100}};
  for (int i = 0; i < 64; i++) m.push_back({1000 + i, 100, 100});
  EXPECT_EQ(choose_hold(site({100, 1, 100}, m)).method, HoldMethod::Ptrace);
  m.pop_back();
  EXPECT_EQ(choose_hold(site({100, 1, 100}, m)).method, HoldMethod::Freeze);
}

TEST(ChooseHold, ACycleInParentLinksEnds) {
  // pid reuse while reading can make nonsense links: the walk is bounded
  EXPECT_EQ(choose_hold(site({100, 1, 100}, {{100, 1, 100}, {5, 6, 5}, {6, 5, 6}})).method, HoldMethod::Ptrace);
}

}  // namespace
}  // namespace ab::core

// EntityKey: the policy's bucket keys, typed.
#include <gtest/gtest.h>

#include "gate/effects.h"
#include "gate/entity.h"

using ab::gate::EntityKey;

TEST(EntityKey, ParsesThePolicysKeysAndSpellsThemBack) {
  for (const char* key : {"cgroup:/agents/a", "cgroup:/", "tree:42", "process:7"}) {
    auto e = EntityKey::parse(key);
    ASSERT_TRUE(e) << key;
    EXPECT_EQ(e->str(), key);
  }
  EXPECT_EQ(EntityKey::parse("tree:42")->kind, EntityKey::Kind::Tree);
  EXPECT_EQ(EntityKey::parse("tree:42")->pid, 42u);
  EXPECT_EQ(EntityKey::parse("cgroup:/a")->target(), "/a");
  for (const char* bad : {"", "tree:", "tree:4x", "cgroup:a", "process:-1", "pod:1"})
    EXPECT_FALSE(EntityKey::parse(bad)) << bad;
}

TEST(EntityKey, CoversItsProcesses) {
  const auto cg = EntityKey::of_cgroup("/agents/a");
  EXPECT_TRUE(cg.covers("/agents/a", 1, 2));
  EXPECT_TRUE(cg.covers("/agents/a/b", 1, 2));
  EXPECT_FALSE(cg.covers("/agents/ab", 1, 2));
  EXPECT_TRUE(EntityKey::of_cgroup("/").covers("/x", 1, 2));
  EXPECT_TRUE(EntityKey::of_tree(1).covers("/x", 1, 2));
  EXPECT_FALSE(EntityKey::of_tree(1).covers("/x", 3, 1));
  EXPECT_TRUE(EntityKey::of_process(2).covers("/x", 1, 2));
}

TEST(Event, KindFollowsWhatItSays) {
  using namespace ab::gate;
  EXPECT_EQ((Event{1, false, Paused{}}).kind(), EventKind::Paused);
  EXPECT_EQ((Event{1, false, Undenied{}}).kind(), EventKind::Resumed);
  EXPECT_EQ((Event{1, false, FanOutHeld{}}).kind(), EventKind::LoopDetected);
  EXPECT_EQ(to_string(EventKind::BudgetExceeded), "budget_exceeded");
  EXPECT_EQ(to_string(HoldReason::FanOut), "fan_out");
}

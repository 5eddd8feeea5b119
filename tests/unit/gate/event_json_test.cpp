// The detail objects of gate events, as the store keeps them.
#include <gtest/gtest.h>

#include "gate/event_json.h"

using namespace ab::gate;

TEST(EventJson, ResumedByMaxHoldSaysSoAndNamesTheHold) {
  Resumed r{HoldReason::FanOut, HoldEnd::MaxHold, HoldVia::Stop, 3'500'000'000, ab::policy::Action::Throttle};
  auto d = detail_json(Event{42, false, r});
  EXPECT_EQ(d["target"], "42");
  EXPECT_EQ(d["reason"], "max_hold");
  EXPECT_EQ(d["hold_reason"], "fan_out");
  EXPECT_EQ(d["escalation"], "throttle");
  EXPECT_DOUBLE_EQ(d["held_ms"].get<double>(), 3500.0);
  EXPECT_DOUBLE_EQ(d["held_s"].get<double>(), 3.5);
  EXPECT_EQ(d["dry_run"], false);
}

TEST(EventJson, ResumedByRoomKeepsTheHoldsReason) {
  auto d = detail_json(Event{7, false, Resumed{HoldReason::Budget, HoldEnd::Room, HoldVia::Freeze, 1'234'567, std::nullopt}});
  EXPECT_EQ(d["reason"], "budget");
  EXPECT_EQ(d["released"], "room");
  EXPECT_EQ(d["via"], "freeze");
  EXPECT_DOUBLE_EQ(d["held_ms"].get<double>(), 1.234);
  EXPECT_FALSE(d.contains("hold_reason"));
  EXPECT_FALSE(d.contains("escalation"));
}

TEST(EventJson, BudgetExceededCarriesTheLimit) {
  ab::brake::Exceeded x;
  x.bucket = {"b", "cgroup:/agents/a"};
  x.kind = ab::policy::LimitKind::Tokens;
  x.window_ns = 60'000'000'000;
  x.limit = 1000;
  x.level = 990;
  x.requested = 20;
  auto d = detail_json(Event{1, true, BudgetExceeded{x}});
  EXPECT_EQ(d["budget"], "b");
  EXPECT_EQ(d["bucket"], "cgroup:/agents/a");
  EXPECT_EQ(d["kind"], "tokens");
  EXPECT_EQ(d["window"], "1m");
  EXPECT_EQ(d["dry_run"], true);
  x.reason = ab::brake::Exceeded::Reason::Inflight;
  d = detail_json(Event{1, false, BudgetExceeded{x}});
  EXPECT_EQ(d["kind"], "inflight");
  EXPECT_TRUE(d["window"].is_null());
}

TEST(EventJson, DenyKillAndPaused) {
  auto cg = EntityKey::of_cgroup("/agents/a");
  auto d = detail_json(Event{1, false, Denied{cg, "b"}});
  EXPECT_EQ(d["target"], "/agents/a");
  EXPECT_EQ(d["entity"], "cgroup:/agents/a");
  EXPECT_EQ(d["budget"], "b");
  d = detail_json(Event{1, false, Killed{EntityKey::of_tree(9), KillCause::MaxHold, "b"}});
  EXPECT_EQ(d["target"], "9");
  EXPECT_EQ(d["reason"], "max_hold");
  d = detail_json(Event{1, false, Undenied{cg}});
  EXPECT_EQ(d["was"], "denied");
  Paused p{HoldReason::Budget, HoldVia::Stop, {"b"}, {"cgroup:/agents/a"}, "", std::nullopt};
  d = detail_json(Event{5, true, p});
  EXPECT_EQ(d["reason"], "budget");
  EXPECT_EQ(d["via"], "sigstop");
  EXPECT_EQ(d["budgets"], nlohmann::json::array({"b"}));
  EXPECT_EQ(d["dry_run"], true);
}

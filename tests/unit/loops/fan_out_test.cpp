// Fan-out: calls in flight per entity; past max_concurrent a finding (once per episode) and
// should_hold for further calls while at the limit; lost finishes and exits do not leak.
#include <gtest/gtest.h>

#include "loops/fan_out.h"
#include "loops_test_util.h"

using namespace ab::loops;
using namespace ab::loops::testing;

namespace {

ab::policy::FanOut rule(int64_t max_concurrent, ab::policy::Action action = ab::policy::Action::Throttle) {
  ab::policy::FanOut r;
  r.enabled = true;
  r.action = action;
  r.max_concurrent = max_concurrent;
  return r;
}

}  // namespace

TEST(FanOut, FiresWhenInFlightPassesMaxConcurrent) {
  FanOutDetector d(rule(4));
  FakeClock clock;
  for (uint64_t id = 1; id <= 4; ++id) EXPECT_FALSE(d.call_started("tree:1", member(100 + id, 1), id, clock.advance(kMs)));
  EXPECT_EQ(d.in_flight("tree:1", clock.now), 4);
  EXPECT_TRUE(d.should_hold("tree:1", clock.now));
  auto f = d.call_started("tree:1", member(200, 1), 5, clock.advance(kMs));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->detector, "fan_out");
  EXPECT_EQ(f->evidence.concurrent, 5);
  EXPECT_EQ(f->members.size(), 5u);
  EXPECT_DOUBLE_EQ(f->evidence.rate_per_min, 5);
}

TEST(FanOut, SequentialCallsNeverFire) {
  FanOutDetector d(rule(2));
  FakeClock clock;
  for (uint64_t id = 1; id <= 100; ++id) {
    EXPECT_FALSE(d.call_started("e", member(1), id, clock.advance(kSecond)));
    d.call_finished(id, clock.advance(kSecond));
  }
  EXPECT_EQ(d.in_flight("e", clock.now), 0);
  EXPECT_FALSE(d.should_hold("e", clock.now));
}

TEST(FanOut, ShouldHoldFollowsTheCountAndTheAction) {
  FanOutDetector d(rule(2));
  FakeClock clock;
  d.call_started("e", member(1), 1, clock.now);
  EXPECT_FALSE(d.should_hold("e", clock.now));
  d.call_started("e", member(1), 2, clock.now);
  EXPECT_TRUE(d.should_hold("e", clock.now));
  d.call_finished(1, clock.advance(kSecond));
  EXPECT_FALSE(d.should_hold("e", clock.now));

  FanOutDetector alert_only(rule(1, ab::policy::Action::Alert));
  alert_only.call_started("e", member(1), 1, clock.now);
  EXPECT_TRUE(alert_only.call_started("e", member(1), 2, clock.now));
  EXPECT_FALSE(alert_only.should_hold("e", clock.now));  // alert never holds
}

TEST(FanOut, OncePerEpisodeRearmsAfterQuiet) {
  FanOutDetector d(rule(1), /*quiet_ns=*/60 * kSecond);
  FakeClock clock;
  int fired = 0;
  uint64_t id = 0;
  for (int round = 0; round < 5; ++round) {  // over the limit again and again, 10 s apart
    const uint64_t a = ++id, b = ++id;
    fired += d.call_started("e", member(1), a, clock.now) ? 1 : 0;
    fired += d.call_started("e", member(1), b, clock.now) ? 1 : 0;
    d.call_finished(a, clock.advance(kSecond));
    d.call_finished(b, clock.now);
    clock.advance(10 * kSecond);
  }
  EXPECT_EQ(fired, 1);
  clock.advance(61 * kSecond);
  d.call_started("e", member(1), ++id, clock.now);
  EXPECT_TRUE(d.call_started("e", member(1), ++id, clock.now));
}

TEST(FanOut, SpawnRateIsInTheEvidence) {
  FanOutDetector d(rule(1));
  FakeClock clock;
  for (int i = 0; i < 12; ++i) d.on_spawn("tree:1", clock.advance(kSecond));
  d.call_started("tree:1", member(1), 1, clock.now);
  auto f = d.call_started("tree:1", member(2, 1), 2, clock.now);
  ASSERT_TRUE(f);
  EXPECT_DOUBLE_EQ(f->evidence.spawns_per_min, 12);
}

TEST(FanOut, LostFinishesAgeOutAndExitsForgetCalls) {
  FanOutDetector d(rule(2), 60 * kSecond, /*max_call_age_ns=*/10 * kMinute);
  FakeClock clock;
  d.call_started("e", member(1), 1, clock.now);
  d.call_started("e", member(2), 2, clock.now);
  EXPECT_TRUE(d.should_hold("e", clock.now));
  d.forget_pid(2);
  EXPECT_EQ(d.in_flight("e", clock.now), 1);
  clock.advance(11 * kMinute);  // call 1's finish never came
  EXPECT_EQ(d.in_flight("e", clock.now), 0);
  d.call_finished(1, clock.now);  // late finish of a forgotten call: harmless
  EXPECT_EQ(d.in_flight("e", clock.now), 0);
}

TEST(FanOut, FinishIsAttributedToTheStartingEntityAndDuplicatesCountOnce) {
  FanOutDetector d(rule(5));
  FakeClock clock;
  d.call_started("tree:1", member(1), 1, clock.now);
  d.call_started("tree:1", member(1), 1, clock.now);  // same id again
  d.call_started("tree:2", member(2), 2, clock.now);
  EXPECT_EQ(d.in_flight("tree:1", clock.now), 1);
  d.call_finished(1, clock.advance(kSecond));
  EXPECT_EQ(d.in_flight("tree:1", clock.now), 0);
  EXPECT_EQ(d.in_flight("tree:2", clock.now), 1);
  EXPECT_EQ(d.calls_tracked(), 1u);
}

TEST(FanOut, AtTheEntityCapTheLeastRecentBatchGoesWithItsCalls) {
  FanOutDetector d(rule(1'000));
  FakeClock clock;
  const size_t cap = FanOutDetector::kMaxEntities;
  for (size_t i = 0; i < cap; ++i)  // entity i last seen at i ms; each has one call in flight
    d.call_started("tree:" + std::to_string(i), member(static_cast<uint32_t>(i + 10)), i + 1, clock.advance(kMs));
  ASSERT_EQ(d.entity_count(), cap);
  ASSERT_EQ(d.calls_tracked(), cap);
  d.call_started("tree:new", member(9), cap + 1, clock.advance(kMs));
  const size_t batch = cap / 8;
  EXPECT_EQ(d.entity_count(), cap - batch + 1);
  EXPECT_EQ(d.calls_tracked(), cap - batch + 1);  // the evicted entities' calls are forgotten too
  EXPECT_EQ(d.in_flight("tree:0", clock.now), 0);
  EXPECT_EQ(d.in_flight("tree:" + std::to_string(batch - 1), clock.now), 0);
  EXPECT_EQ(d.in_flight("tree:" + std::to_string(batch), clock.now), 1);  // the oldest survivor
  EXPECT_EQ(d.in_flight("tree:new", clock.now), 1);
  // the next batch - 1 new entities fit without evicting anyone
  for (size_t i = 0; i + 1 < batch; ++i)
    d.call_started("more:" + std::to_string(i), member(7), 2 * cap + i, clock.advance(kMs));
  EXPECT_EQ(d.entity_count(), cap);
  EXPECT_EQ(d.in_flight("tree:" + std::to_string(batch), clock.now), 1);
}

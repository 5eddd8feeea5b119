// Repetition: more than max_repeats near-identical requests within the window fire, once per
// episode; different previous answers, expired windows and distant fingerprints do not count.
#include <gtest/gtest.h>

#include "loops/fingerprint.h"
#include "loops/repetition.h"
#include "loops_test_util.h"

using namespace ab::loops;
using namespace ab::loops::testing;

namespace {

ab::policy::Repetition rule(int64_t max_repeats = 6, int64_t window_s = 300, int hamming_bits = 3) {
  ab::policy::Repetition r;
  r.enabled = true;
  r.action = ab::policy::Action::Throttle;
  r.max_repeats = max_repeats;
  r.window = std::chrono::seconds(window_s);
  r.hamming = hamming_bits;
  return r;
}

const uint64_t kStuck = request_fingerprint({"error: file config.yaml not found"}, turn_fingerprint("read config.yaml"));

}  // namespace

TEST(Repetition, FiresAtMaxRepeatsPlusOneNotBefore) {
  RepetitionDetector d(rule(6));
  FakeClock clock;
  for (uint64_t i = 1; i <= 6; ++i) {
    EXPECT_FALSE(d.on_call("tree:10", member(10), i, kStuck, clock.now)) << "request " << i;
    clock.advance(5 * kSecond);
  }
  auto f = d.on_call("tree:10", member(10), 7, kStuck, clock.now);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->detector, "repetition");
  EXPECT_EQ(f->entity, "tree:10");
  EXPECT_EQ(f->evidence.repeats, 7);
  EXPECT_EQ(f->evidence.since_ns, clock.now - 30 * kSecond);
  EXPECT_DOUBLE_EQ(f->evidence.rate_per_min, 7 * 2.0);  // 7 in 30 s
  EXPECT_EQ(f->action, ab::policy::Action::Throttle);
  ASSERT_EQ(f->members.size(), 1u);
  EXPECT_EQ(f->members[0].pid, 10u);
}

TEST(Repetition, NearDuplicatesWithinHammingCountAndFartherOnesDoNot) {
  RepetitionDetector d(rule(2, 300, 3));
  FakeClock clock;
  const uint64_t base = kStuck;
  EXPECT_FALSE(d.on_call("e", member(1), 1, base, clock.now));
  EXPECT_FALSE(d.on_call("e", member(1), 2, base ^ 0b111, clock.now));           // 3 bits away: counts
  EXPECT_FALSE(d.on_call("e", member(1), 3, base ^ 0b1111000000, clock.now));    // 4 bits from base: not a repeat
  EXPECT_TRUE(d.on_call("e", member(1), 4, base ^ 0b1, clock.now));              // third within 3 bits
}

TEST(Repetition, InterleavedDistinctRequestsDoNotFire) {
  RepetitionDetector d(rule(3));
  FakeClock clock;
  uint64_t id = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string step = "analyse chapter " + std::to_string(i) + " of the novel and list its characters";
    EXPECT_FALSE(d.on_call("e", member(1), ++id, request_fingerprint({step}, 0), clock.now)) << i;
    clock.advance(kSecond);
  }
}

TEST(Repetition, ContinueAfterDifferentAnswersDoesNotFire) {
  RepetitionDetector d(rule(6));
  FakeClock clock;
  for (int i = 0; i < 30; ++i) {
    const std::string answer = "Part " + std::to_string(i) + " of the story: the travellers reach city number " +
                               std::to_string(i * 13) + " and meet someone new";
    const uint64_t fp = request_fingerprint({"continue"}, turn_fingerprint(answer));
    EXPECT_FALSE(d.on_call("tree:5", member(5), static_cast<uint64_t>(i + 1), fp, clock.now)) << i;
    clock.advance(2 * kSecond);
  }
}

TEST(Repetition, RepeatsSpreadWiderThanTheWindowDoNotFire) {
  RepetitionDetector d(rule(3, 60));
  FakeClock clock;
  for (uint64_t i = 1; i <= 10; ++i) {
    EXPECT_FALSE(d.on_call("e", member(1), i, kStuck, clock.now)) << i;
    clock.advance(21 * kSecond);  // at most 3 fall in any 60 s
  }
}

TEST(Repetition, OncePerEpisodeThenRearmsAfterAQuietWindow) {
  RepetitionDetector d(rule(2, 60));
  FakeClock clock;
  uint64_t id = 0;
  int fired = 0;
  for (int i = 0; i < 20; ++i) {
    fired += d.on_call("e", member(1), ++id, kStuck, clock.now) ? 1 : 0;
    clock.advance(kSecond);
  }
  EXPECT_EQ(fired, 1);
  clock.advance(61 * kSecond);  // quiet for a whole window
  EXPECT_FALSE(d.on_call("e", member(1), ++id, kStuck, clock.now));
  EXPECT_FALSE(d.on_call("e", member(1), ++id, kStuck, clock.now));
  EXPECT_TRUE(d.on_call("e", member(1), ++id, kStuck, clock.now));
}

TEST(Repetition, ResetStartsANewEpisode) {
  RepetitionDetector d(rule(1));
  FakeClock clock;
  EXPECT_FALSE(d.on_call("e", member(1), 1, kStuck, clock.now));
  EXPECT_TRUE(d.on_call("e", member(1), 2, kStuck, clock.now));
  EXPECT_FALSE(d.on_call("e", member(1), 3, kStuck, clock.now));
  d.reset("e");
  EXPECT_FALSE(d.on_call("e", member(1), 4, kStuck, clock.now));
  EXPECT_TRUE(d.on_call("e", member(1), 5, kStuck, clock.now));
}

TEST(Repetition, EntitiesAreSeparateAndUnknownContentIsIgnored) {
  RepetitionDetector d(rule(1));
  FakeClock clock;
  EXPECT_FALSE(d.on_call("tree:1", member(1), 1, kStuck, clock.now));
  EXPECT_FALSE(d.on_call("tree:2", member(2), 2, kStuck, clock.now));
  EXPECT_FALSE(d.on_call("tree:1", member(1), 3, 0, clock.now));
  EXPECT_FALSE(d.on_call("tree:1", member(1), 4, 0, clock.now));
  EXPECT_TRUE(d.on_call("tree:1", member(1), 5, kStuck, clock.now));
}

TEST(Repetition, EvidenceCarriesTheSpendOfTheRepeatedCalls) {
  RepetitionDetector d(rule(2));
  FakeClock clock;
  EXPECT_FALSE(d.on_call("e", member(1), 1, kStuck, clock.now));
  d.on_usage("e", 1, 1000, 0.01);
  EXPECT_FALSE(d.on_call("e", member(2, 1), 2, kStuck, clock.advance(kSecond)));
  d.on_usage("e", 2, 1500, 0.02);
  auto f = d.on_call("e", member(1), 3, kStuck, clock.advance(kSecond));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->evidence.tokens, 2500);
  EXPECT_NEAR(f->evidence.cost_usd, 0.03, 1e-12);
  EXPECT_EQ(f->members.size(), 2u);  // both processes of the tree sent the repeat
}

TEST(Repetition, MemoryIsBoundedPerEntityAndAcrossEntities) {
  RepetitionDetector d(rule(1'000'000));
  FakeClock clock;
  for (uint64_t i = 0; i < 3 * RepetitionDetector::kMaxCallsPerEntity; ++i) d.on_call("e", member(1), i + 1, kStuck, clock.now);
  for (uint32_t i = 0; i < RepetitionDetector::kMaxEntities + 100; ++i)
    d.on_call("process:" + std::to_string(i + 100), member(i + 100), 1'000'000 + i, kStuck, clock.now);
  EXPECT_LE(d.entity_count(), RepetitionDetector::kMaxEntities);
  clock.advance(10 * kMinute);  // every window expired: a sweep drops them all
  d.on_call("fresh", member(7), 99'999'999, kStuck, clock.now);
  EXPECT_EQ(d.entity_count(), 1u);
}

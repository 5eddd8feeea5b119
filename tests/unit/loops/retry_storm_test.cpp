// Retry storm: more than max_errors error responses (429, 5xx, 529, no response) in the window
// fire once per episode with the largest retry-after; successes and other 4xx never count.
#include <gtest/gtest.h>

#include "loops/retry_storm.h"
#include "loops_test_util.h"

using namespace ab::loops;
using namespace ab::loops::testing;

namespace {

ab::policy::RetryStorm rule(int64_t max_errors = 5, int64_t window_s = 60) {
  ab::policy::RetryStorm r;
  r.enabled = true;
  r.action = ab::policy::Action::Throttle;
  r.max_errors = max_errors;
  r.window = std::chrono::seconds(window_s);
  return r;
}

}  // namespace

TEST(RetryStorm, ErrorStatuses) {
  for (int s : {0, 429, 500, 502, 503, 529, 599}) EXPECT_TRUE(RetryStormDetector::is_error_status(s)) << s;
  for (int s : {200, 201, 400, 401, 403, 404, 413, 600}) EXPECT_FALSE(RetryStormDetector::is_error_status(s)) << s;
}

TEST(RetryStorm, FiresPastMaxErrorsWithTheLargestRetryAfter) {
  RetryStormDetector d(rule(5));
  FakeClock clock;
  const int statuses[] = {429, 529, 503, 0, 429};
  const double retry_after[] = {2, -1, 7.5, -1, 3};
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(d.on_response("tree:9", member(9), statuses[i], retry_after[i], 0, 0, clock.now)) << i;
    clock.advance(kSecond);
  }
  auto f = d.on_response("tree:9", member(9), 500, 1, 12, 0.001, clock.now);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->detector, "retry_storm");
  EXPECT_EQ(f->evidence.errors, 6);
  EXPECT_DOUBLE_EQ(f->evidence.retry_after_s, 7.5);
  EXPECT_EQ(f->evidence.since_ns, clock.now - 5 * kSecond);
  EXPECT_EQ(f->evidence.tokens, 12);
  EXPECT_EQ(f->action, ab::policy::Action::Throttle);
}

TEST(RetryStorm, SuccessesAndClientErrorsDoNotCount) {
  RetryStormDetector d(rule(2));
  FakeClock clock;
  for (int i = 0; i < 50; ++i) {
    EXPECT_FALSE(d.on_response("e", member(1), i % 2 ? 200 : 400, -1, 100, 0.01, clock.now));
    clock.advance(100 * kMs);
  }
}

TEST(RetryStorm, ErrorsOlderThanTheWindowExpire) {
  RetryStormDetector d(rule(3, 60));
  FakeClock clock;
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(d.on_response("e", member(1), 429, -1, 0, 0, clock.advance(kSecond)));
  clock.advance(60 * kSecond);  // the three are out of the window
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(d.on_response("e", member(1), 429, -1, 0, 0, clock.advance(kSecond)));
  EXPECT_TRUE(d.on_response("e", member(1), 429, -1, 0, 0, clock.advance(kSecond)));
}

TEST(RetryStorm, OncePerEpisodeRearmsAfterAQuietWindowOrReset) {
  RetryStormDetector d(rule(2, 60));
  FakeClock clock;
  int fired = 0;
  for (int i = 0; i < 100; ++i) fired += d.on_response("e", member(1), 503, -1, 0, 0, clock.advance(500 * kMs)) ? 1 : 0;
  EXPECT_EQ(fired, 1);
  clock.advance(61 * kSecond);
  fired = 0;
  for (int i = 0; i < 3; ++i) fired += d.on_response("e", member(1), 503, -1, 0, 0, clock.advance(kSecond)) ? 1 : 0;
  EXPECT_EQ(fired, 1);
  d.reset("e");
  fired = 0;
  for (int i = 0; i < 3; ++i) fired += d.on_response("e", member(1), 503, -1, 0, 0, clock.advance(kSecond)) ? 1 : 0;
  EXPECT_EQ(fired, 1);
}

TEST(RetryStorm, PaceUntilHonoursTheLatestRetryAfter) {
  RetryStormDetector d(rule(100));
  FakeClock clock;
  EXPECT_EQ(d.pace_until_ns("e", clock.now), 0);
  d.on_response("e", member(1), 429, 30, 0, 0, clock.now);
  const int64_t first = clock.now;
  d.on_response("e", member(1), 429, 5, 0, 0, clock.advance(10 * kSecond));
  EXPECT_EQ(d.pace_until_ns("e", clock.now), first + 30 * kSecond);
  EXPECT_EQ(d.pace_until_ns("e", first + 31 * kSecond), 0);  // already past
}

TEST(RetryStorm, EntitiesAreSeparate) {
  RetryStormDetector d(rule(2));
  FakeClock clock;
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(d.on_response("tree:1", member(1), 429, -1, 0, 0, clock.now));
    EXPECT_FALSE(d.on_response("tree:2", member(2), 429, -1, 0, 0, clock.now));
  }
  EXPECT_TRUE(d.on_response("tree:2", member(2), 429, -1, 0, 0, clock.now));
}

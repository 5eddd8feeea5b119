#include <gtest/gtest.h>

#include <limits>

#include "alerts/projection.h"

using ab::alerts::projected_crossing_s;

TEST(ProjectedCrossing, FiresWhenTheRateCrossesBeforeTheWindowEnds) {
  // $1 of $5 spent, $0.01/s: $4 more takes 400 s; 1800 s left in the window.
  auto t = projected_crossing_s(1.0, 0.01, 5.0, 1800.0);
  ASSERT_TRUE(t);
  EXPECT_NEAR(*t, 400.0, 1e-9);
}

TEST(ProjectedCrossing, SilentWhenTheWindowEndsFirst) {
  EXPECT_FALSE(projected_crossing_s(1.0, 0.01, 5.0, 399.0));
  auto exactly = projected_crossing_s(1.0, 0.01, 5.0, 400.0);  // crossing at the last instant counts
  ASSERT_TRUE(exactly);
  EXPECT_NEAR(*exactly, 400.0, 1e-9);
}

TEST(ProjectedCrossing, SilentWithoutSpendRate) {
  EXPECT_FALSE(projected_crossing_s(1.0, 0.0, 5.0, 3600.0));
  EXPECT_FALSE(projected_crossing_s(1.0, -0.5, 5.0, 3600.0));
}

TEST(ProjectedCrossing, AlreadyOverTheLimitIsNow) {
  EXPECT_EQ(projected_crossing_s(5.0, 0.0, 5.0, 10.0), 0.0);
  EXPECT_EQ(projected_crossing_s(7.5, 0.1, 5.0, 0.0), 0.0);
}

TEST(ProjectedCrossing, RejectsNonsense) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(projected_crossing_s(nan, 0.1, 5.0, 60.0));
  EXPECT_FALSE(projected_crossing_s(1.0, inf, 5.0, 60.0));
  EXPECT_FALSE(projected_crossing_s(1.0, 0.1, 0.0, 60.0));   // no limit
  EXPECT_FALSE(projected_crossing_s(1.0, 0.1, -1.0, 60.0));
  EXPECT_FALSE(projected_crossing_s(-1.0, 0.1, 5.0, 60.0));
  EXPECT_FALSE(projected_crossing_s(1.0, 0.1, 5.0, -1.0));
}

TEST(ProjectedCrossing, ZeroRemainingWindowOnlyFiresWhenAlreadyOver) {
  EXPECT_FALSE(projected_crossing_s(4.99, 100.0, 5.0, 0.0));
  EXPECT_EQ(projected_crossing_s(5.0, 100.0, 5.0, 0.0), 0.0);
}

// SlidingWindow: entries enter at their time and leave exactly one window length later.
#include <gtest/gtest.h>

#include "brake/sliding_window.h"

using ab::brake::fits;
using ab::brake::SlidingWindow;

namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'000 * kSec;  // an arbitrary monotonic origin

TEST(Fits, WithinLimitFitsAndOverDoesNot) {
  EXPECT_TRUE(fits(600, 400, 1000));   // exactly at the limit
  EXPECT_FALSE(fits(600, 401, 1000));
  EXPECT_TRUE(fits(0.1, 0.2, 0.3));    // USD sums that only float rounding pushes over
}

TEST(Fits, EmptyWindowTakesAnOversizeCall) {
  EXPECT_TRUE(fits(0, 5000, 1000));
  EXPECT_FALSE(fits(1, 5000, 1000));
}

TEST(SlidingWindow, EntryLeavesExactlyOneLengthLater) {
  SlidingWindow w(10 * kSec);
  w.add(kT0, 5);
  EXPECT_DOUBLE_EQ(w.level(kT0), 5);
  EXPECT_DOUBLE_EQ(w.level(kT0 + 10 * kSec - 1), 5);
  EXPECT_DOUBLE_EQ(w.level(kT0 + 10 * kSec), 0);
  EXPECT_EQ(w.count(kT0 + 10 * kSec - 1), 1u);
  EXPECT_TRUE(w.empty(kT0 + 10 * kSec));
}

TEST(SlidingWindow, LevelSumsOnlyEntriesInsideTheWindow) {
  SlidingWindow w(10 * kSec);
  w.add(kT0, 3);
  w.add(kT0 + 4 * kSec, 4);
  w.add(kT0 + 8 * kSec, 5);
  EXPECT_DOUBLE_EQ(w.level(kT0 + 9 * kSec), 12);
  EXPECT_DOUBLE_EQ(w.level(kT0 + 10 * kSec), 9);
  EXPECT_DOUBLE_EQ(w.level(kT0 + 14 * kSec), 5);
  EXPECT_EQ(w.oldest(kT0 + 14 * kSec), kT0 + 8 * kSec);
}

TEST(SlidingWindow, TrimmingDoesNotChangeTheAnswers) {
  SlidingWindow trimmed(10 * kSec), untouched(10 * kSec);
  for (int i = 0; i < 20; ++i) {
    trimmed.add(kT0 + i * kSec, i);
    untouched.add(kT0 + i * kSec, i);
  }
  const int64_t now = kT0 + 25 * kSec;
  trimmed.trim(now);
  EXPECT_DOUBLE_EQ(trimmed.level(now), untouched.level(now));
  EXPECT_DOUBLE_EQ(trimmed.level(now), 16 + 17 + 18 + 19);
  EXPECT_EQ(trimmed.count(now), 4u);
}

TEST(SlidingWindow, TaggedEntryIsSettledOrRemovedInPlace) {
  SlidingWindow w(10 * kSec);
  w.add(kT0, 100, 7);
  w.add(kT0 + kSec, 50);
  EXPECT_TRUE(w.set_amount(7, 30));
  EXPECT_DOUBLE_EQ(w.level(kT0 + 2 * kSec), 80);
  // It keeps its admission time: it leaves at kT0 + 10 s, not later.
  EXPECT_DOUBLE_EQ(w.level(kT0 + 10 * kSec), 50);
  EXPECT_TRUE(w.remove(7));
  EXPECT_FALSE(w.remove(7));
  EXPECT_FALSE(w.set_amount(SlidingWindow::kUntagged, 1));  // history is never settled
  EXPECT_DOUBLE_EQ(w.level(kT0 + 2 * kSec), 50);
}

TEST(SlidingWindow, OlderEntryAddedLateStillLeavesOnTime) {
  SlidingWindow w(10 * kSec);
  w.add(kT0 + 5 * kSec, 1);
  w.add(kT0, 2);  // restored history arriving after a live call
  EXPECT_DOUBLE_EQ(w.level(kT0 + 9 * kSec), 3);
  EXPECT_DOUBLE_EQ(w.level(kT0 + 10 * kSec), 1);
  w.trim(kT0 + 10 * kSec);
  EXPECT_EQ(w.count(kT0 + 10 * kSec), 1u);
}

TEST(SlidingWindow, RoomAtIsWhenEnoughEntriesHaveLeft) {
  SlidingWindow w(10 * kSec);
  w.add(kT0, 400);
  w.add(kT0 + 2 * kSec, 400);
  w.add(kT0 + 3 * kSec, 200);
  // 1000 used. After the first entry leaves, 600 + 500 is still too much; after the second,
  // 200 + 500 fits.
  EXPECT_EQ(w.room_at(kT0 + 5 * kSec, 500, 1000), kT0 + 12 * kSec);
  EXPECT_EQ(w.room_at(kT0 + 5 * kSec, 0, 1000), kT0 + 5 * kSec);  // fits now
  // An oversize call waits for the window to empty entirely.
  EXPECT_EQ(w.room_at(kT0 + 5 * kSec, 5000, 1000), kT0 + 13 * kSec);
}

}  // namespace

// Wall-clock timestamps: RFC 3339 out (events, alerts) and in (Anthropic's resets), UTC for people.
#include "util/timefmt.h"

#include <gtest/gtest.h>

#include <limits>

using namespace ab::util;

TEST(Timefmt, Rfc3339) {
  // 2026-11-29T10:00:01.250Z
  int64_t t = 1'795'946'401'250'000'000;
  EXPECT_EQ(format_rfc3339(t), "2026-11-29T10:00:01.250Z");
  EXPECT_EQ(format_rfc3339(t, false), "2026-11-29T10:00:01Z");
  EXPECT_EQ(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339(-1'000'000), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(format_rfc3339(1'999'999), "1970-01-01T00:00:00.001Z");  // millis are cut, not rounded
  EXPECT_EQ(format_rfc3339(std::numeric_limits<int64_t>::max()), "2262-04-11T23:47:16.854Z");
  EXPECT_EQ(format_rfc3339(std::numeric_limits<int64_t>::min(), false), "1677-09-21T00:12:43Z");
}

TEST(Timefmt, UtcForPeople) {
  int64_t t = 1'795'946'401'250'000'000;
  EXPECT_EQ(format_utc(t, "%Y-%m-%d %H:%M:%S"), "2026-11-29 10:00:01");
  EXPECT_EQ(format_utc(t, "%m-%d %H:%M"), "11-29 10:00");
  EXPECT_EQ(format_utc(-1, "%Y-%m-%d %H:%M:%S"), "1969-12-31 23:59:59");
}

TEST(Timefmt, NowIsWallClock) {
  int64_t now = now_unix_ns();
  EXPECT_GT(now, 1'700'000'000 * kNsPerSec);  // after 2023
  EXPECT_LT(now, 4'000'000'000 * kNsPerSec);
}

TEST(Timefmt, ParseRfc3339) {
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T00:00:10Z"), 10'000'000'000);
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T00:00:10.25Z"), 10'250'000'000);
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T01:00:10+01:00"), 10'000'000'000);
  EXPECT_EQ(parse_rfc3339_ns("2026-12-01T04:00:00Z"), 1'796'097'600'000'000'000);
  EXPECT_EQ(parse_rfc3339_ns("tomorrow"), -1);
  // the round trip
  int64_t t = 1'795'946'401'250'000'000;
  EXPECT_EQ(parse_rfc3339_ns(format_rfc3339(t)), t);
}

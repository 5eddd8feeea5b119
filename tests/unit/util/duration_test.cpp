// Durations: the CLI's (--since, --interval), the policy's, Go's (OpenAI rate-limit resets),
// and the two renderings for people.
#include "util/duration.h"

#include <gtest/gtest.h>

#include <stdexcept>

using namespace ab::util;
using Millis = std::chrono::milliseconds;

namespace {
constexpr int64_t S = 1'000'000'000;
}

TEST(Duration, ParsesUnits) {
  EXPECT_EQ(parse_duration_ns("30s"), 30 * S);
  EXPECT_EQ(parse_duration_ns("10m"), 600 * S);
  EXPECT_EQ(parse_duration_ns("2h"), 7200 * S);
  EXPECT_EQ(parse_duration_ns("7d"), 7 * 86400 * S);
  EXPECT_EQ(parse_duration_ns("1w"), 7 * 86400 * S);
  EXPECT_EQ(parse_duration_ns("250ms"), 250'000'000);
  EXPECT_EQ(parse_duration_ns("1h30m"), 5400 * S);
  EXPECT_EQ(parse_duration_ns("0s"), 0);
}

TEST(Duration, RejectsGarbage) {
  for (const char* bad : {"", "30", "s", "-5m", "5 m", "5x", "1.5h", "m5", "5mm", "99999999999999999999s",
                          "9999999999999d", " 5m", "5m "})
    EXPECT_FALSE(parse_duration_ns(bad).has_value()) << bad;
  try {
    parse_duration_or_throw("5x");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'5x'"), std::string::npos);
  }
}

TEST(Duration, PolicyParseAndFormat) {
  EXPECT_EQ(parse_policy_duration("500ms"), Millis(500));
  EXPECT_EQ(parse_policy_duration("30s"), Millis(30'000));
  EXPECT_EQ(parse_policy_duration("10m"), Millis(600'000));
  EXPECT_EQ(parse_policy_duration("2h"), Millis(7'200'000));
  EXPECT_EQ(parse_policy_duration("7d"), Millis(604'800'000));
  EXPECT_EQ(parse_policy_duration("1h30m"), Millis(5'400'000));
  EXPECT_EQ(parse_policy_duration("0s"), Millis(0));
  for (const char* bad : {"", "30", "s", "-5s", "5 s", "5sec", "1.5h", "5S", "10w", "5s ", "m5"})
    EXPECT_FALSE(parse_policy_duration(bad)) << bad;
  EXPECT_FALSE(parse_policy_duration("99999999999999999d"));  // overflow is refused, not wrapped
  EXPECT_EQ(format_policy_duration(Millis(300'000)), "5m");
  EXPECT_EQ(format_policy_duration(Millis(90'000)), "90s");
  EXPECT_EQ(format_policy_duration(Millis(86'400'000)), "1d");
  EXPECT_EQ(format_policy_duration(Millis(1500)), "1500ms");
  EXPECT_EQ(format_policy_duration(Millis(0)), "0s");
  for (const char* s : {"500ms", "30s", "10m", "2h", "7d", "90m"})
    EXPECT_EQ(parse_policy_duration(format_policy_duration(*parse_policy_duration(s))), parse_policy_duration(s));
}

TEST(Duration, PolicyRangeIsMillisecondsUpTo2To53) {
  // beyond what parse_duration_ns holds in nanoseconds, still a policy duration
  EXPECT_EQ(parse_policy_duration("10000000000000ms"), Millis(10'000'000'000'000));
  EXPECT_FALSE(parse_duration_ns("10000000000000ms"));
  EXPECT_EQ(parse_policy_duration("9007199254740992ms"), Millis(int64_t(1) << 53));
  EXPECT_FALSE(parse_policy_duration("9007199254740993ms"));
  EXPECT_FALSE(parse_policy_duration("9007199254740s993ms"));  // the sum counts, not each part
}

TEST(Duration, GoDurations) {
  EXPECT_EQ(parse_go_duration_ns("1s"), 1'000'000'000);
  EXPECT_EQ(parse_go_duration_ns("20ms"), 20'000'000);
  EXPECT_EQ(parse_go_duration_ns("6m0s"), 360'000'000'000);
  EXPECT_EQ(parse_go_duration_ns("1h2m3.5s"), 3'723'500'000'000);
  EXPECT_EQ(parse_go_duration_ns("1.5s"), 1'500'000'000);
  EXPECT_EQ(parse_go_duration_ns("250us"), 250'000);
  EXPECT_EQ(parse_go_duration_ns("7"), 7'000'000'000);  // a bare number is seconds
  EXPECT_EQ(parse_go_duration_ns(""), -1);
  EXPECT_EQ(parse_go_duration_ns("soon"), -1);
  EXPECT_EQ(parse_go_duration_ns("3x"), -1);
}

TEST(Duration, ForPeople) {
  EXPECT_EQ(format_duration_short(42), "42s");
  EXPECT_EQ(format_duration_short(3 * 86400 + 4 * 3600 + 5), "3d 4h");
  EXPECT_EQ(format_duration_short(3725), "1h 2m");
  EXPECT_EQ(format_duration_short(303), "5m 3s");
  EXPECT_EQ(format_duration_short(-5), "0s");
  EXPECT_EQ(format_uptime(42), "42s");
  EXPECT_EQ(format_uptime(303), "5m 3s");
  EXPECT_EQ(format_uptime(3725), "1h 2m");
  EXPECT_EQ(format_uptime(3 * 86400 + 4 * 3600 + 5 * 60 + 6), "3d 4h 5m");
}

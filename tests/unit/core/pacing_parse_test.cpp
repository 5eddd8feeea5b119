// The header formats pacing reads: Go durations (OpenAI) and RFC 3339 times (Anthropic).
#include <gtest/gtest.h>

#include "core/daemon_impl.h"

namespace ab::core {

TEST(PacingParse, GoDurations) {
  EXPECT_EQ(parse_go_duration_ns("1s"), 1'000'000'000);
  EXPECT_EQ(parse_go_duration_ns("20ms"), 20'000'000);
  EXPECT_EQ(parse_go_duration_ns("6m0s"), 360'000'000'000);
  EXPECT_EQ(parse_go_duration_ns("1h2m3.5s"), 3'723'500'000'000);
  EXPECT_EQ(parse_go_duration_ns("1.5s"), 1'500'000'000);
  EXPECT_EQ(parse_go_duration_ns(""), -1);
  EXPECT_EQ(parse_go_duration_ns("soon"), -1);
  EXPECT_EQ(parse_go_duration_ns("3x"), -1);
}

TEST(PacingParse, Rfc3339) {
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T00:00:10Z"), 10'000'000'000);
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T00:00:10.25Z"), 10'250'000'000);
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T01:00:10+01:00"), 10'000'000'000);
  EXPECT_EQ(parse_rfc3339_ns("2026-12-01T04:00:00Z"), 1'796'097'600'000'000'000);
  EXPECT_EQ(parse_rfc3339_ns("tomorrow"), -1);
}

}  // namespace ab::core

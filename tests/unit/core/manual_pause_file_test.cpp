#include "core/manual_pause_file.h"

#include <gtest/gtest.h>

namespace ab::core {
namespace {

TEST(ManualPauseFile, CgroupNamesWithSeparatorsSurvive) {
  std::vector<ManualPauseRecord> in = {{true, "/my agent", 0}, {true, "/x\n/job", 0}, {false, "4242", 987654321}};
  const std::string text = format_manual_pauses(in);
  size_t bad = 99;
  auto out = parse_manual_pauses(text, &bad);
  EXPECT_EQ(bad, 0u);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(out[0].cgroup);
  EXPECT_EQ(out[0].target, "/my agent");
  EXPECT_EQ(out[1].target, "/x\n/job");  // the old `>>` reader saw "/x" then a record "/job"
  EXPECT_FALSE(out[2].cgroup);
  EXPECT_EQ(out[2].target, "4242");
  EXPECT_EQ(out[2].start_ns, 987654321u);
  // no record names a cgroup the user never paused
  for (const auto& r : out) EXPECT_NE(r.target, "/job");
}

TEST(ManualPauseFile, MalformedLinesAreSkippedAndCounted) {
  size_t bad = 0;
  auto out = parse_manual_pauses("cgroup /ok\npid notapid 5\npid 12\nbogus /a\ncgroup /bad%zz\n\npid 7 11\n", &bad);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].target, "/ok");
  EXPECT_EQ(out[1].target, "7");
  EXPECT_EQ(out[1].start_ns, 11u);
  EXPECT_EQ(bad, 4u);
}

TEST(ManualPauseFile, EmptyIsEmpty) {
  EXPECT_EQ(format_manual_pauses({}), "");
  EXPECT_TRUE(parse_manual_pauses("").empty());
}

}  // namespace
}  // namespace ab::core

// State-file records: any byte a cgroup name may hold survives a write and a read (L3: a cgroup
// with a space or a newline used to be thawed wrongly, or not at all, after a crash).
#include "util/state_line.h"

#include <gtest/gtest.h>

using namespace ab::util;

TEST(StateLine, PlainFieldsAreUnchanged) {
  EXPECT_EQ(state_line({"cgroup", "/agents/a.scope"}), "cgroup /agents/a.scope");
  auto f = parse_state_line("pid 1234 99887766");
  ASSERT_TRUE(f);
  EXPECT_EQ(*f, (std::vector<std::string>{"pid", "1234", "99887766"}));
}

TEST(StateLine, SeparatorsAndEscapesRoundTrip) {
  const std::vector<std::string> hostile = {"/a b", "/tab\there", "/new\nline", "/100%", "/cr\r", "/\x7f", "/é"};
  for (const auto& path : hostile) {
    std::string line = state_line({"cgroup", path});
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_EQ(line.find(' '), std::string("cgroup").size()) << line;  // the one separator
    auto f = parse_state_line(line);
    ASSERT_TRUE(f) << line;
    ASSERT_EQ(f->size(), 2u);
    EXPECT_EQ((*f)[1], path);
  }
  EXPECT_EQ(state_field("/a b%"), "/a%20b%25");
}

TEST(StateLine, MalformedLinesAreRejected) {
  EXPECT_FALSE(parse_state_line("cgroup /a%2"));
  EXPECT_FALSE(parse_state_line("cgroup /a%zz"));
  EXPECT_FALSE(parse_state_line("cgroup  /a"));   // empty field
  EXPECT_FALSE(parse_state_line("cgroup /a "));   // trailing separator
  EXPECT_FALSE(parse_state_line("cgroup /a\tb"));  // raw control byte
  auto empty = parse_state_line("");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

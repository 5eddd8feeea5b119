#include "util/faults.h"

#include <gtest/gtest.h>

using ab::util::parse_faults;

TEST(Faults, EmptySpecMeansNoFaults) {
  std::string err;
  auto f = parse_faults("", &err);
  ASSERT_TRUE(f);
  EXPECT_FALSE(f->any());
  EXPECT_EQ(f->describe(), "");
}

TEST(Faults, ParsesEverySwitch) {
  std::string err;
  auto f = parse_faults("attach_delay_ms=10,,attach_delay_ms=3000", &err);  // the last wins
  ASSERT_TRUE(f) << err;
  EXPECT_EQ(f->attach_delay_ms, 3000);
  EXPECT_TRUE(f->any());
  EXPECT_EQ(f->describe(), "attach_delay_ms=3000");
}

TEST(Faults, BadInputNamesWhatWasWrong) {
  std::string err;
  EXPECT_FALSE(parse_faults("attach_delay=5", &err));
  EXPECT_NE(err.find("unknown fault 'attach_delay'"), std::string::npos) << err;
  EXPECT_NE(err.find("attach_delay_ms"), std::string::npos) << err;
  EXPECT_FALSE(parse_faults("attach_delay_ms", &err));
  EXPECT_NE(err.find("expected key=value"), std::string::npos) << err;
  EXPECT_FALSE(parse_faults("attach_delay_ms=-1", &err));
  EXPECT_NE(err.find("'-1'"), std::string::npos) << err;
  EXPECT_FALSE(parse_faults("attach_delay_ms=12x", &err));
  EXPECT_FALSE(parse_faults("attach_delay_ms=999999999", &err));  // past the bound
}

TEST(Faults, EnvironmentIsReadOnce) {
  setenv("AGENTBRAKE_TEST_FAULTS", "attach_delay_ms=7", 1);
  std::string err;
  ASSERT_EQ(ab::util::init_faults_from_env(&err), 0) << err;
  EXPECT_EQ(ab::util::faults().attach_delay_ms, 7);
  setenv("AGENTBRAKE_TEST_FAULTS", "nonsense", 1);
  EXPECT_LT(ab::util::init_faults_from_env(&err), 0);
  EXPECT_EQ(ab::util::faults().attach_delay_ms, 7);  // a bad spec changes nothing
  unsetenv("AGENTBRAKE_TEST_FAULTS");
  ab::util::set_faults_for_test({});
}

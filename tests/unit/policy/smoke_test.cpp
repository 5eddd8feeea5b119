#include <gtest/gtest.h>
#include "policy/policy.h"
using namespace ab::policy;
TEST(PolicySmoke, BuiltinDefaultLoads) {
  auto r = load_builtin_default();
  for (auto& e : r.errors) ADD_FAILURE() << e;
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.policy->budgets.size(), 1u);
  std::cout << to_json(*r.policy).dump(2) << "\n";
}

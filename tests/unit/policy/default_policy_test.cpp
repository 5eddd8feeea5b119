// The built-in default policy and the shipped examples.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "policy/policy.h"

namespace fs = std::filesystem;
using namespace ab::policy;
using namespace std::chrono_literals;

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST(DefaultPolicy, EmbeddedCopyIsPoliciesDefaultYaml) {
  EXPECT_EQ(std::string(ab::embedded::kDefaultPolicy), slurp(fs::path(AB_SOURCE_DIR) / "policies/default.yaml"));
  EXPECT_EQ(std::string(ab::embedded::kPrices), slurp(fs::path(AB_SOURCE_DIR) / "policies/prices.yaml"));
}

TEST(DefaultPolicy, IsSaneForAFreshHost) {
  auto r = load_builtin_default();
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  ASSERT_TRUE(r.ok());
  const Policy& p = *r.policy;
  EXPECT_EQ(r.source, "builtin:default.yaml");
  EXPECT_EQ(p.source, "builtin:default.yaml");
  EXPECT_EQ(p.mode, Mode::Enforce);
  EXPECT_EQ(p.retention, Millis(30LL * 24 * 3600 * 1000));
  EXPECT_EQ(p.max_hold, Millis(5min));
  EXPECT_EQ(p.cooldown, Millis(30s));
  EXPECT_FALSE(p.metrics);
  EXPECT_FALSE(p.pacing.enabled);

  // Nothing gates by default: every budget and every loop detector only alerts.
  ASSERT_FALSE(p.budgets.empty());
  for (const Budget& b : p.budgets) {
    EXPECT_EQ(b.action, Action::Alert) << b.name;
    EXPECT_FALSE(gates(b.action));
    EXPECT_FALSE(b.limits.empty());
    for (const Limit& l : b.limits) EXPECT_EQ(l.kind, LimitKind::SpendUsd) << b.name;
  }
  for (const LoopRule* r : std::initializer_list<const LoopRule*>{&p.loops.ping_pong, &p.loops.repetition,
                                                                  &p.loops.fan_out, &p.loops.retry_storm}) {
    EXPECT_TRUE(r->enabled);
    EXPECT_EQ(r->action, Action::Alert);
    EXPECT_EQ(r->per, Per::Tree);
  }
  // Conservative thresholds: at least the detector defaults of docs/interface.md.
  EXPECT_GE(p.loops.ping_pong.max_round_trips, 10);
  EXPECT_GE(p.loops.repetition.max_repeats, 6);
  EXPECT_GE(p.loops.fan_out.max_concurrent, 16);
  EXPECT_GE(p.loops.retry_storm.max_errors, 20);
  EXPECT_EQ(p.loops.repetition.hamming, 3);
}

TEST(DefaultPolicy, DefaultLocationFallsBackToBuiltin) {
  auto r = load_default_location();
  if (fs::exists(kDefaultPolicyDir)) GTEST_SKIP() << kDefaultPolicyDir << " exists on this host";
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.source, "builtin:default.yaml");
}

TEST(DefaultPolicy, ShippedPoliciesAndExamplesAreValid) {
  fs::path root = fs::path(AB_SOURCE_DIR) / "policies";
  EXPECT_TRUE(validate_path((root / "default.yaml").string(), false).empty());
  size_t n = 0;
  for (const auto& de : fs::directory_iterator(root / "examples")) {
    if (de.path().extension() != ".yaml") continue;
    ++n;
    SCOPED_TRACE(de.path().string());
    auto errors = validate_path(de.path().string(), false);
    for (const auto& e : errors) ADD_FAILURE() << e;
  }
  EXPECT_GE(n, 3u);
  // The examples directory as a whole is a valid policy.d too (budget names do not clash).
  auto all = load_path((root / "examples").string(), false);
  for (const auto& e : all.errors) ADD_FAILURE() << e;
}

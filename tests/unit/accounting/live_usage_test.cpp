// LiveUsage: totals per entity and sliding 60 s rates, driven by a fake clock.
#include <gtest/gtest.h>

#include "accounting/live_usage.h"

using namespace ab::accounting;

namespace {

constexpr int64_t kSec = 1'000'000'000;

ab::LlmCall call(uint32_t pid, uint32_t root, std::string cgroup, std::string model, int64_t in, int64_t out,
                 double cost) {
  ab::LlmCall c;
  c.who.pid = pid;
  c.who.tree_root_pid = root;
  c.who.cgroup = std::move(cgroup);
  c.model = std::move(model);
  c.provider = "openai";
  c.api = "openai";
  c.status = 200;
  c.input_tokens = in;
  c.output_tokens = out;
  c.cost_usd = cost;
  return c;
}

// The fake clock: starts at an arbitrary point, moves only when told.
struct FakeClock {
  int64_t now = 1'700'000'000 * kSec;
  int64_t advance(double seconds) { return now += int64_t(seconds * kSec); }
};

}  // namespace

TEST(LiveUsage, OneCallCountsForFiveEntities) {
  LiveUsage u;
  FakeClock clk;
  auto c = call(4242, 4200, "/agents/a", "gpt-4o", 1000, 200, 0.01);
  c.cache_read_tokens = 300;
  u.record(c, clk.now);
  for (const EntityKey& k : {EntityKey::cgroup("/agents/a"), EntityKey::tree(4200), EntityKey::process(4242),
                             EntityKey::model("gpt-4o"), EntityKey::provider("openai")}) {
    SCOPED_TRACE(std::string(to_string(k.kind)) + " " + k.id);
    auto e = u.get(k, clk.now);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->totals.calls, 1u);
    EXPECT_EQ(e->totals.input_tokens, 1000);
    EXPECT_EQ(e->totals.output_tokens, 200);
    EXPECT_EQ(e->totals.cache_read_tokens, 300);
    EXPECT_EQ(e->totals.tokens(), 1200);
    EXPECT_DOUBLE_EQ(e->totals.cost_usd, 0.01);
    EXPECT_DOUBLE_EQ(e->tokens_per_min, 1200);
    EXPECT_DOUBLE_EQ(e->spend_per_min_usd, 0.01);
    EXPECT_EQ(e->last_model, "gpt-4o");
  }
  EXPECT_EQ(u.size(), 5u);
  EXPECT_FALSE(u.get(EntityKey::process(1), clk.now));
  EXPECT_EQ(u.tokens_per_min(EntityKey::process(1), clk.now), 0);
}

TEST(LiveUsage, SlidingWindowOfSixtySeconds) {
  LiveUsage u;
  FakeClock clk;
  const auto key = EntityKey::cgroup("/agents/a");
  int64_t t0 = clk.now;
  u.record(call(1, 1, "/agents/a", "m", 100, 0, 0.10), t0);             // t = 0 s
  u.record(call(1, 1, "/agents/a", "m", 200, 0, 0.20), clk.advance(20));  // t = 20 s
  u.record(call(1, 1, "/agents/a", "m", 400, 0, 0.40), clk.advance(20));  // t = 40 s

  EXPECT_DOUBLE_EQ(u.tokens_per_min(key, t0 + 40 * kSec), 700);
  EXPECT_DOUBLE_EQ(u.tokens_per_min(key, t0 + 59 * kSec), 700);
  // A sample leaves the window exactly 60 s after it was recorded: (now − 60 s, now].
  EXPECT_DOUBLE_EQ(u.tokens_per_min(key, t0 + 60 * kSec), 600);
  EXPECT_NEAR(u.spend_per_min_usd(key, t0 + 60 * kSec), 0.60, 1e-12);
  EXPECT_DOUBLE_EQ(u.tokens_per_min(key, t0 + 80 * kSec), 400);
  EXPECT_DOUBLE_EQ(u.tokens_per_min(key, t0 + 100 * kSec - 1), 400);
  EXPECT_DOUBLE_EQ(u.tokens_per_min(key, t0 + 100 * kSec), 0);
  auto e = u.get(key, t0 + 100 * kSec);
  EXPECT_EQ(e->calls_per_min, 0);
  // Totals never slide.
  EXPECT_EQ(e->totals.calls, 3u);
  EXPECT_EQ(e->totals.tokens(), 700);
  EXPECT_NEAR(e->totals.cost_usd, 0.70, 1e-12);
  EXPECT_EQ(e->totals.first_ns, t0);
  EXPECT_EQ(e->totals.last_ns, t0 + 40 * kSec);
  // Querying the past does not count calls recorded later.
  EXPECT_DOUBLE_EQ(u.tokens_per_min(key, t0 + 10 * kSec), 100);
}

TEST(LiveUsage, RecordingTrimsOldSamplesButKeepsTheRate) {
  LiveUsage u;
  FakeClock clk;
  const auto key = EntityKey::process(7);
  for (int i = 0; i < 600; ++i) u.record(call(7, 7, "/", "m", 10, 0, 0.001), clk.advance(1));  // 1 call/s
  auto e = u.get(key, clk.now);
  EXPECT_EQ(e->totals.calls, 600u);
  EXPECT_DOUBLE_EQ(e->tokens_per_min, 600);  // the last 60 calls
  EXPECT_DOUBLE_EQ(e->calls_per_min, 60);
  EXPECT_NEAR(e->spend_per_min_usd, 0.06, 1e-12);
}

TEST(LiveUsage, FlagsAndFallbacks) {
  LiveUsage u;
  FakeClock clk;
  auto est = call(5, 0, "", "", 10, 10, 0);
  est.estimated = true;
  est.price_known = false;
  est.status = 429;
  est.provider = "";
  u.record(est, clk.now);
  auto cut = call(5, 0, "", "", 1, 1, 0);
  cut.status = 0;
  u.record(cut, clk.now);
  // No tree root: the process is its own tree. No cgroup: "/". No model/provider: "unknown".
  auto tree = u.get(EntityKey::tree(5), clk.now);
  ASSERT_TRUE(tree);
  EXPECT_EQ(tree->totals.estimated_calls, 1u);
  EXPECT_EQ(tree->totals.unpriced_calls, 1u);
  EXPECT_EQ(tree->totals.error_calls, 2u);
  EXPECT_TRUE(u.get(EntityKey::cgroup("/"), clk.now));
  EXPECT_TRUE(u.get(EntityKey::model("unknown"), clk.now));
  EXPECT_TRUE(u.get(EntityKey::provider("unknown"), clk.now));
  EXPECT_EQ(u.get(EntityKey::provider("openai"), clk.now)->totals.calls, 1u);
}

TEST(LiveUsage, ListSortsByRateThenCost) {
  LiveUsage u;
  FakeClock clk;
  int64_t t0 = clk.now;
  u.record(call(1, 1, "/agents/old", "m", 100'000, 0, 5.0), t0);  // big, but long ago
  clk.advance(120);
  u.record(call(2, 2, "/agents/slow", "m", 100, 0, 0.001), clk.now);
  u.record(call(3, 3, "/agents/fast", "m", 5000, 0, 0.05), clk.now);
  auto rows = u.list(EntityKind::Cgroup, clk.now);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].key.id, "/agents/fast");
  EXPECT_EQ(rows[1].key.id, "/agents/slow");
  EXPECT_EQ(rows[2].key.id, "/agents/old");  // rate 0: after the active ones
  EXPECT_EQ(rows[2].tokens_per_min, 0);
  EXPECT_EQ(u.list(EntityKind::Model, clk.now).size(), 1u);
  EXPECT_EQ(u.list(EntityKind::Tree, clk.now).size(), 3u);
}

TEST(LiveUsage, ForgetAndExpire) {
  LiveUsage u;
  FakeClock clk;
  int64_t t0 = clk.now;
  u.record(call(1, 1, "/a", "m1", 1, 1, 0), t0);
  u.record(call(2, 2, "/b", "m2", 1, 1, 0), t0 + 600 * kSec);
  EXPECT_EQ(u.size(), 9u);  // /a, /b, tree 1 and 2, process 1 and 2, m1, m2, and the shared provider
  u.forget(EntityKey::process(2));
  EXPECT_FALSE(u.get(EntityKey::process(2), t0));
  // Idle for more than 5 minutes at t0 + 10 min: everything of call 1 only.
  size_t dropped = u.expire(t0 + 600 * kSec, 300 * kSec);
  EXPECT_EQ(dropped, 4u);  // /a, tree 1, process 1, m1
  EXPECT_FALSE(u.get(EntityKey::cgroup("/a"), t0 + 600 * kSec));
  EXPECT_TRUE(u.get(EntityKey::cgroup("/b"), t0 + 600 * kSec));
  EXPECT_TRUE(u.get(EntityKey::provider("openai"), t0 + 600 * kSec));
}

// BudgetEngine: admission, reservations, holds, episodes, reloads — all on a fake clock, with
// policies written in the policy language itself.
#include <gtest/gtest.h>

#include <cmath>

#include "brake/budget_engine.h"

using namespace ab::brake;
using ab::policy::Action;
using ab::policy::LimitKind;

namespace {

constexpr int64_t kSec = 1'000'000'000;

// The fake clock: starts at an arbitrary point, moves only when told.
struct FakeClock {
  int64_t now = 5'000 * kSec;
  int64_t advance(int64_t ns) { return now += ns; }
};

std::shared_ptr<const ab::policy::Policy> policy(const std::string& yaml) {
  auto r = ab::policy::load_text(yaml, "test.yaml");
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  return r.policy;
}

CallFacts call(std::string cgroup, int64_t tokens, uint32_t pid = 100, uint32_t root = 0, double cost = 0) {
  CallFacts c;
  c.pid = pid;
  c.tree_root_pid = root;
  c.facts.cgroup = std::move(cgroup);
  c.facts.exe = "/usr/bin/python3";
  c.facts.comm = "python3";
  c.facts.uid = 1000;
  c.est_input_tokens = tokens / 2;
  c.reserved_output_tokens = tokens - tokens / 2;
  c.est_cost_usd = cost;
  return c;
}

const BucketStatus* find_bucket(const Snapshot& s, const std::string& budget, const std::string& key) {
  for (const auto& b : s.buckets)
    if (b.id.budget == budget && b.id.key == key) return &b;
  return nullptr;
}

double level_of(const BudgetEngine& e, int64_t now, const std::string& budget, const std::string& key,
                size_t limit = 0) {
  Snapshot s = e.snapshot(now);
  const BucketStatus* b = find_bucket(s, budget, key);
  if (!b || limit >= b->limits.size()) {
    ADD_FAILURE() << "no bucket " << budget << " " << key;
    return -1;
  }
  return b->limits[limit].level;
}

const char* kOneMinute = R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    per: cgroup
    limits: [{tokens: 1000, window: 60s}]
    action: throttle
)";

// ---- windows, first burst, edges -------------------------------------------------------------

TEST(BudgetEngine, FirstBurstIsAdmittedUpToTheLimitThenHeld) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  for (int i = 0; i < 3; ++i) {
    Decision d = e.admit(call("/agents/a", 300), clock.now);
    EXPECT_TRUE(d.admitted) << i;
    EXPECT_NE(d.reservation_id, 0u);
    EXPECT_TRUE(d.exceeded.empty());
  }
  Decision d = e.admit(call("/agents/a", 300), clock.now);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.reservation_id, 0u);
  ASSERT_EQ(d.exceeded.size(), 1u);
  const Exceeded& x = d.exceeded[0];
  EXPECT_EQ(x.bucket.budget, "agents");
  EXPECT_EQ(x.bucket.key, "cgroup:/agents/a");
  EXPECT_EQ(x.reason, Exceeded::Reason::Window);
  EXPECT_EQ(x.kind, LimitKind::Tokens);
  EXPECT_EQ(x.window_ns, 60 * kSec);
  EXPECT_DOUBLE_EQ(x.limit, 1000);
  EXPECT_DOUBLE_EQ(x.level, 900);
  EXPECT_DOUBLE_EQ(x.requested, 300);
  EXPECT_EQ(d.strongest_action(), Action::Throttle);
  // A smaller call still fits in what is left: the limit is on tokens, not calls.
  EXPECT_TRUE(e.admit(call("/agents/a", 100), clock.now).admitted);
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a"), 1000);
}

TEST(BudgetEngine, RoomComesBackExactlyOneWindowAfterAdmission) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  const int64_t t0 = clock.now;
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), t0).admitted);
  EXPECT_FALSE(e.admit(call("/agents/a", 1), t0 + 60 * kSec - 1).admitted);
  EXPECT_TRUE(e.admit(call("/agents/a", 1000), t0 + 60 * kSec).admitted);
}

TEST(BudgetEngine, OversizeCallGoesAloneInAnEmptyWindowOnly) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  ASSERT_TRUE(e.admit(call("/agents/a", 5000), clock.now).admitted);
  EXPECT_FALSE(e.admit(call("/agents/a", 1), clock.advance(30 * kSec)).admitted);
  clock.advance(30 * kSec);  // the big call leaves the window
  EXPECT_TRUE(e.admit(call("/agents/a", 5000), clock.now).admitted);
  // An oversize call is never squeezed in next to others.
  BudgetEngine f(policy(kOneMinute));
  ASSERT_TRUE(f.admit(call("/agents/b", 10), clock.now).admitted);
  EXPECT_FALSE(f.admit(call("/agents/b", 5000), clock.now).admitted);
}

// ---- reservations ------------------------------------------------------------------------------

TEST(BudgetEngine, SettlingSmallerGivesTheDifferenceBack) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  Decision first = e.admit(call("/agents/a", 800), clock.now);
  ASSERT_TRUE(first.admitted);
  EXPECT_FALSE(e.admit(call("/agents/a", 800), clock.now).admitted);
  EXPECT_TRUE(e.settle(first.reservation_id, 150, 0.0, clock.advance(kSec)));
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a"), 150);
  EXPECT_TRUE(e.admit(call("/agents/a", 800), clock.now).admitted);
  EXPECT_FALSE(e.settle(first.reservation_id, 1, 0.0, clock.now)) << "settled twice";
}

TEST(BudgetEngine, SettlingLargerCountsTheRealUsageAtAdmissionTime) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  const int64_t t0 = clock.now;
  Decision d = e.admit(call("/agents/a", 100), t0);
  ASSERT_TRUE(d.admitted);
  ASSERT_TRUE(e.settle(d.reservation_id, 1500, 0.0, t0 + 20 * kSec));
  // Over the limit by this one call ("give or take one call"): nothing else goes out…
  EXPECT_DOUBLE_EQ(level_of(e, t0 + 20 * kSec, "agents", "cgroup:/agents/a"), 1500);
  EXPECT_FALSE(e.admit(call("/agents/a", 1), t0 + 20 * kSec).admitted);
  // …until the call leaves the window, counted from its admission, not its settlement.
  EXPECT_TRUE(e.admit(call("/agents/a", 1), t0 + 60 * kSec).admitted);
}

TEST(BudgetEngine, SettlingAnUnknownAmountKeepsTheReservation) {
  // A malformed response (negative counts, a NaN price): what was reserved stays counted, so a
  // hostile server never gives a bucket room back (it did: -999,997,440 tokens let 4 of 4
  // further calls through a 1500-token budget).
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    per: cgroup
    limits: [{tokens: 1000, window: 60s}, {spend_usd: 1.0, window: 60s}]
    action: throttle
)"));
  Decision d = e.admit(call("/agents/a", 800, 100, 0, 0.7), clock.now);
  ASSERT_TRUE(d.admitted);
  ASSERT_TRUE(e.settle(d.reservation_id, -1, std::nan(""), clock.advance(kSec)));
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a", 0), 800);
  EXPECT_NEAR(level_of(e, clock.now, "agents", "cgroup:/agents/a", 1), 0.7, 1e-9);
  EXPECT_FALSE(e.admit(call("/agents/a", 800), clock.now).admitted);
  EXPECT_EQ(e.snapshot(clock.now).reservations, 0u) << "settled: no longer in flight";
  Decision n = e.admit(call("/agents/a", 100, 100, 0, 0.1), clock.now);
  ASSERT_TRUE(n.admitted);
  ASSERT_TRUE(e.settle(n.reservation_id, 50, -3.0, clock.now));  // tokens known, the price not
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a", 0), 850);
  EXPECT_NEAR(level_of(e, clock.now, "agents", "cgroup:/agents/a", 1), 0.8, 1e-9);
}

TEST(BudgetEngine, CancelWithdrawsTheReservation) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  Decision d = e.admit(call("/agents/a", 900), clock.now);
  ASSERT_TRUE(d.admitted);
  EXPECT_TRUE(e.cancel(d.reservation_id));
  EXPECT_FALSE(e.cancel(d.reservation_id));
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a"), 0);
  EXPECT_EQ(e.snapshot(clock.now).reservations, 0u);
}

TEST(BudgetEngine, RequestsCountOnePerCallAndSpendCountsUsd) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: calls
    match: {cgroup: "/agents"}
    requests_per_minute: 2
  - name: money
    match: {cgroup: "/agents"}
    limits: [{spend_usd: 1.0, window: 10m}]
)"));
  Decision a = e.admit(call("/agents", 1, 100, 0, 0.4), clock.now);
  Decision b = e.admit(call("/agents", 100000, 100, 0, 0.4), clock.now);
  ASSERT_TRUE(a.admitted && b.admitted);
  Decision c = e.admit(call("/agents", 1, 100, 0, 0.1), clock.now);
  ASSERT_FALSE(c.admitted);
  ASSERT_EQ(c.exceeded.size(), 1u);
  EXPECT_EQ(c.exceeded[0].bucket.budget, "calls");
  EXPECT_EQ(c.exceeded[0].kind, LimitKind::Requests);
  // Settling the spend lower frees USD room; the request count does not change.
  ASSERT_TRUE(e.settle(a.reservation_id, 1, 0.05, clock.now));
  clock.advance(60 * kSec);
  Decision d = e.admit(call("/agents", 1, 100, 0, 0.55), clock.now);
  EXPECT_TRUE(d.admitted);  // 0.05 + 0.4 + 0.55 = 1.0
  Decision f = e.admit(call("/agents", 1, 100, 0, 0.01), clock.now);
  ASSERT_FALSE(f.admitted);
  ASSERT_EQ(f.exceeded.size(), 1u);
  EXPECT_EQ(f.exceeded[0].kind, LimitKind::SpendUsd);
  EXPECT_NEAR(f.exceeded[0].level, 1.0, 1e-9);
}

// ---- which buckets -----------------------------------------------------------------------------

TEST(BudgetEngine, NestedBucketsMustAllHaveRoom) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: each
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 1000, window: 60s}]
  - name: all
    match: {cgroup: "/agents"}
    limits: [{tokens: 1500, window: 60s}]
)"));
  Decision a = e.admit(call("/agents/a/worker", 900), clock.now);
  ASSERT_TRUE(a.admitted);
  ASSERT_EQ(a.buckets.size(), 2u);
  EXPECT_EQ(a.buckets[0].id.key, "cgroup:/agents/a");
  EXPECT_EQ(a.buckets[1].id.key, "cgroup:/agents");
  ASSERT_TRUE(e.admit(call("/agents/b", 500), clock.now).admitted);
  // b's own bucket has room (700 ≤ 1000) but all of /agents does not (1600 > 1500).
  Decision b = e.admit(call("/agents/b", 200), clock.now);
  EXPECT_FALSE(b.admitted);
  ASSERT_EQ(b.exceeded.size(), 1u);
  EXPECT_EQ(b.exceeded[0].bucket.budget, "all");
  EXPECT_DOUBLE_EQ(b.exceeded[0].level, 1400);
  // A refused call is counted nowhere.
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "each", "cgroup:/agents/b"), 500);
  // a's own bucket is the one that blocks a: 900 + 200 > 1000.
  Decision c = e.admit(call("/agents/a", 200), clock.now);
  ASSERT_FALSE(c.admitted);
  EXPECT_EQ(c.exceeded.front().bucket.budget, "each");
}

TEST(BudgetEngine, BucketKeysPerCgroupTreeAndProcess) {
  BudgetEngine e(policy(R"(
budgets:
  - name: by_cgroup
    match: {cgroup: "/agents/*"}
    per: cgroup
    tokens_per_minute: 100
  - name: by_tree
    match: {comm: "python3"}
    per: tree
    tokens_per_minute: 100
  - name: by_process
    match: {uid: 1000}
    per: process
    tokens_per_minute: 100
)"));
  auto keys = [&](const CallFacts& c) {
    std::vector<std::string> out;
    for (const BucketRef& r : e.buckets_of(c)) out.push_back(r.id.key);
    return out;
  };
  EXPECT_EQ(keys(call("/agents/a/x", 1, 11, 10)),
            (std::vector<std::string>{"cgroup:/agents/a", "tree:10", "process:11"}));
  EXPECT_EQ(keys(call("/agents/a", 1, 12, 10)),
            (std::vector<std::string>{"cgroup:/agents/a", "tree:10", "process:12"}));
  // Its own tree root; a cgroup no budget selects.
  EXPECT_EQ(keys(call("/other", 1, 10, 0)), (std::vector<std::string>{"tree:10", "process:10"}));

  // Two processes of one tree share the tree bucket but not their process buckets.
  FakeClock clock;
  ASSERT_TRUE(e.admit(call("/other", 80, 11, 10), clock.now).admitted);
  Decision d = e.admit(call("/other", 80, 12, 10), clock.now);
  ASSERT_FALSE(d.admitted);
  ASSERT_EQ(d.exceeded.size(), 1u);
  EXPECT_EQ(d.exceeded[0].bucket.key, "tree:10");
  EXPECT_TRUE(e.admit(call("/other", 80, 21, 20), clock.now).admitted) << "another tree";
}

TEST(BudgetEngine, UnmatchedCallFallsInNoBucketAndIsAdmitted) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  Decision d = e.admit(call("/system.slice/cron", 1'000'000), clock.now);
  EXPECT_TRUE(d.admitted);
  EXPECT_TRUE(d.buckets.empty());
  EXPECT_TRUE(e.snapshot(clock.now).buckets.empty());
}

// ---- in flight ---------------------------------------------------------------------------------

TEST(BudgetEngine, MaxInflightCountsCallsUntilSettledOrCancelled) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    max_inflight: 2
)"));
  Decision a = e.admit(call("/agents/a", 10), clock.now);
  Decision b = e.admit(call("/agents/a", 10), clock.now);
  ASSERT_TRUE(a.admitted && b.admitted);
  Decision c = e.admit(call("/agents/a", 10), clock.now);
  ASSERT_FALSE(c.admitted);
  ASSERT_EQ(c.exceeded.size(), 1u);
  EXPECT_EQ(c.exceeded[0].reason, Exceeded::Reason::Inflight);
  EXPECT_DOUBLE_EQ(c.exceeded[0].level, 2);
  EXPECT_DOUBLE_EQ(c.exceeded[0].limit, 2);
  EXPECT_TRUE(e.admit(call("/agents/b", 10), clock.now).admitted) << "another bucket";
  EXPECT_EQ(find_bucket(e.snapshot(clock.now), "agents", "cgroup:/agents/a")->inflight, 2);

  ASSERT_TRUE(e.settle(a.reservation_id, 10, 0, clock.now));
  Decision d = e.admit(call("/agents/a", 10), clock.now);
  EXPECT_TRUE(d.admitted);
  EXPECT_FALSE(e.admit(call("/agents/a", 10), clock.now).admitted);
  ASSERT_TRUE(e.cancel(d.reservation_id));
  EXPECT_TRUE(e.admit(call("/agents/a", 10), clock.now).admitted);
}

// ---- the hold queue ----------------------------------------------------------------------------

const char* kTenSeconds = R"(
max_hold: 30s
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 1000, window: 10s}]
)";

TEST(BudgetEngine, HeldCallsAreReleasedOldestFirstAndNeverOvertaken) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  const int64_t t0 = clock.now;
  ASSERT_TRUE(e.admit(call("/agents/a", 600), t0).admitted);
  ASSERT_TRUE(e.admit(call("/agents/a", 400), t0 + 5 * kSec).admitted);

  CallFacts big = call("/agents/a", 900, 101);
  CallFacts small = call("/agents/a", 100, 102);
  ASSERT_FALSE(e.admit(big, t0 + 6 * kSec).admitted);
  uint64_t big_hold = e.hold(101, 7001, big, t0 + 6 * kSec);
  ASSERT_FALSE(e.admit(small, t0 + 7 * kSec).admitted);
  uint64_t small_hold = e.hold(102, 7002, small, t0 + 7 * kSec);
  EXPECT_NE(big_hold, small_hold);
  EXPECT_EQ(e.held_count(), 2u);

  // At 10 s the first 600 left: 400 + 100 would fit, 400 + 900 would not. The small call
  // must not jump the big one.
  EXPECT_TRUE(e.release_ready(t0 + 10 * kSec).empty());
  EXPECT_EQ(e.held_count(), 2u);
  // A new call in the same bucket queues behind them too, though there is room for it.
  Decision late = e.admit(call("/agents/a", 50, 103), t0 + 10 * kSec);
  ASSERT_FALSE(late.admitted);
  ASSERT_EQ(late.exceeded.size(), 1u);
  EXPECT_EQ(late.exceeded[0].reason, Exceeded::Reason::Queue);
  EXPECT_FALSE(late.exceeded[0].new_episode);

  // At 15 s the window is empty: both go, in order, and are counted.
  std::vector<Released> out = e.release_ready(t0 + 15 * kSec);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].held.hold_id, big_hold);
  EXPECT_EQ(out[0].held.pid, 101u);
  EXPECT_EQ(out[0].held.start_time, 7001u);
  EXPECT_EQ(out[1].held.hold_id, small_hold);
  EXPECT_TRUE(out[0].decision.admitted && out[1].decision.admitted);
  EXPECT_NE(out[0].decision.reservation_id, 0u);
  EXPECT_EQ(e.held_count(), 0u);
  EXPECT_DOUBLE_EQ(level_of(e, t0 + 15 * kSec, "agents", "cgroup:/agents/a"), 1000);
}

TEST(BudgetEngine, HeldCallDoesNotHoldUpOtherBuckets) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), clock.now).admitted);
  e.hold(101, 1, call("/agents/a", 500, 101), clock.now);
  EXPECT_TRUE(e.admit(call("/agents/b", 500, 201), clock.now).admitted);
  EXPECT_TRUE(e.release_ready(clock.now).empty());
}

TEST(BudgetEngine, SettlementReleasesACallHeldForInflight) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    max_inflight: 1
)"));
  Decision a = e.admit(call("/agents/a", 10), clock.now);
  ASSERT_TRUE(a.admitted);
  ASSERT_FALSE(e.admit(call("/agents/a", 10, 101), clock.now).admitted);
  e.hold(101, 1, call("/agents/a", 10, 101), clock.now);
  EXPECT_TRUE(e.release_ready(clock.now).empty());
  EXPECT_FALSE(e.next_wakeup_ns(clock.now) == std::optional<int64_t>{}) << "max_hold deadline";
  ASSERT_TRUE(e.settle(a.reservation_id, 10, 0, clock.advance(kSec)));
  auto out = e.release_ready(clock.now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].held.pid, 101u);
  EXPECT_EQ(find_bucket(e.snapshot(clock.now), "agents", "cgroup:/agents/a")->inflight, 1);
}

TEST(BudgetEngine, HoldLongerThanMaxHoldExpiresWithItsAction) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  const int64_t t0 = clock.now;
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), t0).admitted);
  e.hold(101, 1, call("/agents/a", 5000, 101), t0);
  e.hold(102, 2, call("/agents/a", 10, 102), t0 + 5 * kSec);
  EXPECT_TRUE(e.expired(t0 + 30 * kSec - 1).empty());
  std::vector<Expired> out = e.expired(t0 + 30 * kSec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].held.pid, 101u);
  EXPECT_EQ(out[0].held_ns, 30 * kSec);
  EXPECT_EQ(out[0].action, Action::Throttle);
  ASSERT_EQ(out[0].gating.size(), 1u);
  EXPECT_EQ(out[0].gating[0].id.key, "cgroup:/agents/a");
  EXPECT_EQ(e.held_count(), 1u);
  EXPECT_EQ(e.expired(t0 + 35 * kSec).size(), 1u);
  EXPECT_EQ(e.held_count(), 0u);
}

TEST(BudgetEngine, NextWakeupIsWhenTheHeadCallFits) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  const int64_t t0 = clock.now;
  EXPECT_FALSE(e.next_wakeup_ns(t0).has_value()) << "nothing held, nothing to wake for";
  ASSERT_TRUE(e.admit(call("/agents/a", 700), t0).admitted);
  ASSERT_TRUE(e.admit(call("/agents/a", 300), t0 + 2 * kSec).admitted);
  e.hold(101, 1, call("/agents/a", 500, 101), t0 + 3 * kSec);
  // The 700 leaves at 10 s, then 300 + 500 fits; max_hold would be 33 s.
  EXPECT_EQ(e.next_wakeup_ns(t0 + 3 * kSec), t0 + 10 * kSec);
  EXPECT_EQ(e.release_ready(t0 + 10 * kSec).size(), 1u);
}

TEST(BudgetEngine, DropHeldForgetsAnExitedProcess) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  e.hold(101, 1, call("/agents/a", 5, 101), clock.now);
  e.hold(101, 2, call("/agents/a", 5, 101), clock.now);  // pid reused by a later process
  e.hold(102, 3, call("/agents/a", 5, 102), clock.now);
  EXPECT_EQ(e.drop_held(101, 1), 1u);
  EXPECT_EQ(e.drop_held(101), 1u);
  ASSERT_EQ(e.held().size(), 1u);
  EXPECT_EQ(e.held()[0].pid, 102u);
}

// ---- episodes, cooldown, actions ---------------------------------------------------------------

TEST(BudgetEngine, EpisodeOpensOnceAndEndsWhenThereIsRoomAgain) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  const int64_t t0 = clock.now;
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), t0).admitted);
  Decision first = e.admit(call("/agents/a", 10), t0 + kSec);
  ASSERT_EQ(first.exceeded.size(), 1u);
  EXPECT_TRUE(first.exceeded[0].new_episode);
  EXPECT_TRUE(first.any_new_episode());
  for (int i = 2; i < 5; ++i) {
    Decision again = e.admit(call("/agents/a", 10), t0 + i * kSec);
    ASSERT_EQ(again.exceeded.size(), 1u);
    EXPECT_FALSE(again.exceeded[0].new_episode) << i;
  }
  EXPECT_TRUE(find_bucket(e.snapshot(t0 + 5 * kSec), "agents", "cgroup:/agents/a")->in_episode);
  // Room again: the episode ends with the call that fits …
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), t0 + 10 * kSec).admitted);
  EXPECT_FALSE(find_bucket(e.snapshot(t0 + 10 * kSec), "agents", "cgroup:/agents/a")->in_episode);
  // … and the next time it is full, that is a new episode.
  EXPECT_TRUE(e.admit(call("/agents/a", 10), t0 + 11 * kSec).any_new_episode());
}

TEST(BudgetEngine, CooldownSpacesActionsPerEntity) {
  FakeClock clock;
  BudgetEngine e(policy("cooldown: 30s\n"));
  const int64_t t0 = clock.now;
  EXPECT_TRUE(e.action_allowed("cgroup:/agents/a", t0));
  e.note_action("cgroup:/agents/a", t0);
  EXPECT_FALSE(e.action_allowed("cgroup:/agents/a", t0 + 30 * kSec - 1));
  EXPECT_TRUE(e.action_allowed("cgroup:/agents/b", t0)) << "per entity";
  EXPECT_TRUE(e.action_allowed("cgroup:/agents/a", t0 + 30 * kSec));
}

TEST(BudgetEngine, StrongestActionAmongBlockingBuckets) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: soft
    match: {cgroup: "/agents/*"}
    tokens_per_minute: 100
    action: throttle
  - name: hard
    match: {cgroup: "/agents"}
    tokens_per_minute: 100
    action: kill
)"));
  ASSERT_TRUE(e.admit(call("/agents/a", 100), clock.now).admitted);
  Decision d = e.admit(call("/agents/a", 1), clock.now);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.blocking().size(), 2u);
  EXPECT_EQ(d.strongest_action(), Action::Kill);
}

TEST(BudgetEngine, AlertBudgetReportsButNeverBlocks) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: watch
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 100, window: 60s}]
    max_inflight: 1
    action: alert
)"));
  ASSERT_TRUE(e.admit(call("/agents/a", 80), clock.now).admitted);
  Decision d = e.admit(call("/agents/a", 80), clock.now);
  EXPECT_TRUE(d.admitted);
  EXPECT_FALSE(d.dry_run);
  ASSERT_EQ(d.exceeded.size(), 2u);  // tokens and in flight
  EXPECT_FALSE(d.exceeded[0].gates());
  EXPECT_TRUE(d.exceeded[0].new_episode);
  EXPECT_FALSE(d.exceeded[1].new_episode) << "one episode per bucket, not per limit";
  EXPECT_TRUE(d.blocking().empty());
  EXPECT_FALSE(d.strongest_action().has_value());
  // Counted all the same.
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "watch", "cgroup:/agents/a"), 160);
}

TEST(BudgetEngine, AlertBucketNestedInAGatingOneOnlyReports) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: watch
    match: {cgroup: "/agents/*"}
    tokens_per_minute: 100
    action: alert
  - name: cap
    match: {cgroup: "/agents"}
    tokens_per_minute: 1000
)"));
  ASSERT_TRUE(e.admit(call("/agents/a", 100), clock.now).admitted);
  Decision d = e.admit(call("/agents/a", 100), clock.now);
  EXPECT_TRUE(d.admitted);
  ASSERT_EQ(d.exceeded.size(), 1u);
  EXPECT_EQ(d.exceeded[0].bucket.budget, "watch");
}

TEST(BudgetEngine, ForceAdmitCountsWhateverTheBuckets) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), clock.now).admitted);
  Decision d = e.force_admit(call("/agents/a", 500), clock.now);
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(d.blocking().size(), 1u) << "still says what it passes";
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a"), 1500);
}

// ---- dry run -----------------------------------------------------------------------------------

TEST(BudgetEngine, ObserveModeDecidesButAdmits) {
  FakeClock clock;
  BudgetEngine e(policy(std::string("mode: observe\n") + kOneMinute));
  EXPECT_TRUE(e.dry_run());
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), clock.now).admitted);
  Decision d = e.admit(call("/agents/a", 300), clock.now);
  EXPECT_TRUE(d.admitted);
  EXPECT_TRUE(d.dry_run);
  ASSERT_EQ(d.blocking().size(), 1u);
  EXPECT_TRUE(d.blocking()[0].new_episode);
  EXPECT_EQ(d.strongest_action(), Action::Throttle);
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a"), 1300);
}

TEST(BudgetEngine, DryRunFlagOverridesEnforceMode) {
  FakeClock clock;
  BudgetEngine e(policy(kOneMinute));
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), clock.now).admitted);
  EXPECT_FALSE(e.admit(call("/agents/a", 1), clock.now).admitted);
  e.set_dry_run(true);
  Decision d = e.admit(call("/agents/a", 1), clock.now);
  EXPECT_TRUE(d.admitted && d.dry_run);
  EXPECT_TRUE(e.snapshot(clock.now).dry_run);
  e.set_dry_run(false);
  EXPECT_FALSE(e.admit(call("/agents/a", 1), clock.now).admitted);
}

// ---- reload ------------------------------------------------------------------------------------

TEST(BudgetEngine, ReloadKeepsLevelsOfLimitsThatStillExist) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 1000, window: 60s}, {requests: 5, window: 30s}]
    max_inflight: 4
  - name: gone
    match: {cgroup: "/agents/*"}
    tokens_per_minute: 100000
)"));
  Decision a = e.admit(call("/agents/a", 900), clock.now);
  ASSERT_TRUE(a.admitted);

  // Larger token limit over the same window; the requests window changes; "gone" is gone.
  e.set_policy(policy(R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    limits: [{requests: 5, window: 10s}, {tokens: 2000, window: 60s}]
    max_inflight: 4
)"));
  Snapshot s = e.snapshot(clock.now);
  ASSERT_EQ(s.buckets.size(), 1u);
  const BucketStatus* b = find_bucket(s, "agents", "cgroup:/agents/a");
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->limits.size(), 2u);
  EXPECT_DOUBLE_EQ(b->limits[0].level, 0) << "a new window starts empty";
  EXPECT_DOUBLE_EQ(b->limits[1].level, 900) << "same kind and window: level kept";
  EXPECT_EQ(b->inflight, 1);
  EXPECT_TRUE(e.admit(call("/agents/a", 1100), clock.now).admitted);
  EXPECT_FALSE(e.admit(call("/agents/a", 1), clock.now).admitted);
  // A reservation made before the reload still settles.
  EXPECT_TRUE(e.settle(a.reservation_id, 100, 0, clock.now));
  EXPECT_DOUBLE_EQ(level_of(e, clock.now, "agents", "cgroup:/agents/a", 1), 1200);
}

TEST(BudgetEngine, ReloadReleasesHeldCallsTheNewPolicyAllows) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), clock.now).admitted);
  e.hold(101, 1, call("/agents/a", 500, 101), clock.now);
  e.set_policy(policy(R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 2000, window: 10s}]
)"));
  EXPECT_EQ(e.release_ready(clock.now).size(), 1u);
}

// ---- restore and upkeep ------------------------------------------------------------------------

TEST(BudgetEngine, RestoreSeedsWindowsFromHistory) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    tokens_per_minute: 1000
    spend_per_day_usd: 10
)"));
  const int64_t now = clock.now;
  ab::policy::ProcessFacts facts;
  facts.cgroup = "/agents/a";
  e.restore({
                {now - 30 * kSec, 100, 0, facts, 800, 1.0},
                {now - 2 * 3600 * kSec, 100, 0, facts, 50'000, 8.5},  // outside the minute, inside the day
                {now - 2 * 86400 * kSec, 100, 0, facts, 50'000, 100.0},  // outside both
            },
            now);
  EXPECT_DOUBLE_EQ(level_of(e, now, "agents", "cgroup:/agents/a", 0), 800);
  EXPECT_DOUBLE_EQ(level_of(e, now, "agents", "cgroup:/agents/a", 1), 9.5);
  EXPECT_FALSE(e.admit(call("/agents/a", 300, 100, 0, 0.1), now).admitted);
  EXPECT_TRUE(e.admit(call("/agents/a", 300, 100, 0, 0.1), now + 30 * kSec).admitted);
  Decision d = e.admit(call("/agents/a", 1, 100, 0, 1.0), now + 30 * kSec);
  ASSERT_FALSE(d.admitted);
  EXPECT_EQ(d.exceeded[0].kind, LimitKind::SpendUsd);
  EXPECT_EQ(e.snapshot(now).reservations, 1u) << "history is never in flight";
}

TEST(BudgetEngine, ForgetIdleDropsEmptyBucketsOnly) {
  FakeClock clock;
  BudgetEngine e(policy(kTenSeconds));
  const int64_t t0 = clock.now;
  Decision a = e.admit(call("/agents/a", 10), t0);
  ASSERT_TRUE(e.settle(a.reservation_id, 10, 0, t0));
  Decision b = e.admit(call("/agents/b", 10), t0);  // still in flight
  ASSERT_TRUE(b.admitted);
  e.note_action("x", t0);
  EXPECT_EQ(e.forget_idle(t0 + 5 * kSec), 0u);
  EXPECT_EQ(e.forget_idle(t0 + 10 * kSec), 1u);
  Snapshot s = e.snapshot(t0 + 10 * kSec);
  ASSERT_EQ(s.buckets.size(), 1u);
  EXPECT_EQ(s.buckets[0].id.key, "cgroup:/agents/b");
  EXPECT_TRUE(e.action_allowed("x", t0 + 30 * kSec));
}

TEST(BudgetEngine, SnapshotShowsLevelsInflightAndHeld) {
  FakeClock clock;
  BudgetEngine e(policy(R"(
max_hold: 1m
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    tokens_per_minute: 1000
    requests_per_minute: 10
    max_inflight: 3
)"));
  ASSERT_TRUE(e.admit(call("/agents/a", 1000), clock.now).admitted);
  e.hold(101, 1, call("/agents/a", 10, 101), clock.now);
  Snapshot s = e.snapshot(clock.now);
  EXPECT_EQ(s.held, 1u);
  EXPECT_EQ(s.reservations, 1u);
  EXPECT_FALSE(s.dry_run);
  const BucketStatus* b = find_bucket(s, "agents", "cgroup:/agents/a");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->action, Action::Throttle);
  EXPECT_EQ(b->max_inflight, 3);
  EXPECT_EQ(b->inflight, 1);
  EXPECT_EQ(b->held, 1u);
  ASSERT_EQ(b->limits.size(), 2u);
  EXPECT_EQ(b->limits[0].origin, "tokens_per_minute");
  EXPECT_DOUBLE_EQ(b->limits[0].level, 1000);
  EXPECT_EQ(b->limits[1].kind, LimitKind::Requests);
  EXPECT_DOUBLE_EQ(b->limits[1].level, 1);
  EXPECT_EQ(b->limits[1].window_ns, 60 * kSec);
}

}  // namespace

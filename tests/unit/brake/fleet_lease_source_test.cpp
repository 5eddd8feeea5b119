// The engine's seam for `scope: fleet` budgets: a fleet bucket's room is the LeaseSource's
// allowance, every charge and settlement reaches it; host budgets never ask it.
#include <gtest/gtest.h>

#include "brake/budget_engine.h"

using namespace ab::brake;

namespace {

constexpr int64_t kSec = 1'000'000'000;

std::shared_ptr<const ab::policy::Policy> policy(const std::string& yaml) {
  auto r = ab::policy::load_text(yaml, "test.yaml");
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  return r.policy;
}

CallFacts call(int64_t tokens, std::string cgroup = "/agents/a") {
  CallFacts c;
  c.pid = 100;
  c.facts.cgroup = std::move(cgroup);
  c.facts.comm = "agent";
  c.est_input_tokens = tokens;
  return c;
}

// Records what the engine tells it; answers what the test sets.
struct RecordingLeases : LeaseSource {
  Allowance next;
  std::vector<std::string> log;
  double charged = 0, settled = 0;
  Allowance allowance(const FleetLimitRef& ref, double need, int64_t) override {
    log.push_back("allowance " + ref.bucket->key + " " + std::to_string(static_cast<int>(need)));
    return next;
  }
  void charge(const FleetLimitRef&, double amount, int64_t) override { charged += amount; log.push_back("charge"); }
  std::vector<std::string> ended;  // "settle|cancel budget limit_index amount" per limit
  void settle(const FleetLimitRef& ref, double reserved, double actual, int64_t) override {
    ended.push_back("settle " + ref.bucket->budget + " " + std::to_string(ref.limit_index) + " " +
                    std::to_string(static_cast<int>(actual)));
    charged -= reserved;
    settled += actual;
    log.push_back("settle");
  }
  void cancel(const FleetLimitRef& ref, double reserved, int64_t) override {
    ended.push_back("cancel " + ref.bucket->budget + " " + std::to_string(ref.limit_index) + " " +
                    std::to_string(static_cast<int>(reserved)));
    charged -= reserved;
    log.push_back("cancel");
  }
};

const char* kPolicy = R"(
fleet: {redis: "redis://127.0.0.1:1", host_id: h1}
budgets:
  - name: shared
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 1000, window: 10s}]
    scope: fleet
  - name: local
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 100000, window: 10s}]
)";

}  // namespace

TEST(FleetLeaseSource, LeasedRoomDecidesAndChargesReachTheSource) {
  BudgetEngine e(policy(kPolicy));
  RecordingLeases leases;
  e.set_lease_source(&leases);
  const int64_t now = 100 * kSec;
  leases.next.kind = Allowance::Kind::Lease;
  leases.next.room = 300;
  Decision d = e.admit(call(200), now);
  ASSERT_TRUE(d.admitted);
  EXPECT_EQ(leases.charged, 200);
  // Only the fleet budget asked, with the bucket key every host shares.
  ASSERT_FALSE(leases.log.empty());
  EXPECT_EQ(leases.log.front(), "allowance cgroup:/agents/a 200");

  leases.next.room = 100;  // the source answers what is left of the lease
  Decision held = e.admit(call(200), now);
  EXPECT_FALSE(held.admitted);
  ASSERT_EQ(held.blocking().size(), 1u);
  EXPECT_EQ(held.blocking()[0].bucket.budget, "shared");

  EXPECT_TRUE(e.settle(d.reservation_id, 150, 0, now + kSec));
  EXPECT_EQ(leases.charged, 0);
  EXPECT_EQ(leases.settled, 150);

  leases.next.room = 1000;
  Decision c = e.admit(call(10), now);
  ASSERT_TRUE(c.admitted);
  EXPECT_TRUE(e.cancel(c.reservation_id));
  EXPECT_EQ(leases.charged, 0);
}

TEST(FleetLeaseSource, ALocalShareIsCheckedAgainstThisHostsWindow) {
  BudgetEngine e(policy(kPolicy));
  RecordingLeases leases;
  e.set_lease_source(&leases);
  const int64_t now = 100 * kSec;
  leases.next.kind = Allowance::Kind::Share;
  leases.next.share = 500;  // 1000 / 2 hosts
  EXPECT_TRUE(e.admit(call(300), now).admitted);
  Decision d = e.admit(call(300), now);
  EXPECT_FALSE(d.admitted);
  ASSERT_EQ(d.blocking().size(), 1u);
  EXPECT_EQ(d.blocking()[0].limit, 500);
  // The share frees up like a window: one window later.
  EXPECT_EQ(e.next_wakeup_ns(now), std::nullopt);  // nothing held yet
  e.hold(100, 1, call(300), now);
  EXPECT_EQ(e.next_wakeup_ns(now), now + 10 * kSec);
}

TEST(FleetLeaseSource, ClosedHoldsAndOpenOnlyAlerts) {
  BudgetEngine e(policy(kPolicy));
  RecordingLeases leases;
  e.set_lease_source(&leases);
  const int64_t now = 100 * kSec;
  leases.next.kind = Allowance::Kind::Closed;
  Decision closed = e.admit(call(1), now);
  EXPECT_FALSE(closed.admitted);

  leases.next.kind = Allowance::Kind::Share;
  leases.next.share = 10;
  leases.next.gates = false;  // fail: open
  ASSERT_TRUE(e.admit(call(8), now).admitted);
  Decision open = e.admit(call(50), now);
  EXPECT_TRUE(open.admitted);
  ASSERT_EQ(open.exceeded.size(), 1u);
  EXPECT_EQ(open.exceeded[0].action, ab::policy::Action::Alert);
  EXPECT_TRUE(open.exceeded[0].new_episode);  // budget_exceeded is still recorded
}

TEST(FleetLeaseSource, WithoutASourceAFleetBudgetCountsLikeAHostOne) {
  BudgetEngine e(policy(kPolicy));
  const int64_t now = 100 * kSec;
  EXPECT_TRUE(e.admit(call(900), now).admitted);
  EXPECT_FALSE(e.admit(call(200), now).admitted);
}

TEST(FleetLeaseSource, EveryFleetLimitOfEveryBucketIsSettledOrCancelledOnce) {
  // A host budget first, then two fleet budgets of two limits each: the ends of a reservation
  // reach the source once per fleet limit, with that limit's amount, whatever the order.
  BudgetEngine e(policy(R"(
fleet: {redis: "redis://127.0.0.1:1", host_id: h1}
budgets:
  - name: host
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 100000, window: 10s}]
  - name: fa
    match: {cgroup: "/agents/*"}
    limits: [{tokens: 100000, window: 10s}, {requests: 100, window: 10s}]
    scope: fleet
  - name: fb
    match: {cgroup: "/agents/*"}
    limits: [{requests: 50, window: 60s}, {tokens: 200000, window: 60s}]
    scope: fleet
)"));
  RecordingLeases leases;
  leases.next.kind = Allowance::Kind::Lease;
  leases.next.room = 1e9;
  e.set_lease_source(&leases);
  const int64_t now = 100 * kSec;
  Decision d = e.admit(call(300), now);
  ASSERT_TRUE(d.admitted);
  EXPECT_EQ(leases.charged, 300 + 1 + 1 + 300);
  ASSERT_TRUE(e.settle(d.reservation_id, 120, 0, now + kSec));
  EXPECT_EQ(leases.ended, (std::vector<std::string>{"settle fa 0 120", "settle fa 1 1", "settle fb 0 1",
                                                     "settle fb 1 120"}));
  EXPECT_EQ(leases.charged, 0);
  EXPECT_FALSE(e.settle(d.reservation_id, 120, 0, now + kSec)) << "settled once";

  leases.ended.clear();
  Decision c = e.admit(call(40), now);
  ASSERT_TRUE(c.admitted);
  ASSERT_TRUE(e.cancel(c.reservation_id));
  EXPECT_EQ(leases.ended, (std::vector<std::string>{"cancel fa 0 40", "cancel fa 1 1", "cancel fb 0 1",
                                                     "cancel fb 1 40"}));
  EXPECT_EQ(leases.charged, 0);
}

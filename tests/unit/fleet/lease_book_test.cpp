// LeaseBook: the lease arithmetic on this host, with the store's answers written by the test.
#include <gtest/gtest.h>

#include "fleet/lease_book.h"

using namespace ab::fleet;
using ab::brake::Allowance;
using ab::brake::BucketId;
using ab::brake::FleetLimitRef;

namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000 * kMs;

ab::policy::Fleet fleet(ab::policy::FleetFail fail = ab::policy::FleetFail::Local) {
  ab::policy::Fleet f;
  f.redis = "redis://127.0.0.1:6379";
  f.host = "127.0.0.1";
  f.host_id = "h1";
  f.fail = fail;
  return f;
}

struct Fixture {
  BucketId bucket{"shared", "cgroup:/agents/a"};
  ab::policy::Limit limit{ab::policy::LimitKind::Requests, 20, std::chrono::seconds(10), "limits[0]", {}};
  FleetLimitRef ref() const { return {&bucket, 0, &limit}; }
};

Reply answer(const Request& r, double granted, double my_lease, int64_t hosts = 2) {
  Reply a;
  a.seq = r.seq;
  a.key = r.key;
  a.ok = true;
  a.granted = granted;
  a.my_lease = my_lease;
  a.hosts_seen = hosts;
  return a;
}

}  // namespace

TEST(LeaseBook, TheKeyIsTheSameOnEveryHost) {
  Fixture f;
  EXPECT_EQ(limit_key(f.bucket, f.limit), "shared|cgroup:/agents/a|requests|10000");
}

TEST(LeaseBook, NothingIsAdmittedBeforeALeaseAndADemandAsksForOne) {
  Fixture f;
  LeaseBook book(fleet());
  int64_t now = 1000 * kSec;
  book.heartbeat(true, 2, "", now);
  Allowance a = book.allowance(f.ref(), 1, now);
  EXPECT_EQ(a.kind, Allowance::Kind::Lease);
  EXPECT_EQ(a.room, 0);
  auto reqs = book.poll(now);
  ASSERT_EQ(reqs.size(), 1u);
  // chunk = 20 / (2 hosts * 4 chunks) = 2.5, whole: 3
  EXPECT_EQ(reqs[0].want, 3);
  EXPECT_EQ(reqs[0].limit, 20);
  EXPECT_EQ(reqs[0].window_ms, 10'000);
  EXPECT_EQ(reqs[0].sub_ms, 500);
  EXPECT_TRUE(book.poll(now).empty());  // one request per limit at a time
  EXPECT_TRUE(book.apply(answer(reqs[0], 3, 3), now + kMs));
  EXPECT_EQ(book.allowance(f.ref(), 1, now + kMs).room, 3);
}

TEST(LeaseBook, ChargesAndSettlementsUseTheLeaseAndAreReported) {
  Fixture f;
  LeaseBook book(fleet());
  int64_t now = 1000 * kSec;
  book.heartbeat(true, 1, "", now);
  book.allowance(f.ref(), 1, now);
  auto reqs = book.poll(now);
  ASSERT_EQ(reqs.size(), 1u);
  book.apply(answer(reqs[0], 5, 5, 1), now);
  for (int i = 0; i < 3; ++i) book.charge(f.ref(), 1, now);
  EXPECT_EQ(book.allowance(f.ref(), 1, now).room, 2);
  book.settle(f.ref(), 1, 1, now);
  book.cancel(f.ref(), 1, now);  // a request that never left gives its credit back
  EXPECT_EQ(book.allowance(f.ref(), 1, now).room, 3);
  // Room 3 < chunk 5 / 2? no: nothing to ask yet until the report interval.
  now += 600 * kMs;
  reqs = book.poll(now);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].report, 1);  // the one settled call
  EXPECT_EQ(reqs[0].want, 0);
  // While it is in flight the reported use still counts against the lease.
  EXPECT_EQ(book.allowance(f.ref(), 1, now).room, 3);
  book.apply(answer(reqs[0], 0, 4, 1), now);  // the store: lease 5 - 1 reported
  EXPECT_EQ(book.allowance(f.ref(), 1, now).room, 3);  // 4 leased - 1 in flight
}

TEST(LeaseBook, RefillsBeforeTheLeaseRunsOut) {
  Fixture f;
  LeaseBook book(fleet());
  int64_t now = 1000 * kSec;
  book.heartbeat(true, 1, "", now);
  book.allowance(f.ref(), 1, now);
  auto reqs = book.poll(now);
  book.apply(answer(reqs[0], 5, 5, 1), now);
  for (int i = 0; i < 3; ++i) book.charge(f.ref(), 1, now);
  reqs = book.poll(now);  // room 2 < chunk 5 / 2 = 2.5
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].want, 5);
}

TEST(LeaseBook, UnusedCreditGoesBackWhenIdle) {
  Fixture f;
  LeaseBook book(fleet());
  int64_t now = 1000 * kSec;
  book.heartbeat(true, 1, "", now);
  book.allowance(f.ref(), 1, now);
  auto reqs = book.poll(now);
  book.apply(answer(reqs[0], 5, 5, 1), now);
  book.charge(f.ref(), 1, now);
  book.settle(f.ref(), 1, 1, now);
  now += 2100 * kMs;  // idle longer than idle_return (2 s), the lease still valid (2.25 s)
  reqs = book.poll(now);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].report, 1);
  EXPECT_EQ(reqs[0].give_back, 4);  // 5 leased - 1 used
  EXPECT_EQ(reqs[0].want, 0);
}

TEST(LeaseBook, DegradedLocalIsAShareOfTheHostsSeenAndReconcilesOnReturn) {
  Fixture f;
  LeaseBook book(fleet(ab::policy::FleetFail::Local));
  int64_t now = 1000 * kSec;
  book.heartbeat(true, 2, "", now);
  book.allowance(f.ref(), 1, now);
  auto reqs = book.poll(now);
  book.apply(answer(reqs[0], 3, 3), now);
  book.charge(f.ref(), 1, now);
  book.settle(f.ref(), 1, 1, now);

  EXPECT_TRUE(book.heartbeat(false, 0, "cannot connect", now + kSec));
  auto t = book.take_transitions();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_TRUE(t[0].degraded);
  EXPECT_EQ(t[0].hosts_seen, 2);
  EXPECT_EQ(t[0].error, "cannot connect");
  Allowance a = book.allowance(f.ref(), 1, now + kSec);
  EXPECT_EQ(a.kind, Allowance::Kind::Share);
  EXPECT_EQ(a.share, 10);  // 20 / 2 hosts
  EXPECT_TRUE(a.gates);
  EXPECT_TRUE(book.poll(now + kSec).empty());  // nothing is sent while apart

  book.charge(f.ref(), 1, now + 2 * kSec);
  book.settle(f.ref(), 1, 1, now + 2 * kSec);
  EXPECT_TRUE(book.heartbeat(true, 2, "", now + 3 * kSec));
  t = book.take_transitions();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_FALSE(t[0].degraded);
  // Both settled calls (one before, one during) were never reported: both are reconciled.
  ASSERT_EQ(t[0].reconciled.size(), 1u);
  EXPECT_EQ(t[0].reconciled.begin()->second, 2);
  reqs = book.poll(now + 3 * kSec);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].report, 2);
}

TEST(LeaseBook, DegradedClosedHoldsAndOpenAlerts) {
  Fixture f;
  {
    LeaseBook book(fleet(ab::policy::FleetFail::Closed));
    book.heartbeat(false, 0, "down", 0);
    EXPECT_EQ(book.allowance(f.ref(), 1, 0).kind, Allowance::Kind::Closed);
  }
  {
    LeaseBook book(fleet(ab::policy::FleetFail::Open));
    book.heartbeat(false, 0, "down", 0);
    Allowance a = book.allowance(f.ref(), 1, 0);
    EXPECT_EQ(a.kind, Allowance::Kind::Share);
    EXPECT_FALSE(a.gates);
  }
}

TEST(LeaseBook, AFailedRequestKeepsItsReportAndDegrades) {
  Fixture f;
  LeaseBook book(fleet());
  int64_t now = 1000 * kSec;
  book.heartbeat(true, 1, "", now);
  book.allowance(f.ref(), 1, now);
  auto reqs = book.poll(now);
  book.apply(answer(reqs[0], 5, 5, 1), now);
  book.charge(f.ref(), 1, now);
  book.settle(f.ref(), 1, 1, now);
  now += kSec;
  reqs = book.poll(now);
  ASSERT_EQ(reqs.size(), 1u);
  ASSERT_EQ(reqs[0].report, 1);
  Reply failed;
  failed.seq = reqs[0].seq;
  failed.key = reqs[0].key;
  failed.error = "lost the connection";
  book.apply(failed, now);
  EXPECT_TRUE(book.degraded());
  EXPECT_EQ(book.find(reqs[0].key)->settled, 1);  // still to be reported
}

TEST(LeaseBook, StatusNamesStateHostsAndEachLimit) {
  Fixture f;
  LeaseBook book(fleet());
  book.heartbeat(true, 2, "", 0);
  book.allowance(f.ref(), 1, 0);
  auto j = book.status_json(0);
  EXPECT_EQ(j["state"], "connected");
  EXPECT_EQ(j["hosts_seen"], 2);
  EXPECT_EQ(j["host_id"], "h1");
  ASSERT_EQ(j["limits"].size(), 1u);
  EXPECT_EQ(j["limits"][0]["budget"], "shared");
  EXPECT_EQ(j["limits"][0]["kind"], "requests");
}

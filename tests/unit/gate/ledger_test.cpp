// The gate's ledger on a fake clock: release order, places of fan-out entities (the races CI
// found: 48f72e0, 049ab87, 5f8ebde, ee699dd), max_hold for every kind of hold, joined holds,
// paused/resumed records, dry run.
#include <gtest/gtest.h>

#include "gate_test_util.h"

using namespace ab::gate;
using namespace ab::gate::testing;
using ab::policy::Action;
using Taken = HoldReport::Taken;

namespace {

const char* kTwoRequestsPerMinute = R"(
max_hold: 10m
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    per: cgroup
    requests_per_minute: 2
    action: throttle
)";

std::string fan_out(int max_concurrent, const char* action = "throttle", const char* extra = "") {
  return std::string("max_hold: 10m\ncooldown: 1s\n") + extra + "loops:\n  fan_out: {max_concurrent: " +
         std::to_string(max_concurrent) + ", action: " + action + "}\n";
}

const EntityKey kTree100 = EntityKey::of_tree(100);

}  // namespace

// ---- release order ---------------------------------------------------------------------------

TEST(Ledger, BudgetHoldsAreLetGoOldestFirst) {
  Bench b(kTwoRequestsPerMinute);
  for (uint32_t pid : {101u, 102u, 103u}) b.attach(pid, pid);
  b.seen(101);
  b.seen(102);  // two requests in the minute: the window is full
  b.ended(101);
  b.ended(102);
  EXPECT_EQ(b.credits(101), 0);
  EXPECT_EQ(b.credits(102), 0);
  EXPECT_EQ(b.credits(103), 0);
  for (uint32_t pid : {103u, 101u, 102u}) {  // held in this order
    b.clock.advance(kSec);
    b.held(pid);
    ASSERT_TRUE(b.ledger.hold_of(pid)) << pid;
    EXPECT_EQ(b.ledger.hold_of(pid)->reason, HoldReason::Budget);
  }
  EXPECT_EQ(b.ledger.counter(Counter::BudgetHolds), 3u);
  b.clock.advance(61 * kSec);  // the first two requests leave the window: room for two
  auto out = b.tick();
  EXPECT_EQ(released_pids(out), (std::vector<uint32_t>{103, 101}));
  EXPECT_TRUE(b.ledger.hold_of(102));
}

TEST(Ledger, FanOutHoldsAreLetGoOldestFirst) {
  Bench b(fan_out(1));
  for (uint32_t pid : {101u, 102u, 103u}) b.attach(pid, 100);
  EXPECT_EQ(b.credits(101), 1);  // the one place
  EXPECT_EQ(b.credits(102), 0);
  b.seen(101);
  b.clock.advance(kSec);
  b.held(103);
  b.clock.advance(kSec);
  b.held(102);
  EXPECT_EQ(b.ledger.hold_of(103)->reason, HoldReason::FanOut);
  EXPECT_EQ(b.ledger.hold_of(102)->reason, HoldReason::FanOut);
  EXPECT_EQ(released_pids(b.ended(101)), std::vector<uint32_t>{103});  // the oldest, alone
  EXPECT_TRUE(b.ledger.hold_of(102));
  b.seen(103);
  EXPECT_EQ(released_pids(b.ended(103)), std::vector<uint32_t>{102});
}

// ---- places ----------------------------------------------------------------------------------

// 48f72e0: a credit once written is not dealt again while the kernel may be using it. Taken back
// from a running process (a loop pause), it keeps its place for the grace; a credit the kernel
// took (it found none at a later hold) keeps its place until its request is seen.
TEST(Ledger, CreditNeverReDealtWhileTheKernelMayBeUsingIt) {
  Bench b(fan_out(1));
  b.attach(101, 100);
  b.attach(102, 100);
  ASSERT_EQ(b.credits(101), 1);
  ASSERT_EQ(b.credits(102), 0);
  // 101 is paced: its credit is taken back at once, but a request start may be passing on it.
  auto out = b.apply(b.ledger.pace({101, b.clock.now + 5 * kSec, HoldReason::Loop, "repetition", Action::Throttle, {}},
                                   b.clock.now));
  EXPECT_EQ(all_of<WriteCredit>(out).size(), 1u);
  EXPECT_EQ(b.credits(101), 0);
  b.clock.advance(100 * kMs);
  b.tick();
  EXPECT_EQ(b.credits(102), 0) << "the place was dealt again while the kernel may be using it";
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0);
  b.clock.advance(2 * kSec);  // past the grace: no request came on it
  b.tick();
  EXPECT_EQ(b.credits(102), 1);

  // 102 passes a request start on its credit (not seen yet), and its next one finds none.
  b.clock.advance(10 * kMs);
  b.held(102);
  EXPECT_EQ(b.credits(102), 0);
  EXPECT_EQ(b.ledger.hold_of(102)->reason, HoldReason::FanOut) << "its unseen request has the place";
  b.clock.advance(3 * kSec);  // 101's pause is over
  b.tick();
  EXPECT_EQ(b.credits(101), 0);
  b.seen(102);  // the request that took the credit
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0);
  EXPECT_EQ(b.credits(101), 0);
  EXPECT_EQ(released_pids(b.ended(102)), std::vector<uint32_t>{102});
  EXPECT_EQ(b.credits(101), 0) << "the released request has the place";
}

// A credit written after the kernel found none was not taken: it is simply taken back.
TEST(Ledger, CreditWrittenAfterTheKernelLookedIsNotCountedAsTaken) {
  Bench b(fan_out(2));
  b.attach(101, 100);
  ASSERT_EQ(b.credits(101), 1);
  HoldReport h{101, 1101, false, Taken::Stopped, b.clock.now - kMs};  // held before that write
  b.apply(b.ledger.hold_reported(h, b.clock.now));
  EXPECT_EQ(b.credits(101), 0);
  EXPECT_EQ(b.ledger.hold_of(101), std::nullopt) << "room: let go at once";
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 1) << "one place: its released request";
}

// 5f8ebde + 049ab87: a request let go at a release takes a place until it is seen, whatever
// let it go (here the fan-out room and the budget queue), and a process busy with a call (in
// flight, or let go and unseen) gets no credit on top.
TEST(Ledger, ReleasedRequestHoldsAPlaceUntilSeenAndABusyProcessGetsNoCredit) {
  Bench b(fan_out(2));
  for (uint32_t pid : {101u, 102u, 103u}) b.attach(pid, 100);
  b.seen(101);
  b.seen(102);
  b.held(103);
  ASSERT_EQ(b.ledger.hold_of(103)->reason, HoldReason::FanOut);
  EXPECT_EQ(released_pids(b.ended(101)), std::vector<uint32_t>{103});
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0) << "102 in flight, 103 let go";
  EXPECT_EQ(b.credits(101), 0);
  b.ended(102);
  EXPECT_EQ(b.credits(101), 1);  // the place 102 gave back
  EXPECT_EQ(b.credits(102), 0);
  EXPECT_EQ(b.credits(103), 0) << "released and unseen: busy, no second place";
  b.seen(103);
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0);
  EXPECT_EQ(b.credits(102), 0);
}

// 049ab87: a released worker also got a credit, two places each (an honest batch found full).
TEST(Ledger, ReleasedWorkerGetsNoCreditOnTopOfItsRelease) {
  Bench b(fan_out(2));
  b.attach(102, 100);
  b.attach(103, 100);
  b.attach(101, 100);
  b.seen(102);
  b.seen(103);
  b.held(101);
  EXPECT_EQ(released_pids(b.ended(102)), std::vector<uint32_t>{101});
  b.ended(103);  // one place free
  EXPECT_EQ(b.credits(101), 0) << "released, its request unseen: it has its place";
  EXPECT_EQ(b.credits(102), 1);
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0);
}

TEST(Ledger, BudgetReleaseTakesAFanOutPlaceToo) {
  Bench b(R"(
max_hold: 10m
budgets:
  - {name: one, match: {cgroup: "/agents/*"}, per: cgroup, requests_per_minute: 1, action: throttle}
loops:
  fan_out: {max_concurrent: 2, action: throttle}
)");
  b.attach(101, 100);
  b.attach(102, 100);
  b.seen(101);  // in flight for the whole test
  b.held(102);
  ASSERT_EQ(b.ledger.hold_of(102)->reason, HoldReason::Budget);
  b.attach(103, 100);
  b.clock.advance(61 * kSec);  // the budget has room again: 102 goes
  auto out = b.tick();
  EXPECT_EQ(released_pids(out), std::vector<uint32_t>{102});
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0);
  EXPECT_EQ(b.credits(103), 0) << "102's released request has the second place";
}

// Six workers under max_concurrent 8, each starting its next request right after its last
// response, before the daemon dealt it a credit for it: fed in the order the ring delivers
// them (the response end before the hold), no hold ever finds the entity full, and the credit
// dealt at the response end is not mistaken for one the kernel took.
TEST(Ledger, HonestBatchUnderTheLimitIsNeverFull) {
  Bench b(fan_out(8, "kill"));
  const std::vector<uint32_t> workers{101, 102, 103, 104, 105, 106};
  for (uint32_t w : workers) b.attach(w, 100);
  for (uint32_t w : workers) b.seen(w, 1);
  for (int round = 2; round < 6; round++) {
    for (uint32_t w : workers) {
      const int64_t held_at = b.clock.now;  // in the kernel: response read, next start held
      b.clock.advance(kMs);                 // the daemon reads both: the response end first
      b.ended(w, round - 1);
      b.held(w, Taken::Stopped, false, held_at);
    }
    for (uint32_t w : workers) b.seen(w, round);
    EXPECT_LE(8 - b.ledger.fan_out_room(kTree100, b.clock.now), 6) << round;
  }
  EXPECT_TRUE(records_of<FanOutHeld>(b.effects.applied).empty());
  EXPECT_TRUE(all_of<Kill>(b.effects.applied).empty());
  EXPECT_EQ(b.ledger.holds(), 0u);
}

// ee699dd: the kernel turns a capture hold being let go (SIGCONT sent, record not yet deleted)
// into the budget hold of a request start without credit. The gate is written before the
// capture hold is let go, and the hold that follows is a gate hold like any other.
TEST(Ledger, RequestStartWhileItsCaptureHoldIsLetGoBecomesAGateHold) {
  Bench b(fan_out(1));
  b.attach(102, 100);
  b.seen(102);  // the entity's one place
  auto out = b.held(101, Taken::Stopped, /*capture=*/true);
  ASSERT_EQ(all_of<Hold>(out).size(), 1u);
  EXPECT_EQ(all_of<Hold>(out)[0].reason, HoldReason::Capture);
  EXPECT_EQ(b.ledger.capture_holds(), 1u);
  out = b.attach(101, 100);
  const int credit = index_of(out, [](const Effect& e) {
    auto* w = std::get_if<WriteCredit>(&e);
    return w && w->pid == 101 && w->credits == 0;
  });
  const int release = index_of(out, [](const Effect& e) {
    auto* r = std::get_if<Release>(&e);
    return r && r->pid == 101 && r->reason == HoldReason::Capture;
  });
  ASSERT_GE(credit, 0);
  ASSERT_GE(release, 0);
  EXPECT_LT(credit, release) << "its gate must be there when its first request starts";
  EXPECT_EQ(b.ledger.capture_holds(), 0u);
  // Its first request start, in the gap: the kernel's record is now the gate hold's.
  b.clock.advance(2 * kMs);
  out = b.held(101);
  ASSERT_TRUE(b.ledger.hold_of(101));
  EXPECT_EQ(b.ledger.hold_of(101)->reason, HoldReason::FanOut);
  EXPECT_EQ(all_of<Hold>(out).size(), 1u) << "its record is kept (restored if it went)";
  out = b.ended(102);
  ASSERT_EQ(all_of<Release>(out).size(), 1u);
  EXPECT_EQ(all_of<Release>(out)[0].reason, HoldReason::FanOut);
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0) << "counted, never an uncounted 5th call";
}

// The same report while the ledger still counts the capture hold: one hold ends, the other
// begins, nothing is let go in between.
TEST(Ledger, CaptureHoldTurnedIntoAGateHoldIsNotLetGoTwice) {
  Bench b(fan_out(1));
  b.attach(102, 100);
  b.seen(102);
  b.held(101, Taken::Stopped, true);
  b.attach(101, 100);
  b.clock.advance(61 * kSec);          // its capture holds are recorded once a minute
  b.held(101, Taken::Stopped, true);  // a second capture report (a reconnect) is a new capture hold
  ASSERT_EQ(b.ledger.capture_holds(), 1u);
  auto out = b.held(101);
  EXPECT_EQ(b.ledger.capture_holds(), 0u);
  EXPECT_TRUE(all_of<Release>(out).empty());
  auto resumed = records_of<Resumed>(out);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].reason, HoldReason::Capture);
  EXPECT_EQ(resumed[0].end, HoldEnd::BecameBudgetHold);
  EXPECT_EQ(b.ledger.hold_of(101)->reason, HoldReason::FanOut);
  out = b.tick();
  EXPECT_TRUE(all_of<Release>(out).empty());
}

// ---- joins -----------------------------------------------------------------------------------

// A second thread reaching a request start while its process is held waits in that hold and
// goes with it: the release takes a place for each, so max_concurrent holds.
TEST(Ledger, JoinedRequestIsCountedSoMaxConcurrentHolds) {
  Bench b(fan_out(2));
  b.attach(102, 100);
  b.attach(103, 100);
  b.attach(101, 100);
  b.seen(102);
  b.seen(103);
  b.held(101);
  b.held(101, Taken::Joined);
  EXPECT_EQ(b.ledger.hold_of(101)->waiting, 2);
  EXPECT_EQ(b.ledger.counter(Counter::HoldsJoined), 1u);
  EXPECT_TRUE(released_pids(b.ended(102)).empty()) << "one place is not enough for two requests";
  EXPECT_EQ(b.credits(102), 0) << "a new credit does not overtake the held calls";
  EXPECT_EQ(released_pids(b.ended(103)), std::vector<uint32_t>{101});
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0);
  b.seen(101, 1);
  b.seen(101, 2);
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 0);
  EXPECT_EQ(b.credits(102), 0);
  EXPECT_EQ(b.credits(103), 0);
  b.ended(101, 1);
  EXPECT_EQ(b.credits(102), 1);
}

TEST(Ledger, JoinWithoutAKnownHoldIsCounted) {
  Bench b(fan_out(2));
  b.attach(101, 100);
  auto out = b.held(101, Taken::Joined);
  EXPECT_FALSE(b.ledger.hold_of(101));
  EXPECT_EQ(b.ledger.counter(Counter::JoinsWithoutHold), 1u);
  EXPECT_TRUE(all_of<Hold>(out).empty());
}

// ---- max_hold --------------------------------------------------------------------------------

TEST(Ledger, MaxHoldEndsEveryKindOfHoldWithAnEscalation) {
  Bench b(R"(
max_hold: 10s
budgets:
  - {name: b, match: {cgroup: "/agents/b"}, per: cgroup, requests_per_minute: 1, action: throttle}
loops:
  fan_out: {max_concurrent: 1, action: throttle}
)");
  b.attach(201, 201, "/agents/b");  // budget
  b.seen(201);
  b.ended(201);
  b.held(201);
  b.attach(301, 300, "/agents/c");  // fan-out
  b.attach(302, 300, "/agents/c");
  b.seen(301);
  b.held(302);
  b.attach(401, 401, "/agents/c");  // loop
  b.apply(b.ledger.pace({401, b.clock.now + 3600 * kSec, HoldReason::Loop, "repetition", Action::Throttle, {}}, b.clock.now));
  b.held(401);
  b.attach(501, 501, "/agents/c");  // pacing
  b.apply(b.ledger.pace({501, b.clock.now + 3600 * kSec, HoldReason::Pacing, "", Action::Throttle, {}}, b.clock.now));
  b.held(501);
  ASSERT_EQ(b.ledger.hold_of(201)->reason, HoldReason::Budget);
  ASSERT_EQ(b.ledger.hold_of(302)->reason, HoldReason::FanOut);
  ASSERT_EQ(b.ledger.hold_of(401)->reason, HoldReason::Loop);
  ASSERT_EQ(b.ledger.hold_of(501)->reason, HoldReason::Pacing);

  b.clock.advance(10 * kSec - 1);
  EXPECT_TRUE(released_pids(b.tick()).empty());
  b.clock.advance(1);
  auto out = b.tick();
  EXPECT_EQ(released_pids(out), (std::vector<uint32_t>{201, 302, 401, 501}));
  auto resumed = records_of<Resumed>(out);
  ASSERT_EQ(resumed.size(), 4u);
  for (const auto& r : resumed) {
    EXPECT_EQ(r.end, HoldEnd::MaxHold) << to_string(r.reason);
    EXPECT_EQ(r.escalation, Action::Throttle) << to_string(r.reason);
    EXPECT_EQ(r.held_ns, 10 * kSec) << to_string(r.reason);
  }
  EXPECT_EQ(b.ledger.holds(), 0u);
  EXPECT_EQ(b.ledger.counter(Counter::MaxHoldEscalations), 4u);
}

TEST(Ledger, MaxHoldKillEscalationKillsTheEntity) {
  Bench b("max_hold: 10s\n");
  b.attach(601, 600, "/agents/c");
  b.apply(b.ledger.pace({601, b.clock.now + 3600 * kSec, HoldReason::Loop, "repetition", Action::Kill,
                         {EntityKey::of_tree(600)}}, b.clock.now));
  b.held(601);
  b.clock.advance(10 * kSec);
  auto out = b.tick();
  ASSERT_EQ(all_of<Kill>(out).size(), 1u);
  EXPECT_EQ(all_of<Kill>(out)[0].entity, EntityKey::of_tree(600));
  auto killed = records_of<Killed>(out);
  ASSERT_EQ(killed.size(), 1u);
  EXPECT_EQ(killed[0].cause, KillCause::MaxHold);
  EXPECT_LT(index_of(out, [](const Effect& e) { return std::holds_alternative<Record>(e); }),
            index_of(out, [](const Effect& e) { return std::holds_alternative<Kill>(e); }))
      << "recorded while its processes can still be listed";
  auto resumed = records_of<Resumed>(out);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].escalation, Action::Kill);
}

TEST(Ledger, CaptureHoldEndsAtItsBound) {
  Bench b("max_hold: 10s\n");
  b.held(701, Taken::Stopped, true);
  b.clock.advance(5 * kSec - 1);
  EXPECT_TRUE(released_pids(b.tick()).empty());
  b.clock.advance(1);
  auto out = b.tick();
  EXPECT_EQ(released_pids(out), std::vector<uint32_t>{701});
  auto resumed = records_of<Resumed>(out);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].reason, HoldReason::Capture);
  EXPECT_EQ(resumed[0].end, HoldEnd::CaptureBound);
  EXPECT_EQ(b.ledger.counter(Counter::CaptureHoldsBounded), 1u);
}

// ---- paused / resumed ------------------------------------------------------------------------

// Every hold is a `paused` when taken and a `resumed` with its reason and held_ns when it ends.
TEST(Ledger, EveryHoldIsPausedThenResumedWithReasonAndHeldTime) {
  Bench b(R"(
max_hold: 10m
budgets:
  - {name: b, match: {cgroup: "/agents/b"}, per: cgroup, requests_per_minute: 1, action: throttle}
loops:
  fan_out: {max_concurrent: 1, action: throttle}
)");
  struct Case {
    HoldReason reason;
    uint32_t pid;
    std::function<void()> hold, end;
    int64_t held_ns;
  };
  std::vector<Case> cases;
  cases.push_back({HoldReason::Capture, 101, [&] { b.held(101, Taken::Stopped, true); },
                   [&] { b.clock.advance(3 * kMs); b.attach(101, 101, "/agents/c"); }, 3 * kMs});
  cases.push_back({HoldReason::Budget, 201,
                   [&] { b.attach(201, 201, "/agents/b"); b.seen(201); b.ended(201); b.held(201); },
                   [&] { b.clock.advance(61 * kSec); b.tick(); }, 61 * kSec});
  cases.push_back({HoldReason::FanOut, 302,
                   [&] { b.attach(301, 300, "/agents/c"); b.attach(302, 300, "/agents/c"); b.seen(301); b.held(302); },
                   [&] { b.clock.advance(250 * kMs); b.ended(301); }, 250 * kMs});
  cases.push_back({HoldReason::Loop, 401,
                   [&] {
                     b.attach(401, 401, "/agents/c");
                     b.apply(b.ledger.pace({401, b.clock.now + 2 * kSec, HoldReason::Loop, "repetition", Action::Throttle, {}}, b.clock.now));
                     b.held(401);
                   },
                   [&] { b.clock.advance(2 * kSec); b.tick(); }, 2 * kSec});
  cases.push_back({HoldReason::Pacing, 501,
                   [&] {
                     b.attach(501, 501, "/agents/c");
                     b.apply(b.ledger.pace({501, b.clock.now + 3 * kSec, HoldReason::Pacing, "", Action::Throttle, {}}, b.clock.now));
                     b.held(501);
                   },
                   [&] { b.clock.advance(3 * kSec); b.tick(); }, 3 * kSec});
  for (auto& c : cases) {
    SCOPED_TRACE(std::string(to_string(c.reason)));
    const size_t from = b.effects.applied.size();
    c.hold();
    EffectList taken(b.effects.applied.begin() + from, b.effects.applied.end());
    auto paused = records_of<Paused>(taken);
    ASSERT_EQ(paused.size(), 1u);
    EXPECT_EQ(paused[0].reason, c.reason);
    EXPECT_EQ(paused[0].via, HoldVia::Stop);
    if (c.reason == HoldReason::Budget) {
      EXPECT_EQ(paused[0].budgets, std::vector<std::string>{"b"});
    } else if (c.reason == HoldReason::Loop) {
      EXPECT_EQ(paused[0].detector, "repetition");
    } else if (c.reason == HoldReason::FanOut) {
      EXPECT_EQ(paused[0].entity, EntityKey::of_tree(300));
    }
    for (const auto& r : all_of<Record>(taken)) EXPECT_FALSE(r.event.dry_run);
    const size_t mid = b.effects.applied.size();
    c.end();
    EffectList ended(b.effects.applied.begin() + mid, b.effects.applied.end());
    auto resumed = records_of<Resumed>(ended);
    ASSERT_EQ(resumed.size(), 1u);
    EXPECT_EQ(resumed[0].reason, c.reason);
    EXPECT_EQ(resumed[0].held_ns, c.held_ns);
    EXPECT_NE(resumed[0].end, HoldEnd::MaxHold);
    EXPECT_EQ(released_pids(ended), std::vector<uint32_t>{c.pid});
  }
}

TEST(Ledger, ForegroundJobIsFrozenAndItsReleaseLetsNoRequestGo) {
  Bench b(fan_out(1));
  b.attach(102, 100);
  b.seen(102);
  b.attach(101, 100);
  auto out = b.held(101, Taken::Foreground);
  ASSERT_EQ(all_of<Hold>(out).size(), 1u);
  EXPECT_EQ(all_of<Hold>(out)[0].via, HoldVia::Freeze);
  EXPECT_EQ(records_of<Paused>(out).at(0).via, HoldVia::Freeze);
  b.seen(101);  // its request went out regardless: counted in flight
  b.ended(102);
  EXPECT_TRUE(released_pids(b.tick()).empty()) << "its entity is full with its own call";
  out = b.ended(101);
  ASSERT_EQ(all_of<Release>(out).size(), 1u);
  EXPECT_EQ(all_of<Release>(out)[0].via, HoldVia::Freeze);
  EXPECT_EQ(b.credits(101), 1) << "a thaw lets no held request go: the place is free for a credit";
}

TEST(Ledger, ExitEndsTheHoldAndForgetsTheProcess) {
  Bench b(fan_out(1));
  b.attach(102, 100);
  b.seen(102);
  b.attach(101, 100);
  b.held(101);
  b.clock.advance(kSec);
  auto out = b.apply(b.ledger.process_exited(101, b.clock.now));
  EXPECT_TRUE(all_of<Release>(out).empty()) << "the kernel drops a stopped process's record at exit";
  auto resumed = records_of<Resumed>(out);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].end, HoldEnd::Exited);
  EXPECT_EQ(all_of<ForgetProcess>(out).size(), 1u);
  EXPECT_FALSE(b.ledger.hold_of(101));
  b.apply(b.ledger.process_exited(102, b.clock.now));
  EXPECT_EQ(b.ledger.fan_out_room(kTree100, b.clock.now), 1);
}

TEST(Ledger, ReleaseAllLetsEveryHoldGoAndRemovesEveryGate) {
  Bench b(fan_out(1));
  b.attach(102, 100);
  b.seen(102);
  b.attach(101, 100);
  b.held(101);
  b.held(103, Taken::Stopped, true);
  auto out = b.apply(b.ledger.release_all(b.clock.now));
  EXPECT_EQ(released_pids(out), (std::vector<uint32_t>{101, 103}));
  for (const auto& r : records_of<Resumed>(out)) EXPECT_EQ(r.end, HoldEnd::ReleaseAll);
  EXPECT_EQ(all_of<RemoveGate>(out).size(), 2u);
}

// ---- budget_exceeded, deny, kill -------------------------------------------------------------

TEST(Ledger, BudgetExceededOncePerEpisodeFromTheHold) {
  Bench b(kTwoRequestsPerMinute);
  b.attach(101, 101);
  b.seen(101);
  b.seen(101, 2);
  auto out = b.held(101);
  auto ex = records_of<BudgetExceeded>(out);
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].exceeded.bucket.budget, "agents");
  EXPECT_EQ(ex[0].exceeded.bucket.key, "cgroup:/agents/a");
  b.attach(102, 102);
  EXPECT_TRUE(records_of<BudgetExceeded>(b.held(102)).empty()) << "the same episode";
}

TEST(Ledger, DenyLastsUntilTheEntitysHeldRequestIsLetGo) {
  Bench b(R"(
max_hold: 10m
budgets:
  - {name: d, match: {cgroup: "/agents/*"}, per: cgroup, requests_per_minute: 1, action: deny}
)");
  b.attach(101, 101);
  b.seen(101);
  b.ended(101);
  auto out = b.held(101);
  ASSERT_EQ(all_of<Deny>(out).size(), 1u);
  EXPECT_EQ(all_of<Deny>(out)[0].entity, EntityKey::of_cgroup("/agents/a"));
  EXPECT_EQ(records_of<Denied>(out).at(0).by, "d");
  EXPECT_EQ(b.ledger.denied().size(), 1u);
  b.clock.advance(61 * kSec);
  out = b.tick();
  EXPECT_EQ(released_pids(out), std::vector<uint32_t>{101});
  ASSERT_EQ(all_of<Undeny>(out).size(), 1u);
  EXPECT_EQ(records_of<Undenied>(out).size(), 1u);
  EXPECT_TRUE(b.ledger.denied().empty());
}

TEST(Ledger, KillActionKillsOncePerCooldown) {
  Bench b(R"(
max_hold: 10m
cooldown: 30s
budgets:
  - {name: k, match: {cgroup: "/agents/*"}, per: cgroup, requests_per_minute: 1, action: kill}
)");
  b.attach(101, 101);
  b.attach(102, 102);
  b.seen(101);
  auto out = b.held(102);
  ASSERT_EQ(all_of<Kill>(out).size(), 1u);
  EXPECT_EQ(records_of<Killed>(out).at(0).cause, KillCause::Budget);
  EXPECT_EQ(released_pids(out), std::vector<uint32_t>{102}) << "its record goes";
  out = b.held(101);
  EXPECT_TRUE(all_of<Kill>(out).empty());
  EXPECT_EQ(b.ledger.counter(Counter::ActionsInCooldown), 1u);
}

TEST(Ledger, FanOutHoldIsALoopFindingOncePerEpisode) {
  Bench b(fan_out(1, "deny"));
  b.attach(101, 100);
  b.attach(102, 100);
  b.attach(103, 100);
  b.seen(101);
  auto out = b.held(102);
  auto found = records_of<FanOutHeld>(out);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].entity, kTree100);
  EXPECT_EQ(found[0].concurrent, 2);
  EXPECT_EQ(all_of<Deny>(out).size(), 1u);
  EXPECT_TRUE(records_of<FanOutHeld>(b.held(103)).empty());
}

// ---- dry run ---------------------------------------------------------------------------------

// Every request is judged and what a real run would have done is recorded (dry_run true);
// nothing is ever written, held, denied or killed.
TEST(Ledger, DryRunDecidesAndRecordsNeverHolds) {
  Bench b(R"(
max_hold: 10m
budgets:
  - {name: b, match: {cgroup: "/agents/b"}, per: cgroup, requests_per_minute: 1, action: throttle}
loops:
  fan_out: {max_concurrent: 1, action: throttle}
)", /*dry_run=*/true);
  b.attach(201, 201, "/agents/b");
  b.attach(301, 300, "/agents/c");
  b.attach(302, 300, "/agents/c");
  for (int i = 0; i < 3; i++) {  // one after the other, over its budget
    b.seen(201, 10 + i);
    b.ended(201, 10 + i);
  }
  b.seen(301);
  b.seen(302);  // past max_concurrent
  b.apply(b.ledger.pace({302, b.clock.now + kSec, HoldReason::Pacing, "", Action::Throttle, {}}, b.clock.now));
  b.clock.advance(kSec);
  b.tick();
  for (const auto& e : b.effects.applied) {
    ASSERT_FALSE(acts(e)) << "an action in a dry run (effect #" << e.index() << ")";
    ASSERT_FALSE(brakes(e));
    EXPECT_TRUE(std::get<Record>(e).event.dry_run);
  }
  auto paused = records_of<Paused>(b.effects.applied);
  ASSERT_EQ(paused.size(), 3u);  // two over the budget, one past max_concurrent
  EXPECT_EQ(paused[0].reason, HoldReason::Budget);
  EXPECT_EQ(paused[1].reason, HoldReason::Budget);
  EXPECT_EQ(paused[2].reason, HoldReason::FanOut);
  EXPECT_EQ(records_of<BudgetExceeded>(b.effects.applied).size(), 1u);
  EXPECT_FALSE(b.ledger.gated(201, b.clock.now));
  EXPECT_EQ(b.ledger.holds(), 0u);
}

TEST(Ledger, PolicyInObserveModeIsADryRun) {
  Bench b("mode: observe\nloops:\n  fan_out: {max_concurrent: 1, action: throttle}\n");
  b.attach(101, 100);
  b.attach(102, 100);
  EXPECT_TRUE(b.ledger.dry_run());
  EXPECT_TRUE(all_of<WriteCredit>(b.effects.applied).empty());
}

// Watching is not braking: a capture hold is taken and let go in a dry run too.
TEST(DryRunEffects, PassesRecordsAndCaptureHoldsOnAndWithholdsEveryBrake) {
  RecordingEffects sink;
  DryRunEffects dry(sink);
  EffectList list;
  list.push_back(WriteCredit{1, 1});
  list.push_back(Record{Event{1, true, Paused{}}});
  list.push_back(Kill{EntityKey::of_tree(1)});
  list.push_back(Release{1, 0, HoldReason::Budget, HoldVia::Stop});
  list.push_back(Hold{2, 0, HoldReason::Capture, HoldVia::Freeze});
  list.push_back(Release{2, 0, HoldReason::Capture, HoldVia::Freeze});
  dry.apply_all(list);
  ASSERT_EQ(sink.applied.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<Record>(sink.applied[0]));
  EXPECT_TRUE(std::holds_alternative<Hold>(sink.applied[1]));
  EXPECT_TRUE(std::holds_alternative<Release>(sink.applied[2]));
  EXPECT_EQ(dry.withheld(), 3u);
}

// docs/interface.md: a stop let go at once (its credit was on its way) is an admission round
// trip, not a hold: released, counted, and no paused/resumed recorded.
TEST(Ledger, StopLetGoAtOnceIsNotRecordedAsAHold) {
  Bench b(kTwoRequestsPerMinute);
  b.attach(101, 101);
  ASSERT_EQ(b.credits(101), 1);
  b.seen(101);  // the kernel took the credit; one more fits in the window
  auto out = b.held(101);
  EXPECT_EQ(released_pids(out), (std::vector<uint32_t>{101}));
  EXPECT_TRUE(records_of<Paused>(out).empty());
  EXPECT_TRUE(records_of<Resumed>(out).empty());
  EXPECT_EQ(b.ledger.hold_of(101), std::nullopt);
  EXPECT_EQ(b.ledger.counter(Counter::HoldsReleasedAtOnce), 1u);
  EXPECT_EQ(b.ledger.counter(Counter::BudgetHolds), 0u);
}

// Harden M3: a response whose usage cannot be trusted keeps its reservation counted, and
// does not become the process's typical call.
TEST(Ledger, MalformedUsageKeepsTheReservation) {
  Bench b(R"(
max_hold: 10m
budgets:
  - name: tokens
    match: {cgroup: "/agents/*"}
    per: cgroup
    tokens_per_minute: 1000
    action: throttle
)");
  b.attach(101, 101);
  RequestStart r;
  r.pid = 101;
  r.stream = 1;
  r.is_llm = true;
  r.est_input_tokens = 100;
  r.max_tokens = 400;  // reserves 500
  b.apply(b.ledger.request_seen(r, b.clock.now));
  ResponseEnd e;
  e.pid = 101;
  e.stream = 1;
  e.input_tokens = -999'999'999;
  e.usage_malformed = true;
  b.apply(b.ledger.response_ended(e, b.clock.now));
  auto snap = b.ledger.budgets().snapshot(b.clock.now);
  ASSERT_EQ(snap.buckets.size(), 1u);
  ASSERT_FALSE(snap.buckets[0].limits.empty());
  EXPECT_GE(snap.buckets[0].limits[0].level, 500) << "the reservation stays counted";
  EXPECT_EQ(b.ledger.typical_call(101).est_input_tokens, 100) << "not the malformed counts";
}

// Harden M5: what only the past remembers (kills, budget episodes, the engine's buckets and
// cooldowns) is forgotten once it can no longer matter, so a long-running daemon stays bounded.
TEST(Ledger, IdleStateIsPrunedAtTick) {
  Bench b(R"(
max_hold: 10m
cooldown: 30s
budgets:
  - {name: k, match: {cgroup: "/agents/*"}, per: cgroup, requests_per_minute: 1, action: kill}
)");
  b.attach(101, 101);
  b.attach(102, 102);
  b.seen(101);
  b.held(102);  // killed: kill, episode, bucket, cooldown remembered
  ASSERT_EQ(b.ledger.killed().size(), 1u);
  ASSERT_GT(b.ledger.remembered(), 1u);
  b.apply(b.ledger.process_exited(101, b.clock.now));
  b.apply(b.ledger.process_exited(102, b.clock.now));
  b.clock.advance(30 * 60 * kSec);
  b.tick();
  EXPECT_EQ(b.ledger.killed().size(), 1u) << "a kill is shown for an hour";
  b.clock.advance(31 * 60 * kSec);
  b.tick();
  EXPECT_TRUE(b.ledger.killed().empty());
  EXPECT_EQ(b.ledger.remembered(), 0u);
}

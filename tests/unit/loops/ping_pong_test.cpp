// Ping-pong: agents connected by a channel answering each other with LLM calls. Fires past
// max_round_trips of one ring within the window; must stay silent for a lone agent, a tool
// server without LLM calls, unrelated agents taking turns, parallel batches and an
// orchestrator handing work to a different worker each time.
#include <gtest/gtest.h>

#include <algorithm>

#include "loops/ping_pong.h"
#include "loops_test_util.h"

using namespace ab::loops;
using namespace ab::loops::testing;

namespace {

ab::policy::PingPong rule(int64_t max_round_trips, int64_t window_s = 600) {
  ab::policy::PingPong r;
  r.enabled = true;
  r.action = ab::policy::Action::Kill;
  r.max_round_trips = max_round_trips;
  r.window = std::chrono::seconds(window_s);
  return r;
}

// Drives one detector: LLM calls that take `duration` each, reported when they end.
struct Scenario {
  PingPongDetector detector;
  FakeClock clock;
  int findings = 0;
  std::optional<Finding> last;

  explicit Scenario(ab::policy::PingPong r) : detector(std::move(r)) {}

  // pid's call starts `gap` after the clock and lasts `duration`; the clock moves to its end.
  std::optional<Finding> call(uint32_t pid, int64_t gap = 500 * kMs, int64_t duration = 2 * kSecond, int64_t tokens = 100) {
    const int64_t start = clock.advance(gap);
    const int64_t end = clock.advance(duration);
    auto f = detector.on_llm_call("tree:" + std::to_string(pid), member(pid), start, end, tokens, tokens * 1e-5);
    if (f) {
      ++findings;
      last = f;
    }
    return f;
  }
};

std::vector<uint32_t> pids_of(const Finding& f) {
  std::vector<uint32_t> pids;
  for (const auto& m : f.members) pids.push_back(m.pid);
  std::sort(pids.begin(), pids.end());
  return pids;
}

}  // namespace

TEST(PingPong, TwoAgentsOverAChannelFireAfterMaxRoundTrips) {
  Scenario s(rule(3));
  s.detector.add_channel(100, 200, ChannelKind::TcpLoopback, s.clock.now);
  // A B A = 1 round trip; the 4th return to A (9th call) is past max_round_trips = 3.
  for (int i = 0; i < 8; ++i) EXPECT_FALSE(s.call(i % 2 ? 200 : 100)) << "call " << i + 1;
  auto f = s.call(100);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->detector, "ping_pong");
  EXPECT_EQ(f->evidence.round_trips, 4);
  EXPECT_EQ(pids_of(*f), (std::vector<uint32_t>{100, 200}));
  EXPECT_EQ(f->evidence.tokens, 800);  // the eight calls that made the four round trips
  EXPECT_EQ(f->action, ab::policy::Action::Kill);
  EXPECT_EQ(f->entity, "tree:100");
  EXPECT_EQ(f->entities, (std::vector<std::string>{"tree:100", "tree:200"}));
  EXPECT_GT(f->evidence.rate_per_min, 0);
}

TEST(PingPong, SeveralCallsPerTurnAreOneTurn) {
  Scenario s(rule(2));
  s.detector.add_channel(1, 2, ChannelKind::Unix, s.clock.now);
  for (int turn = 0; turn < 6; ++turn) {
    const uint32_t pid = turn % 2 ? 2 : 1;
    for (int c = 0; c < 3; ++c) EXPECT_FALSE(s.call(pid, 200 * kMs)) << turn;  // a tool-use loop
  }
  EXPECT_TRUE(s.call(1));  // 3rd return to agent 1
}

TEST(PingPong, ThreeAgentRingFires) {
  Scenario s(rule(2));
  s.detector.add_channel(1, 2, ChannelKind::TcpLoopback, s.clock.now);
  s.detector.add_channel(2, 3, ChannelKind::Pipe, s.clock.now);
  s.detector.add_channel(3, 1, ChannelKind::Unix, s.clock.now);
  const uint32_t order[] = {1, 2, 3};
  for (int i = 0; i < 9; ++i) EXPECT_FALSE(s.call(order[i % 3])) << i;
  auto f = s.call(1);  // 1 2 3 1 2 3 1 2 3 1: three round trips of the ring
  ASSERT_TRUE(f);
  EXPECT_EQ(f->evidence.round_trips, 3);
  EXPECT_EQ(pids_of(*f), (std::vector<uint32_t>{1, 2, 3}));
}

TEST(PingPong, SingleAgentAloneDoesNotFire) {
  Scenario s(rule(1));
  s.detector.add_channel(1, 2, ChannelKind::Pipe, s.clock.now);  // its child, silent
  for (int i = 0; i < 200; ++i) EXPECT_FALSE(s.call(1, 10 * kMs));
}

TEST(PingPong, ToolServerWithoutLlmCallsConnectsNobody) {
  Scenario s(rule(1));
  const uint32_t tool_server = 50;
  s.detector.add_channel(1, tool_server, ChannelKind::TcpLoopback, s.clock.now);
  s.detector.add_channel(2, tool_server, ChannelKind::TcpLoopback, s.clock.now);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(s.call(i % 2 ? 2 : 1)) << i;  // both agents use it, taking turns
  EXPECT_EQ(s.findings, 0);
}

TEST(PingPong, UnrelatedAgentsAlternatingDoNotFire) {
  Scenario s(rule(1));
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(s.call(i % 2 ? 2 : 1)) << i;
  EXPECT_FALSE(s.detector.connected(1, 2));
}

TEST(PingPong, ParallelBatchesOfDistinctPromptsDoNotFire) {
  Scenario s(rule(1));
  const uint32_t parent = 1;
  std::vector<uint32_t> workers;
  for (uint32_t w = 0; w < 50; ++w) workers.push_back(100 + w);
  // The harshest wiring: pipes from the parent to every worker and between all workers.
  for (uint32_t w : workers) s.detector.add_channel(parent, w, ChannelKind::Pipe, s.clock.now);
  for (size_t i = 0; i < workers.size(); ++i)
    for (size_t j = i + 1; j < workers.size(); ++j) s.detector.add_channel(workers[i], workers[j], ChannelKind::Pipe, s.clock.now);

  for (int batch = 0; batch < 20; ++batch) {
    EXPECT_FALSE(s.call(parent));  // the planner splits the work
    // 50 calls in flight together, ending in a staggered order (reported as they end).
    const int64_t start = s.clock.advance(100 * kMs);
    for (size_t i = 0; i < workers.size(); ++i) {
      const size_t w = (i * 7 + static_cast<size_t>(batch)) % workers.size();
      const int64_t end = start + 3 * kSecond + static_cast<int64_t>(i) * 20 * kMs;
      EXPECT_FALSE(s.detector.on_llm_call("tree:1", member(workers[w], 1), start + static_cast<int64_t>(w) * kMs, end, 100, 0));
    }
    s.clock.now = start + 5 * kSecond;
  }
  EXPECT_EQ(s.findings, 0);
}

TEST(PingPong, OrchestratorWithADifferentWorkerEachTimeDoesNotFire) {
  Scenario s(rule(2));
  for (uint32_t w = 10; w < 30; ++w) s.detector.add_channel(1, w, ChannelKind::Pipe, s.clock.now);
  for (uint32_t w = 10; w < 30; ++w) {
    EXPECT_FALSE(s.call(1));
    EXPECT_FALSE(s.call(w));
  }
  EXPECT_FALSE(s.call(1));
  EXPECT_EQ(s.findings, 0);
}

TEST(PingPong, OverlappingCallsAreNotHandOffs) {
  Scenario s(rule(1));
  s.detector.add_channel(1, 2, ChannelKind::TcpLoopback, s.clock.now);
  for (int i = 0; i < 50; ++i) {
    // Both talk to the model at the same time: neither is waiting for the other.
    const int64_t t = s.clock.advance(kSecond);
    EXPECT_FALSE(s.detector.on_llm_call("tree:1", member(1), t, t + 2 * kSecond, 100, 0));
    EXPECT_FALSE(s.detector.on_llm_call("tree:2", member(2), t + 500 * kMs, t + 2500 * kMs, 100, 0));
    s.clock.advance(3 * kSecond);
  }
}

TEST(PingPong, RoundTripsSpreadWiderThanTheWindowDoNotFire) {
  Scenario s(rule(2, 60));
  s.detector.add_channel(1, 2, ChannelKind::Unix, s.clock.now);
  for (int i = 0; i < 40; ++i) EXPECT_FALSE(s.call(i % 2 ? 2 : 1, 25 * kSecond)) << i;  // a round trip every 54 s
}

TEST(PingPong, OncePerEpisodeThenRearmsAfterAQuietWindowOrReset) {
  Scenario s(rule(2, 60));
  s.detector.add_channel(1, 2, ChannelKind::TcpLoopback, s.clock.now);
  for (int i = 0; i < 40; ++i) s.call(i % 2 ? 2 : 1);
  EXPECT_EQ(s.findings, 1);
  s.clock.advance(2 * kMinute);
  for (int i = 0; i < 7; ++i) s.call(i % 2 ? 2 : 1);
  EXPECT_EQ(s.findings, 2);
  s.detector.reset("tree:2");
  for (int i = 0; i < 7; ++i) s.call(i % 2 ? 2 : 1);
  EXPECT_EQ(s.findings, 3);
}

TEST(PingPong, ExitForgetsTheProcessItsChannelsAndItsRings) {
  Scenario s(rule(2));
  s.detector.add_channel(1, 2, ChannelKind::TcpLoopback, s.clock.now);
  for (int i = 0; i < 5; ++i) s.call(i % 2 ? 2 : 1);  // two round trips so far
  s.detector.forget_pid(2);
  EXPECT_FALSE(s.detector.connected(1, 2));
  EXPECT_EQ(s.detector.ring_count(), 0u);
  // A new process reusing pid 2, with its own channel, starts from zero: it answers agent 1's
  // last turn, and the ring needs three fresh round trips (the old two are gone).
  s.detector.add_channel(1, 2, ChannelKind::TcpLoopback, s.clock.now);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(s.call(i % 2 ? 1 : 2)) << i;
  EXPECT_TRUE(s.call(1));
}

TEST(PingPong, ChannelsAreBoundedPerProcess) {
  PingPongDetector d(rule(1));
  for (uint32_t p = 2; p < 2 + 3 * PingPongDetector::kMaxNeighbours; ++p) d.add_channel(1, p, ChannelKind::TcpLoopback, 0);
  EXPECT_TRUE(d.connected(1, 1 + 3 * PingPongDetector::kMaxNeighbours));
  EXPECT_FALSE(d.connected(1, 2));  // the oldest went, on both sides
  EXPECT_FALSE(d.connected(2, 1));
}

// The facade: rules select processes and give entity keys; observations reach the right
// detectors; disabled rules stay silent; exits and reloads keep memory and state sensible;
// findings serialize to the loop_detected detail.
#include <gtest/gtest.h>

#include "loops/fingerprint.h"
#include "loops/loop_detectors.h"
#include "loops_test_util.h"

using namespace ab::loops;
using namespace ab::loops::testing;
namespace policy = ab::policy;

namespace {

policy::Policy all_enabled() {
  policy::Policy p;
  auto& l = p.loops;
  l.ping_pong.enabled = true;
  l.ping_pong.max_round_trips = 2;
  l.ping_pong.action = policy::Action::Kill;
  l.repetition.enabled = true;
  l.repetition.max_repeats = 2;
  l.repetition.action = policy::Action::Throttle;
  l.fan_out.enabled = true;
  l.fan_out.max_concurrent = 2;
  l.fan_out.action = policy::Action::Throttle;
  l.retry_storm.enabled = true;
  l.retry_storm.max_errors = 2;
  l.retry_storm.action = policy::Action::Alert;
  return p;
}

ProcessInfo proc(uint32_t pid, uint32_t root = 0, std::string comm = "python3", std::string cgroup = "/agents/a") {
  ProcessInfo p;
  p.pid = pid;
  p.tree_root_pid = root;
  p.facts.comm = std::move(comm);
  p.facts.exe = "/usr/bin/" + p.facts.comm;
  p.facts.cgroup = std::move(cgroup);
  return p;
}

CallObservation start(const ProcessInfo& who, uint64_t id, int64_t now, uint64_t fp = 0) { return {who, id, now, fp}; }

ResponseObservation end(const ProcessInfo& who, uint64_t id, int64_t start_ns, int64_t now, int status = 200) {
  ResponseObservation r;
  r.who = who;
  r.call_id = id;
  r.start_ns = start_ns;
  r.now_ns = now;
  r.status = status;
  r.tokens = 100;
  r.cost_usd = 0.001;
  return r;
}

std::vector<std::string> detectors(const std::vector<Finding>& found) {
  std::vector<std::string> names;
  for (const auto& f : found) names.push_back(f.detector);
  return names;
}

}  // namespace

TEST(LoopDetectors, NothingFiresWhileRulesAreDisabled) {
  LoopDetectors d{policy::Policy{}};  // a detector absent from the policy is disabled
  FakeClock clock;
  const uint64_t fp = request_fingerprint({"same request"}, 0);
  for (uint64_t id = 1; id <= 50; ++id) {
    EXPECT_TRUE(d.observe_call(start(proc(1), id, clock.now, fp)).empty());
    EXPECT_TRUE(d.observe_response(end(proc(1), id, clock.now, clock.advance(kMs), 429)).empty());
  }
  EXPECT_FALSE(d.should_hold(proc(1), clock.now));
}

TEST(LoopDetectors, RepetitionAndFanOutFireFromCallStarts) {
  LoopDetectors d{all_enabled()};
  FakeClock clock;
  const uint64_t fp = request_fingerprint({"same request"}, 0);
  EXPECT_TRUE(d.observe_call(start(proc(10), 1, clock.now, fp)).empty());
  EXPECT_TRUE(d.observe_call(start(proc(11, 10), 2, clock.now, fp)).empty());
  EXPECT_TRUE(d.should_hold(proc(12, 10), clock.now));  // tree 10 has 2 in flight
  auto found = d.observe_call(start(proc(12, 10), 3, clock.now, fp));
  EXPECT_EQ(detectors(found), (std::vector<std::string>{"repetition", "fan_out"}));
  for (const auto& f : found) EXPECT_EQ(f.entity, "tree:10");
  EXPECT_FALSE(d.should_hold(proc(20), clock.now));  // another tree
}

TEST(LoopDetectors, ResponsesDriveRetryStormAndReleaseFanOut) {
  LoopDetectors d{all_enabled()};
  FakeClock clock;
  auto who = proc(10);
  d.observe_call(start(who, 1, clock.now));
  d.observe_call(start(who, 2, clock.now));
  EXPECT_TRUE(d.should_hold(who, clock.now));
  EXPECT_TRUE(d.observe_response(end(who, 1, clock.now, clock.advance(kSecond), 429)).empty());
  EXPECT_FALSE(d.should_hold(who, clock.now));
  auto r = end(who, 2, clock.now, clock.advance(kSecond), 503);
  r.retry_after_s = 20;
  EXPECT_TRUE(d.observe_response(r).empty());
  EXPECT_EQ(d.pace_until_ns(who, clock.now), clock.now + 20 * kSecond);
  auto found = d.observe_response(end(who, 3, clock.now, clock.advance(kSecond), 529));
  ASSERT_EQ(detectors(found), (std::vector<std::string>{"retry_storm"}));
  EXPECT_EQ(found[0].action, policy::Action::Alert);
  EXPECT_DOUBLE_EQ(found[0].evidence.retry_after_s, 20);
}

TEST(LoopDetectors, PingPongThroughResponsesAndChannels) {
  LoopDetectors d{all_enabled()};
  FakeClock clock;
  d.add_channel(10, 20, ChannelKind::TcpLoopback, clock.now);
  std::vector<Finding> found;
  for (uint64_t id = 1; id <= 5; ++id) {
    const auto who = proc(id % 2 ? 10 : 20);
    const int64_t s = clock.advance(kSecond);
    d.observe_call(start(who, id, s));
    found = d.observe_response(end(who, id, s, clock.advance(kSecond)));
    EXPECT_TRUE(found.empty()) << id;
  }
  d.observe_call(start(proc(20), 6, clock.advance(kSecond)));
  found = d.observe_response(end(proc(20), 6, clock.now, clock.advance(kSecond)));
  EXPECT_TRUE(found.empty());
  const int64_t s = clock.advance(kSecond);
  d.observe_call(start(proc(10), 7, s));
  found = d.observe_response(end(proc(10), 7, s, clock.advance(kSecond)));
  ASSERT_EQ(detectors(found), (std::vector<std::string>{"ping_pong"}));
  EXPECT_EQ(found[0].evidence.round_trips, 3);
  EXPECT_EQ(found[0].entities, (std::vector<std::string>{"tree:10", "tree:20"}));
}

TEST(LoopDetectors, MatchAndPerDecideWhoIsWatchedAndHowTheyAreGrouped) {
  auto p = all_enabled();
  p.loops.fan_out.match.comm = "node*";
  p.loops.fan_out.per = policy::Per::Process;
  p.loops.fan_out.max_concurrent = 1;
  LoopDetectors d{p};
  FakeClock clock;
  // python3 is not selected by the fan-out rule: any number of calls in flight.
  for (uint64_t id = 1; id <= 10; ++id) EXPECT_TRUE(d.observe_call(start(proc(5), id, clock.now)).empty());
  // node processes of one tree are separate entities per process.
  EXPECT_TRUE(d.observe_call(start(proc(6, 1, "node"), 11, clock.now)).empty());
  EXPECT_TRUE(d.observe_call(start(proc(7, 1, "node"), 12, clock.now)).empty());
  auto found = d.observe_call(start(proc(7, 1, "node"), 13, clock.now));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].entity, "process:7");
}

TEST(LoopDetectors, ExitForgetsAndReloadKeepsChannels) {
  LoopDetectors d{all_enabled()};
  FakeClock clock;
  d.add_channel(10, 20, ChannelKind::Pipe, clock.now);
  d.observe_call(start(proc(10), 1, clock.now));
  d.observe_call(start(proc(10), 2, clock.now));
  EXPECT_TRUE(d.should_hold(proc(10), clock.now));
  d.on_exit(10);
  EXPECT_FALSE(d.should_hold(proc(10), clock.now));  // its calls will never finish
  EXPECT_FALSE(d.ping_pong().connected(10, 20));

  d.add_channel(30, 40, ChannelKind::Unix, clock.now);
  auto p = all_enabled();
  p.loops.ping_pong.max_round_trips = 5;
  d.set_policy(p);
  EXPECT_TRUE(d.ping_pong().connected(30, 40));
  EXPECT_EQ(d.rules().ping_pong.max_round_trips, 5);
}

TEST(LoopDetectors, ResetStartsANewEpisodeEverywhere) {
  LoopDetectors d{all_enabled()};
  FakeClock clock;
  const uint64_t fp = request_fingerprint({"again"}, 0);
  uint64_t id = 0;
  int fired = 0;
  for (int i = 0; i < 10; ++i) {
    fired += static_cast<int>(d.observe_call(start(proc(1), ++id, clock.now, fp)).size());
    d.observe_response(end(proc(1), id, clock.now, clock.advance(kMs)));
  }
  EXPECT_EQ(fired, 1);
  d.reset("tree:1");
  for (int i = 0; i < 3; ++i) {
    fired += static_cast<int>(d.observe_call(start(proc(1), ++id, clock.now, fp)).size());
    d.observe_response(end(proc(1), id, clock.now, clock.advance(kMs)));
  }
  EXPECT_EQ(fired, 2);
}

TEST(Finding, ToJsonCarriesTheLoopDetectedDetail) {
  Finding f;
  f.detector = "ping_pong";
  f.entity = "tree:10";
  f.entities = {"tree:10", "tree:20"};
  f.members = {member(10, 10, "/agents/a", "planner"), member(20, 20, "/agents/b", "critic")};
  f.evidence.round_trips = 11;
  f.evidence.tokens = 52'000;
  f.evidence.cost_usd = 0.42;
  f.evidence.since_ns = 10 * kSecond;
  f.evidence.rate_per_min = 5.5;
  f.action = policy::Action::Kill;
  f.at_ns = 130 * kSecond;
  const auto j = to_json(f);
  EXPECT_EQ(j["detector"], "ping_pong");
  EXPECT_EQ(j["action"], "kill");
  EXPECT_EQ(j["round_trips"], 11);
  EXPECT_EQ(j["tokens"], 52'000);
  EXPECT_DOUBLE_EQ(j["cost_usd"].get<double>(), 0.42);
  EXPECT_DOUBLE_EQ(j["duration_s"].get<double>(), 120.0);
  ASSERT_EQ(j["members"].size(), 2u);
  EXPECT_EQ(j["members"][1]["comm"], "critic");
  EXPECT_EQ(j["members"][1]["cgroup"], "/agents/b");
  EXPECT_EQ(j["entities"][1], "tree:20");
  EXPECT_FALSE(j.contains("repeats"));
}

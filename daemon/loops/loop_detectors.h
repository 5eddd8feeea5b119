// loop_detectors.h — the four loop detectors behind one door, fed by the daemon core.
//
// The facade turns each observation into the entity key of every enabled rule
// (policy::bucket_key with the rule's match and per; a process a rule does not select is
// invisible to that detector), feeds the detectors and returns what they found. It holds no
// clock and does no I/O: every observation carries now_ns (monotonic).
//
//   observe_call      request start: repetition (fingerprint), fan-out (in flight +1)
//   observe_response  response end:  fan-out (in flight -1), retry storm, ping-pong (the call's
//                                    timing), repetition (the call's spend, for evidence)
//   on_spawn          fan-out spawn rate
//   add_channel       ping-pong channels (recorded even while ping-pong is disabled, since
//                     channels are reported once)
//   on_exit           forget the process everywhere (memory stays bounded by the live set)
//
// set_policy swaps the rules and keeps state (a reload must not forget channels or calls in
// flight); a detector the new policy disables drops its activity.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loops/fan_out.h"
#include "loops/finding.h"
#include "loops/ping_pong.h"
#include "loops/repetition.h"
#include "loops/retry_storm.h"
#include "policy/policy.h"

namespace ab::loops {

// Who made an observation, with the facts rules match on and findings name.
struct ProcessInfo {
  uint32_t pid = 0;
  uint32_t tree_root_pid = 0;  // 0: the process is its own root
  policy::ProcessFacts facts;
  Member member() const { return {pid, tree_root_pid ? tree_root_pid : pid, facts.cgroup, facts.comm}; }
};

struct CallObservation {       // a request starting
  ProcessInfo who;
  uint64_t call_id = 0;        // unique per call for the daemon's lifetime
  int64_t now_ns = 0;          // request start
  uint64_t fingerprint = 0;    // request_fingerprint(...); 0 = content unknown
};

struct ResponseObservation {   // a response ended, or the call was cut off
  ProcessInfo who;
  uint64_t call_id = 0;        // the id given to observe_call (unknown ids still count below)
  int64_t start_ns = 0;        // request start
  int64_t now_ns = 0;          // response end
  int status = 0;              // HTTP status; 0 = no response
  double retry_after_s = -1;   // -1 = absent
  int64_t tokens = 0;          // billed input + output
  double cost_usd = 0;
};

class LoopDetectors {
 public:
  LoopDetectors() = default;
  explicit LoopDetectors(const policy::Policy& policy) { set_policy(policy); }

  void set_policy(const policy::Policy& policy);
  const policy::Loops& rules() const { return loops_; }

  std::vector<Finding> observe_call(const CallObservation&);
  std::vector<Finding> observe_response(const ResponseObservation&);
  void on_spawn(const ProcessInfo& child, int64_t now_ns);
  void add_channel(uint32_t pid_a, uint32_t pid_b, ChannelKind kind, int64_t now_ns);
  void on_exit(uint32_t pid);

  // Fan-out: should this process's next call wait (its entity is at max_concurrent and the
  // rule gates calls)? false when fan-out is disabled or does not select the process.
  bool should_hold(const ProcessInfo&, int64_t now_ns) const;
  // Retry storm: when the process's entity may call again honouring the retry-after headers
  // of its recent errors; 0 when it need not wait.
  int64_t pace_until_ns(const ProcessInfo&, int64_t now_ns) const;

  // Start a new episode for `entity` in every detector (e.g. after an operator resumed it).
  void reset(const std::string& entity);

  const RepetitionDetector& repetition() const { return repetition_; }
  const RetryStormDetector& retry_storm() const { return retry_storm_; }
  const FanOutDetector& fan_out() const { return fan_out_; }
  const PingPongDetector& ping_pong() const { return ping_pong_; }

 private:
  policy::Loops loops_;
  RepetitionDetector repetition_;
  RetryStormDetector retry_storm_;
  FanOutDetector fan_out_;
  PingPongDetector ping_pong_;
};

}  // namespace ab::loops

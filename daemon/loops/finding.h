// finding.h — what a loop detector reports: which detector, which entity, which processes,
// the evidence, and the action the policy rule asks for. The daemon turns a Finding into a
// `loop_detected` event (docs/interface.md, "loop_detected") and acts on `action`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/policy.h"

namespace ab::loops {

inline constexpr std::string_view kPingPong = "ping_pong";
inline constexpr std::string_view kRepetition = "repetition";
inline constexpr std::string_view kFanOut = "fan_out";
inline constexpr std::string_view kRetryStorm = "retry_storm";

// A process as an event names it. The caller supplies these facts with every observation;
// the detectors only copy them into findings.
struct Member {
  uint32_t pid = 0;
  uint32_t tree_root_pid = 0;
  std::string cgroup;
  std::string comm;
  bool operator==(const Member&) const = default;
};

// Numbers only, so every field maps to JSON directly. A field a detector does not measure
// stays at its default.
struct Evidence {
  int64_t round_trips = 0;     // ping_pong: round trips of this ring in the window
  int64_t repeats = 0;         // repetition: near-identical requests in the window, the new one included
  int64_t errors = 0;          // retry_storm: error responses in the window
  int64_t concurrent = 0;      // fan_out: calls in flight, the new one included
  int64_t tokens = 0;          // spent by the loop's calls that have completed (billed in + out)
  double cost_usd = 0;
  int64_t since_ns = 0;        // monotonic time of the loop's first observation still in the window
  double rate_per_min = 0;     // round trips / repeats / errors / call starts per minute
  double retry_after_s = -1;   // retry_storm: largest retry-after in the window; -1 = none seen
  double spawns_per_min = 0;   // fan_out: processes started in the entity during the last minute
};

struct Finding {
  std::string detector;                // kPingPong, kRepetition, kFanOut or kRetryStorm
  std::string entity;                  // bucket key from policy::bucket_key ("tree:4242")
  std::vector<std::string> entities;   // every entity involved, `entity` first (a ping-pong
                                       // ring may span trees; the action applies to all)
  std::vector<Member> members;         // processes taking part, at most kMaxMembers
  Evidence evidence;
  policy::Action action = policy::Action::Alert;
  int64_t at_ns = 0;                   // the observation that completed the finding
};

inline constexpr size_t kMaxMembers = 32;

// The `detail` object of a loop_detected event: detector, entity, entities, members
// [{pid, tree_root_pid, cgroup, comm}], action, at_ns, and the evidence fields the detector
// measures (round_trips | repeats | errors | concurrent + spawns_per_min | retry_after_s),
// always tokens, cost_usd, since_ns, duration_s, rate_per_min.
nlohmann::json to_json(const Finding&);

}  // namespace ab::loops

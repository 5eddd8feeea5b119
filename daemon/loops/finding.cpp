#include "loops/finding.h"

namespace ab::loops {

nlohmann::json to_json(const Finding& f) {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : f.members)
    members.push_back({{"pid", m.pid}, {"tree_root_pid", m.tree_root_pid}, {"cgroup", m.cgroup}, {"comm", m.comm}});
  const Evidence& e = f.evidence;
  nlohmann::json j = {
      {"detector", f.detector},
      {"entity", f.entity},
      {"entities", f.entities},
      {"members", std::move(members)},
      {"action", std::string(policy::to_string(f.action))},
      {"at_ns", f.at_ns},
      {"tokens", e.tokens},
      {"cost_usd", e.cost_usd},
      {"since_ns", e.since_ns},
      {"duration_s", static_cast<double>(f.at_ns - e.since_ns) / 1e9},
      {"rate_per_min", e.rate_per_min},
  };
  if (f.detector == kPingPong) j["round_trips"] = e.round_trips;
  if (f.detector == kRepetition) j["repeats"] = e.repeats;
  if (f.detector == kRetryStorm) {
    j["errors"] = e.errors;
    j["retry_after_s"] = e.retry_after_s;
  }
  if (f.detector == kFanOut) {
    j["concurrent"] = e.concurrent;
    j["spawns_per_min"] = e.spawns_per_min;
  }
  return j;
}

}  // namespace ab::loops

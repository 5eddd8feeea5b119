// fan_out.h — too many concurrent calls from one entity (a planner fanning out into
// sub-agents, a batch loop without a bound).
//
// Per entity, the calls in flight (call_started → call_finished). The call that takes the
// count past `max_concurrent` is a finding; from then on should_hold(entity) says further
// calls should wait while the entity is at its limit. The spawn rate (on_spawn) and the call
// start rate of the last minute go into the evidence.
// Once per episode: the entity re-arms after `quiet_ns` (default 60 s) without being over
// the limit, or on reset(entity). The rule has no window, hence the fixed quiet period.
//
// A call whose finish never arrives (a lost event) would hold the entity forever, so calls
// older than `max_call_age_ns` (default 30 min, longer than any sane streaming call) stop
// counting, and forget_pid drops the calls of an exited process.
//
// Pure and single-threaded; every input carries now_ns (monotonic).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>

#include "loops/detail.h"
#include "loops/finding.h"
#include "policy/policy.h"

namespace ab::loops {

class FanOutDetector {
 public:
  static constexpr size_t kMaxEntities = 4096;
  static constexpr size_t kMaxCallsInFlight = 65536;  // all entities together
  static constexpr int64_t kDefaultQuietNs = 60 * detail::kNsPerSecond;
  static constexpr int64_t kDefaultMaxCallAgeNs = 30 * detail::kNsPerMinute;

  explicit FanOutDetector(policy::FanOut rule = {}, int64_t quiet_ns = kDefaultQuietNs,
                          int64_t max_call_age_ns = kDefaultMaxCallAgeNs)
      : rule_(std::move(rule)), quiet_ns_(quiet_ns), max_call_age_ns_(max_call_age_ns) {}
  void set_rule(const policy::FanOut& rule) { rule_ = rule; }
  const policy::FanOut& rule() const { return rule_; }

  // call_id: unique per call (the daemon's id); a repeated id is one call.
  std::optional<Finding> call_started(const std::string& entity, const Member& who, uint64_t call_id, int64_t now_ns);
  // The entity is the one given at start (remembered by call_id); unknown ids are ignored.
  void call_finished(uint64_t call_id, int64_t now_ns, int64_t tokens = 0, double cost_usd = 0);
  // A process started in the entity.
  void on_spawn(const std::string& entity, int64_t now_ns);

  int64_t in_flight(const std::string& entity, int64_t now_ns) const;
  // true when a further call would exceed max_concurrent and the rule's action gates calls
  // (throttle, deny, kill; `alert` never holds).
  bool should_hold(const std::string& entity, int64_t now_ns) const;

  void reset(const std::string& entity);  // forgets in-flight calls too
  void forget_pid(uint32_t pid);
  void clear();
  size_t entity_count() const { return entities_.size(); }
  size_t calls_tracked() const { return call_entity_.size(); }

 private:
  struct InFlight {
    uint32_t pid;
    int64_t started_ns;
  };
  struct Recent {  // calls started in the last minute, for the rate and the spend
    int64_t started_ns;
    uint64_t call_id;
    int64_t tokens = 0;
    double cost_usd = 0;
  };
  struct EntityState {
    std::unordered_map<uint64_t, InFlight> in_flight;
    std::deque<Recent> recent;
    std::deque<int64_t> spawns;
    detail::Episode episode;
    detail::MemberBook members;
    int64_t last_seen_ns = 0;
  };

  EntityState& entity_state(const std::string& entity, int64_t now_ns);
  void expire(EntityState&, int64_t now_ns);
  int64_t live_count(const EntityState&, int64_t now_ns) const;
  void sweep(int64_t now_ns);

  policy::FanOut rule_;
  int64_t quiet_ns_;
  int64_t max_call_age_ns_;
  std::unordered_map<std::string, EntityState> entities_;
  std::unordered_map<uint64_t, std::string> call_entity_;
  int64_t last_sweep_ns_ = 0;
};

}  // namespace ab::loops

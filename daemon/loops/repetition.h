// repetition.h — the same (near-identical) request again and again.
//
// Per entity, the fingerprints of its requests over the rule's sliding window. When a new
// request has more than `max_repeats` near-duplicates in the window (itself included; near =
// Hamming distance <= rule.hamming), that is a finding: with max_repeats 6, the 7th identical
// request fires. Once per episode: the entity re-arms after a whole window without a
// repetition over the limit, or on reset(entity).
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

class RepetitionDetector {
 public:
  static constexpr size_t kMaxEntities = 4096;
  static constexpr size_t kMaxCallsPerEntity = 1024;  // the oldest go first past this

  explicit RepetitionDetector(policy::Repetition rule = {}) : rule_(std::move(rule)) {}
  void set_rule(const policy::Repetition& rule) { rule_ = rule; }
  const policy::Repetition& rule() const { return rule_; }

  // A request starting. fingerprint 0 means "content unknown" and is not recorded. The rule's
  // `enabled` is the caller's business (the facade does not call a disabled detector).
  std::optional<Finding> on_call(const std::string& entity, const Member& who, uint64_t call_id,
                                 uint64_t fingerprint, int64_t now_ns);
  // The spend of a finished call, so later findings can say what the loop cost.
  void on_usage(const std::string& entity, uint64_t call_id, int64_t tokens, double cost_usd);

  void reset(const std::string& entity);  // forget the entity: its next repeats start a new episode
  void forget_pid(uint32_t pid);          // a process exited
  void clear() { entities_.clear(); }
  size_t entity_count() const { return entities_.size(); }

 private:
  struct Call {
    int64_t at_ns;
    uint64_t fingerprint;
    uint64_t call_id;
    uint32_t pid;
    int64_t tokens = 0;
    double cost_usd = 0;
  };
  struct EntityState {
    std::deque<Call> calls;
    detail::Episode episode;
    detail::MemberBook members;
    int64_t last_seen_ns = 0;
  };

  void prune(EntityState&, int64_t now_ns) const;
  void sweep(int64_t now_ns);

  policy::Repetition rule_;
  std::unordered_map<std::string, EntityState> entities_;
  int64_t last_sweep_ns_ = 0;
};

}  // namespace ab::loops

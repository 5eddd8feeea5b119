// retry_storm.h — error responses piling up: a retry loop turning a provider hiccup into a storm.
//
// Per entity, the error responses over the rule's sliding window; more than `max_errors` of
// them is a finding that carries the largest retry-after seen, so the caller can pace the
// entity instead of letting it hammer the provider. Once per episode: re-armed after a whole
// window with no error over the limit, or by reset(entity).
//
// What counts as an error (is_error_status): 429 (rate limited), every 5xx (529 = overloaded
// included), and 0 = the request went out and no response came back (reset, timeout, refused
// by a proxy). 0 counts because a client retrying against a dead endpoint storms just the same;
// a client that cancels its own call now and then stays far below any sensible max_errors.
// Other 4xx do not count: a bad request is a bug, not something a retry would fix.
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

class RetryStormDetector {
 public:
  static constexpr size_t kMaxEntities = 4096;
  static constexpr size_t kMaxErrorsPerEntity = 4096;  // past this the count saturates

  static bool is_error_status(int http_status);

  explicit RetryStormDetector(policy::RetryStorm rule = {}) : rule_(std::move(rule)) {}
  void set_rule(const policy::RetryStorm& rule) { rule_ = rule; }
  const policy::RetryStorm& rule() const { return rule_; }

  // A response ended (or the call was cut off). Successes are ignored. retry_after_s < 0: absent.
  std::optional<Finding> on_response(const std::string& entity, const Member& who, int http_status,
                                     double retry_after_s, int64_t tokens, double cost_usd, int64_t now_ns);

  // When the entity may call again without ignoring a retry-after it was given: the latest
  // (error time + retry-after) over the window's errors; 0 when that is not after now_ns.
  int64_t pace_until_ns(const std::string& entity, int64_t now_ns) const;

  void reset(const std::string& entity);
  void forget_pid(uint32_t pid);
  void clear() { entities_.clear(); }
  size_t entity_count() const { return entities_.size(); }

 private:
  struct Error {
    int64_t at_ns;
    uint32_t pid;
    double retry_after_s;
    int64_t tokens;
    double cost_usd;
  };
  struct EntityState {
    std::deque<Error> errors;
    detail::Episode episode;
    detail::MemberBook members;
    int64_t last_seen_ns = 0;
  };

  void prune(EntityState&, int64_t now_ns) const;
  void sweep(int64_t now_ns);

  policy::RetryStorm rule_;
  std::unordered_map<std::string, EntityState> entities_;
  int64_t last_sweep_ns_ = 0;
};

}  // namespace ab::loops

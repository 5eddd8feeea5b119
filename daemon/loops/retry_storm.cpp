#include "loops/retry_storm.h"

#include <algorithm>

namespace ab::loops {

bool RetryStormDetector::is_error_status(int http_status) {
  return http_status == 0 || http_status == 429 || (http_status >= 500 && http_status <= 599);
}

void RetryStormDetector::prune(EntityState& s, int64_t now_ns) const {
  const int64_t window = detail::to_ns(rule_.window);
  while (!s.errors.empty() && now_ns - s.errors.front().at_ns >= window) s.errors.pop_front();
}

void RetryStormDetector::sweep(int64_t now_ns) {
  const int64_t window = detail::to_ns(rule_.window);
  last_sweep_ns_ = now_ns;
  for (auto it = entities_.begin(); it != entities_.end();) {
    prune(it->second, now_ns);
    const bool idle = it->second.errors.empty() && !it->second.episode.active(now_ns, window);
    it = idle ? entities_.erase(it) : std::next(it);
  }
}

std::optional<Finding> RetryStormDetector::on_response(const std::string& entity, const Member& who, int http_status,
                                                       double retry_after_s, int64_t tokens, double cost_usd,
                                                       int64_t now_ns) {
  if (!is_error_status(http_status)) return std::nullopt;
  const int64_t window = detail::to_ns(rule_.window);
  if (now_ns - last_sweep_ns_ >= window) sweep(now_ns);
  if (!entities_.contains(entity) && entities_.size() >= kMaxEntities) {
    sweep(now_ns);
    if (entities_.size() >= kMaxEntities) detail::evict_least_recent(entities_, kMaxEntities);
  }
  EntityState& s = entities_[entity];
  s.last_seen_ns = now_ns;
  s.members.note(who);
  prune(s, now_ns);
  if (s.errors.size() >= kMaxErrorsPerEntity) s.errors.pop_front();
  s.errors.push_back({now_ns, who.pid, retry_after_s, tokens, cost_usd});

  if (static_cast<int64_t>(s.errors.size()) <= rule_.max_errors) return std::nullopt;
  if (!s.episode.hit(now_ns, window)) return std::nullopt;

  Evidence e;
  e.errors = static_cast<int64_t>(s.errors.size());
  e.since_ns = s.errors.front().at_ns;
  std::vector<uint32_t> pids;
  for (const Error& err : s.errors) {
    e.tokens += err.tokens;
    e.cost_usd += err.cost_usd;
    e.retry_after_s = std::max(e.retry_after_s, err.retry_after_s);
    if (std::find(pids.begin(), pids.end(), err.pid) == pids.end()) pids.push_back(err.pid);
  }
  e.rate_per_min = detail::per_minute(e.errors, e.since_ns, now_ns);
  return detail::make_finding(kRetryStorm, entity, s.members.select(pids), e, rule_.action, now_ns);
}

int64_t RetryStormDetector::pace_until_ns(const std::string& entity, int64_t now_ns) const {
  auto it = entities_.find(entity);
  if (it == entities_.end()) return 0;
  const int64_t window = detail::to_ns(rule_.window);
  int64_t until = 0;
  for (const Error& err : it->second.errors) {
    if (now_ns - err.at_ns >= window || err.retry_after_s < 0) continue;
    const auto wait_ns = static_cast<int64_t>(err.retry_after_s * static_cast<double>(detail::kNsPerSecond));
    until = std::max(until, err.at_ns + wait_ns);
  }
  return until > now_ns ? until : 0;
}

void RetryStormDetector::reset(const std::string& entity) { entities_.erase(entity); }

void RetryStormDetector::forget_pid(uint32_t pid) {
  entities_.erase("process:" + std::to_string(pid));
  for (auto& [key, s] : entities_) s.members.forget(pid);
}

}  // namespace ab::loops

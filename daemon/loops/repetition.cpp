#include "loops/repetition.h"

#include <algorithm>

#include "loops/fingerprint.h"

namespace ab::loops {

void RepetitionDetector::prune(EntityState& s, int64_t now_ns) const {
  const int64_t window = detail::to_ns(rule_.window);
  while (!s.calls.empty() && now_ns - s.calls.front().at_ns >= window) s.calls.pop_front();
}

// Entities whose window emptied and whose episode is over hold nothing worth keeping.
void RepetitionDetector::sweep(int64_t now_ns) {
  const int64_t window = detail::to_ns(rule_.window);
  last_sweep_ns_ = now_ns;
  for (auto it = entities_.begin(); it != entities_.end();) {
    prune(it->second, now_ns);
    const bool idle = it->second.calls.empty() && !it->second.episode.active(now_ns, window);
    it = idle ? entities_.erase(it) : std::next(it);
  }
}

std::optional<Finding> RepetitionDetector::on_call(const std::string& entity, const Member& who, uint64_t call_id,
                                                   uint64_t fingerprint, int64_t now_ns) {
  if (fingerprint == 0) return std::nullopt;
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
  if (s.calls.size() >= kMaxCallsPerEntity) s.calls.pop_front();
  s.calls.push_back({now_ns, fingerprint, call_id, who.pid});

  Evidence e;
  std::vector<uint32_t> pids;
  for (const Call& c : s.calls) {
    if (hamming(c.fingerprint, fingerprint) > rule_.hamming) continue;
    if (e.repeats == 0) e.since_ns = c.at_ns;
    ++e.repeats;
    e.tokens += c.tokens;
    e.cost_usd += c.cost_usd;
    if (std::find(pids.begin(), pids.end(), c.pid) == pids.end()) pids.push_back(c.pid);
  }
  if (e.repeats <= rule_.max_repeats) return std::nullopt;
  if (!s.episode.hit(now_ns, window)) return std::nullopt;

  e.rate_per_min = detail::per_minute(e.repeats, e.since_ns, now_ns);
  return detail::make_finding(kRepetition, entity, s.members.select(pids), e, rule_.action, now_ns);
}

void RepetitionDetector::on_usage(const std::string& entity, uint64_t call_id, int64_t tokens, double cost_usd) {
  auto it = entities_.find(entity);
  if (it == entities_.end()) return;
  auto& calls = it->second.calls;
  for (auto c = calls.rbegin(); c != calls.rend(); ++c)  // a finishing call is usually recent
    if (c->call_id == call_id) {
      c->tokens += tokens;
      c->cost_usd += cost_usd;
      return;
    }
}

void RepetitionDetector::reset(const std::string& entity) { entities_.erase(entity); }

void RepetitionDetector::forget_pid(uint32_t pid) {
  entities_.erase("process:" + std::to_string(pid));
  for (auto& [key, s] : entities_) s.members.forget(pid);
}

}  // namespace ab::loops

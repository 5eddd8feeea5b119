#include "loops/fan_out.h"

#include <algorithm>

namespace ab::loops {

namespace {
constexpr size_t kMaxRecentPerEntity = 4096;
}

void FanOutDetector::expire(EntityState& s, int64_t now_ns) {
  for (auto it = s.in_flight.begin(); it != s.in_flight.end();) {
    if (now_ns - it->second.started_ns >= max_call_age_ns_) {
      call_entity_.erase(it->first);
      it = s.in_flight.erase(it);
    } else {
      ++it;
    }
  }
  while (!s.recent.empty() && now_ns - s.recent.front().started_ns >= detail::kNsPerMinute) s.recent.pop_front();
  while (!s.spawns.empty() && now_ns - s.spawns.front() >= detail::kNsPerMinute) s.spawns.pop_front();
}

int64_t FanOutDetector::live_count(const EntityState& s, int64_t now_ns) const {
  return std::count_if(s.in_flight.begin(), s.in_flight.end(),
                       [&](const auto& kv) { return now_ns - kv.second.started_ns < max_call_age_ns_; });
}

void FanOutDetector::sweep(int64_t now_ns) {
  last_sweep_ns_ = now_ns;
  for (auto it = entities_.begin(); it != entities_.end();) {
    EntityState& s = it->second;
    expire(s, now_ns);
    const bool idle = s.in_flight.empty() && s.recent.empty() && s.spawns.empty() && !s.episode.active(now_ns, quiet_ns_);
    it = idle ? entities_.erase(it) : std::next(it);
  }
}

FanOutDetector::EntityState& FanOutDetector::entity_state(const std::string& entity, int64_t now_ns) {
  if (now_ns - last_sweep_ns_ >= detail::kNsPerMinute) sweep(now_ns);
  if (!entities_.contains(entity) && entities_.size() >= kMaxEntities) {
    sweep(now_ns);
    if (entities_.size() >= kMaxEntities) {
      for (const auto& key : detail::least_recent_keys(entities_, detail::evict_batch(kMaxEntities))) {
        auto it = entities_.find(key);
        for (const auto& [id, call] : it->second.in_flight) call_entity_.erase(id);
        entities_.erase(it);
      }
    }
  }
  EntityState& s = entities_[entity];
  s.last_seen_ns = now_ns;
  expire(s, now_ns);
  return s;
}

std::optional<Finding> FanOutDetector::call_started(const std::string& entity, const Member& who, uint64_t call_id,
                                                    int64_t now_ns) {
  if (call_entity_.contains(call_id)) return std::nullopt;  // already counted
  if (call_entity_.size() >= kMaxCallsInFlight) sweep(now_ns);
  if (call_entity_.size() >= kMaxCallsInFlight) return std::nullopt;  // saturated: count nothing new
  EntityState& s = entity_state(entity, now_ns);
  s.members.note(who);
  s.in_flight[call_id] = {who.pid, now_ns};
  call_entity_[call_id] = entity;
  if (s.recent.size() >= kMaxRecentPerEntity) s.recent.pop_front();
  s.recent.push_back({now_ns, call_id});

  const int64_t concurrent = live_count(s, now_ns);
  if (concurrent <= rule_.max_concurrent) return std::nullopt;
  if (!s.episode.hit(now_ns, quiet_ns_)) return std::nullopt;

  Evidence e;
  e.concurrent = concurrent;
  e.since_ns = now_ns;
  std::vector<uint32_t> pids;
  for (const auto& [id, call] : s.in_flight) {
    e.since_ns = std::min(e.since_ns, call.started_ns);
    if (std::find(pids.begin(), pids.end(), call.pid) == pids.end()) pids.push_back(call.pid);
  }
  for (const Recent& r : s.recent) {
    e.tokens += r.tokens;
    e.cost_usd += r.cost_usd;
  }
  // Both windows are one minute, so the counts are the per-minute rates.
  e.rate_per_min = static_cast<double>(s.recent.size());
  e.spawns_per_min = static_cast<double>(s.spawns.size());
  return detail::make_finding(kFanOut, entity, s.members.select(pids), e, rule_.action, now_ns);
}

void FanOutDetector::call_finished(uint64_t call_id, int64_t now_ns, int64_t tokens, double cost_usd) {
  auto owner = call_entity_.find(call_id);
  if (owner == call_entity_.end()) return;
  auto it = entities_.find(owner->second);
  call_entity_.erase(owner);
  if (it == entities_.end()) return;
  EntityState& s = it->second;
  // Over the limit until this very moment: the episode lasts at least until now.
  if (live_count(s, now_ns) > rule_.max_concurrent) s.episode.extend(now_ns);
  s.in_flight.erase(call_id);
  for (auto r = s.recent.rbegin(); r != s.recent.rend(); ++r)
    if (r->call_id == call_id) {
      r->tokens += tokens;
      r->cost_usd += cost_usd;
      break;
    }
}

void FanOutDetector::on_spawn(const std::string& entity, int64_t now_ns) {
  EntityState& s = entity_state(entity, now_ns);
  if (s.spawns.size() >= kMaxRecentPerEntity) s.spawns.pop_front();
  s.spawns.push_back(now_ns);
}

int64_t FanOutDetector::in_flight(const std::string& entity, int64_t now_ns) const {
  auto it = entities_.find(entity);
  return it == entities_.end() ? 0 : live_count(it->second, now_ns);
}

bool FanOutDetector::should_hold(const std::string& entity, int64_t now_ns) const {
  return policy::gates(rule_.action) && in_flight(entity, now_ns) >= rule_.max_concurrent;
}

void FanOutDetector::reset(const std::string& entity) {
  auto it = entities_.find(entity);
  if (it == entities_.end()) return;
  for (const auto& [id, call] : it->second.in_flight) call_entity_.erase(id);
  entities_.erase(it);
}

void FanOutDetector::forget_pid(uint32_t pid) {
  for (auto& [key, s] : entities_) {
    for (auto it = s.in_flight.begin(); it != s.in_flight.end();) {
      if (it->second.pid == pid) {
        call_entity_.erase(it->first);
        it = s.in_flight.erase(it);
      } else {
        ++it;
      }
    }
    s.members.forget(pid);
  }
}

void FanOutDetector::clear() {
  entities_.clear();
  call_entity_.clear();
}

}  // namespace ab::loops

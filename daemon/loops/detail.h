// detail.h — small pieces the detectors share. Internal to daemon/loops.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loops/finding.h"

namespace ab::loops::detail {

inline constexpr int64_t kNsPerSecond = 1'000'000'000;
inline constexpr int64_t kNsPerMinute = 60 * kNsPerSecond;

inline int64_t to_ns(policy::Millis ms) { return static_cast<int64_t>(ms.count()) * 1'000'000; }

// Once-per-episode latch. The first hit fires; hits that follow each other less than
// `quiet_ns` apart belong to the same episode and stay silent. A detector calls hit() only
// when its condition holds, so "quiet" means "the condition has not held for quiet_ns".
class Episode {
 public:
  bool hit(int64_t now_ns, int64_t quiet_ns) {
    const bool fire = !active_ || now_ns - last_hit_ns_ >= quiet_ns;
    active_ = true;
    last_hit_ns_ = now_ns;
    return fire;
  }
  // The condition still holds without a new hit (e.g. calls still over the limit).
  void extend(int64_t now_ns) {
    if (active_) last_hit_ns_ = std::max(last_hit_ns_, now_ns);
  }
  bool active(int64_t now_ns, int64_t quiet_ns) const { return active_ && now_ns - last_hit_ns_ < quiet_ns; }
  void reset() { active_ = false; }

 private:
  bool active_ = false;
  int64_t last_hit_ns_ = 0;
};

// A finding about one entity (the shape three detectors share; ping-pong adds its ring's).
inline Finding make_finding(std::string_view detector, const std::string& entity, std::vector<Member> members,
                            const Evidence& evidence, policy::Action action, int64_t now_ns) {
  Finding f;
  f.detector = std::string(detector);
  f.entity = entity;
  f.entities = {entity};
  f.members = std::move(members);
  f.evidence = evidence;
  f.action = action;
  f.at_ns = now_ns;
  return f;
}

// Events per minute, over the span from the first to now. A span shorter than a second is
// taken as one second so a burst does not report an absurd rate.
inline double per_minute(int64_t count, int64_t since_ns, int64_t now_ns) {
  const int64_t span = std::max(now_ns - since_ns, kNsPerSecond);
  return static_cast<double>(count) * static_cast<double>(kNsPerMinute) / static_cast<double>(span);
}

// Remembers the facts of the processes an entity's observations came from (bounded), so a
// finding can name them.
class MemberBook {
 public:
  void note(const Member& m) {
    for (auto& known : members_)
      if (known.pid == m.pid) {
        known = m;
        return;
      }
    if (members_.size() >= kMaxMembers) members_.erase(members_.begin());  // the oldest goes
    members_.push_back(m);
  }
  void forget(uint32_t pid) {
    std::erase_if(members_, [pid](const Member& m) { return m.pid == pid; });
  }
  // The members whose pid is in `pids` (order of first note), or all when `pids` is empty.
  std::vector<Member> select(const std::vector<uint32_t>& pids) const {
    if (pids.empty()) return members_;
    std::vector<Member> out;
    for (const auto& m : members_)
      if (std::find(pids.begin(), pids.end(), m.pid) != pids.end()) out.push_back(m);
    return out;
  }

 private:
  std::vector<Member> members_;
};

// How many entries go at once when a map is at its cap: an eighth of it. The scan that finds
// them is O(size); evicting a batch keeps it (and the sweep before it) off all but one insert
// in kMax/8 when far more entities are active than fit.
constexpr size_t evict_batch(size_t cap) { return cap / 8 > 0 ? cap / 8 : 1; }

// The keys of the `n` entries with the smallest `last_seen_ns` (all of them if fewer).
template <class Map>
std::vector<typename Map::key_type> least_recent_keys(const Map& map, size_t n) {
  std::vector<std::pair<int64_t, const typename Map::key_type*>> by_age;
  by_age.reserve(map.size());
  for (const auto& [key, value] : map) by_age.emplace_back(value.last_seen_ns, &key);
  n = std::min(n, by_age.size());
  std::nth_element(by_age.begin(), by_age.begin() + static_cast<std::ptrdiff_t>(n), by_age.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<typename Map::key_type> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*by_age[i].second);
  return out;
}

// Drops the evict_batch(cap) least recently seen entries (runs only when a map is at its cap,
// after idle entries have been swept).
template <class Map>
void evict_least_recent(Map& map, size_t cap) {
  for (const auto& key : least_recent_keys(map, evict_batch(cap))) map.erase(key);
}

}  // namespace ab::loops::detail

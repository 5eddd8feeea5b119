#include "loops/ping_pong.h"

#include <algorithm>

namespace ab::loops {

std::string_view to_string(ChannelKind k) {
  switch (k) {
    case ChannelKind::TcpLoopback: return "tcp_loopback";
    case ChannelKind::Unix: return "unix";
    case ChannelKind::Pipe: return "pipe";
  }
  return "unknown";
}

const PingPongDetector::Process* PingPongDetector::find(uint32_t pid) const {
  auto it = processes_.find(pid);
  return it == processes_.end() ? nullptr : &it->second;
}

PingPongDetector::Process& PingPongDetector::process(uint32_t pid, int64_t now_ns) {
  if (!processes_.contains(pid) && processes_.size() >= kMaxProcesses) {
    sweep(now_ns);
    if (processes_.size() >= kMaxProcesses)
      for (uint32_t old : detail::least_recent_keys(processes_, detail::evict_batch(kMaxProcesses))) forget_pid(old);
  }
  Process& p = processes_[pid];
  p.member.pid = pid;
  p.last_seen_ns = std::max(p.last_seen_ns, now_ns);
  return p;
}

void PingPongDetector::add_channel(uint32_t pid_a, uint32_t pid_b, ChannelKind kind, int64_t now_ns) {
  if (pid_a == pid_b || connected(pid_a, pid_b)) return;
  for (auto [self, other] : {std::pair{pid_a, pid_b}, std::pair{pid_b, pid_a}}) {
    auto& neighbours = process(self, now_ns).neighbours;
    if (neighbours.size() >= kMaxNeighbours) {
      // Drop the oldest channel on both sides, so adjacency stays symmetric.
      const uint32_t dropped = neighbours.front().first;
      neighbours.erase(neighbours.begin());
      if (auto it = processes_.find(dropped); it != processes_.end())
        std::erase_if(it->second.neighbours, [self](const auto& n) { return n.first == self; });
    }
    neighbours.emplace_back(other, kind);
  }
}

bool PingPongDetector::connected(uint32_t pid_a, uint32_t pid_b) const {
  const Process* a = find(pid_a);
  if (!a) return false;
  return std::any_of(a->neighbours.begin(), a->neighbours.end(), [pid_b](const auto& n) { return n.first == pid_b; });
}

// Which neighbour's turn this call answers, if the exchange is unambiguous (see the header).
std::optional<uint32_t> PingPongDetector::handed_off_by(uint32_t pid, const Process& self, int64_t start_ns) const {
  const Process* from = nullptr;
  uint32_t from_pid = 0;
  for (const auto& [n, kind] : self.neighbours) {
    const Process* p = find(n);
    if (!p || !p->has_call || p->last_end_ns > start_ns) continue;
    if (!from || p->last_end_ns > from->last_end_ns) {
      from = p;
      from_pid = n;
    }
  }
  if (!from) return std::nullopt;
  // Still busy with (or continuing) its own turn while `from` worked: not an answer.
  if (self.has_call && self.last_end_ns > from->last_start_ns) return std::nullopt;
  for (const auto& [n, kind] : self.neighbours) {
    if (n == from_pid || n == pid) continue;
    const Process* z = find(n);
    if (z && z->has_call && z->last_end_ns > from->last_start_ns && z->last_start_ns <= start_ns)
      return std::nullopt;  // another neighbour was active in the same stretch: ambiguous
  }
  return from_pid;
}

std::optional<Finding> PingPongDetector::on_llm_call(const std::string& entity, const Member& who, int64_t start_ns,
                                                     int64_t end_ns, int64_t tokens, double cost_usd) {
  const int64_t now_ns = end_ns;
  if (now_ns - last_sweep_ns_ >= detail::to_ns(rule_.window)) sweep(now_ns);
  const uint32_t pid = who.pid;
  Process& self = process(pid, now_ns);
  self.member = who;
  self.entity = entity;

  std::optional<Finding> finding;
  if (auto from_pid = handed_off_by(pid, self, start_ns)) {
    const Process& from = processes_.at(*from_pid);
    std::vector<Step> chain = from.chain;
    if (chain.empty()) chain.push_back({*from_pid, from.last_start_ns, 0, 0});
    auto back_to = std::find_if(chain.begin(), chain.end(), [pid](const Step& s) { return s.pid == pid; });
    if (back_to != chain.end()) {
      // Back at a process already on the chain: the steps from it to here are one round trip.
      RoundTrip trip{now_ns, back_to->started_ns, 0, 0};
      std::vector<uint32_t> ring;
      for (auto it = back_to; it != chain.end(); ++it) {
        ring.push_back(it->pid);
        trip.tokens += it->tokens;
        trip.cost_usd += it->cost_usd;
      }
      chain.erase(back_to, chain.end());
      finding = round_trip(ring, trip, entity, now_ns);
    }
    chain.push_back({pid, start_ns, tokens, cost_usd});
    if (chain.size() > kMaxChain) chain.erase(chain.begin());
    self.chain = std::move(chain);
  } else {
    const bool neighbour_spoke_since = self.has_call && std::any_of(self.neighbours.begin(), self.neighbours.end(), [&](const auto& n) {
      const Process* p = find(n.first);
      return p && p->has_call && p->last_end_ns > self.last_end_ns;
    });
    if (self.has_call && !neighbour_spoke_since && !self.chain.empty() && self.chain.back().pid == pid) {
      self.chain.back().tokens += tokens;  // another call of the same turn
      self.chain.back().cost_usd += cost_usd;
    } else {
      self.chain = {{pid, start_ns, tokens, cost_usd}};
    }
  }
  self.has_call = true;
  self.last_start_ns = start_ns;
  self.last_end_ns = std::max(self.last_end_ns, end_ns);
  return finding;
}

std::optional<Finding> PingPongDetector::round_trip(const std::vector<uint32_t>& ring, const RoundTrip& trip,
                                                    const std::string& entity, int64_t now_ns) {
  const int64_t window = detail::to_ns(rule_.window);
  std::vector<uint32_t> key = ring;
  std::sort(key.begin(), key.end());
  if (!rings_.contains(key) && rings_.size() >= kMaxRings) {
    sweep(now_ns);
    if (rings_.size() >= kMaxRings) {
      auto quietest = rings_.begin();
      for (auto it = rings_.begin(); it != rings_.end(); ++it) {
        const int64_t last = it->second.trips.empty() ? 0 : it->second.trips.back().at_ns;
        const int64_t q = quietest->second.trips.empty() ? 0 : quietest->second.trips.back().at_ns;
        if (last < q) quietest = it;
      }
      rings_.erase(quietest);
    }
  }
  Ring& r = rings_[key];
  while (!r.trips.empty() && now_ns - r.trips.front().at_ns >= window) r.trips.pop_front();
  if (r.trips.size() >= kMaxTripsPerRing) r.trips.pop_front();
  r.trips.push_back(trip);
  if (static_cast<int64_t>(r.trips.size()) <= rule_.max_round_trips) return std::nullopt;
  if (!r.episode.hit(now_ns, window)) return std::nullopt;

  Evidence e;
  e.round_trips = static_cast<int64_t>(r.trips.size());
  e.since_ns = r.trips.front().started_ns;
  for (const RoundTrip& t : r.trips) {
    e.tokens += t.tokens;
    e.cost_usd += t.cost_usd;
  }
  e.rate_per_min = detail::per_minute(e.round_trips, e.since_ns, now_ns);
  Finding f;
  f.detector = std::string(kPingPong);
  f.entity = entity;
  f.entities = {entity};
  for (uint32_t pid : ring) {
    const Process* p = find(pid);
    if (!p) continue;
    f.members.push_back(p->member);
    if (!p->entity.empty() && std::find(f.entities.begin(), f.entities.end(), p->entity) == f.entities.end())
      f.entities.push_back(p->entity);
  }
  f.evidence = e;
  f.action = rule_.action;
  f.at_ns = now_ns;
  return f;
}

void PingPongDetector::sweep(int64_t now_ns) {
  const int64_t window = detail::to_ns(rule_.window);
  last_sweep_ns_ = now_ns;
  for (auto it = rings_.begin(); it != rings_.end();) {
    Ring& r = it->second;
    while (!r.trips.empty() && now_ns - r.trips.front().at_ns >= window) r.trips.pop_front();
    const bool idle = r.trips.empty() && !r.episode.active(now_ns, window);
    it = idle ? rings_.erase(it) : std::next(it);
  }
  // A process without channels matters only while a channel may still arrive for its recent
  // calls; one with channels stays until it exits (channels are not reported twice).
  std::erase_if(processes_, [&](const auto& kv) {
    return kv.second.neighbours.empty() && now_ns - kv.second.last_seen_ns >= window;
  });
}

void PingPongDetector::reset(const std::string& entity) {
  std::vector<uint32_t> pids;
  for (auto& [pid, p] : processes_)
    if (p.entity == entity) {
      pids.push_back(pid);
      p.chain.clear();
      p.has_call = false;
    }
  std::erase_if(rings_, [&](const auto& kv) {
    return std::any_of(kv.first.begin(), kv.first.end(),
                       [&](uint32_t m) { return std::find(pids.begin(), pids.end(), m) != pids.end(); });
  });
}

void PingPongDetector::forget_pid(uint32_t pid) {
  auto it = processes_.find(pid);
  if (it == processes_.end()) return;
  for (const auto& [n, kind] : it->second.neighbours)
    if (auto other = processes_.find(n); other != processes_.end())
      std::erase_if(other->second.neighbours, [pid](const auto& x) { return x.first == pid; });
  processes_.erase(it);
  // A reused pid must not close a ring its predecessor was on.
  for (auto& [other_pid, p] : processes_)
    if (std::any_of(p.chain.begin(), p.chain.end(), [pid](const Step& s) { return s.pid == pid; })) p.chain.clear();
  std::erase_if(rings_, [pid](const auto& kv) { return std::binary_search(kv.first.begin(), kv.first.end(), pid); });
}

void PingPongDetector::clear_activity() {
  rings_.clear();
  for (auto& [pid, p] : processes_) {
    p.has_call = false;
    p.chain.clear();
  }
}

}  // namespace ab::loops

// loops_glue.cpp — where the loop detectors see the host: channels between watched processes
// (pipes and loopback TCP connections found in their fd tables), request starts with their
// fingerprints, response ends, spawns and exits; and where a finding becomes an action.
//
// Channels come from a periodic look at the fd tables of watched processes only (a pipe inode
// or the two ends of a loopback TCP connection held by two of them), never from tracing reads
// and writes host-wide.
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <cstring>

#include "capture/socket_scan.h"
#include "core/daemon_impl.h"
#include "loops/fingerprint.h"

namespace ab::core {

namespace {

bool loopback(const ab_endpoint_key& k) {
  if (k.family == AF_INET) return k.addr[0] == 127;
  static const uint8_t v6_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(k.addr, v6_lo, 16) == 0 || (std::memcmp(k.addr, mapped, 12) == 0 && k.addr[12] == 127);
}

std::string endpoint_str(const ab_endpoint_key& k) {
  std::string s(reinterpret_cast<const char*>(k.addr), 16);
  return std::to_string(k.family) + ":" + s + ":" + std::to_string(k.port);
}

}  // namespace

loops::ProcessInfo Daemon::loop_info(uint32_t pid) {
  const Attribution who = attribute(pid);
  loops::ProcessInfo i;
  i.pid = pid;
  i.tree_root_pid = who.tree_root_pid;
  i.facts = facts_of(who);
  return i;
}

bool Daemon::loops_enabled() const {
  const auto& l = policy_->loops;
  return l.ping_pong.enabled || l.repetition.enabled || l.fan_out.enabled || l.retry_storm.enabled;
}

void Daemon::scan_channels() {
  if (!policy_->loops.ping_pong.enabled) return;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  std::map<uint64_t, std::vector<uint32_t>> pipe_owners, socket_owner;
  for (const auto& [pid, w] : watched_) {
    if (!w.attached) continue;
    auto fds = capture::fd_inodes(static_cast<int>(pid));
    for (auto ino : fds.pipes) pipe_owners[ino].push_back(pid);
    for (auto ino : fds.sockets) socket_owner[ino].push_back(pid);
  }
  std::set<std::pair<uint32_t, uint32_t>> pairs;
  for (auto& [ino, owners] : pipe_owners)
    for (size_t i = 0; i < owners.size(); i++)
      for (size_t j = i + 1; j < owners.size(); j++)
        if (owners[i] != owners[j]) pairs.insert(std::minmax(owners[i], owners[j]));
  for (const auto& [a, b] : pairs) loops_.add_channel(a, b, loops::ChannelKind::Pipe, now);

  // Loopback TCP: the two ends of one connection are two /proc/net/tcp lines with local and
  // remote swapped; each end's inode names its owner.
  std::map<std::string, uint64_t> by_ends;  // "local|remote" → inode
  std::vector<capture::TcpConnection> conns;
  for (auto& c : capture::read_tcp_connections())
    if (loopback(c.remote) && loopback(c.local)) {
      by_ends[endpoint_str(c.local) + "|" + endpoint_str(c.remote)] = c.inode;
      conns.push_back(c);
    }
  std::set<std::pair<uint32_t, uint32_t>> tcp_pairs;
  for (const auto& c : conns) {
    auto mine = socket_owner.find(c.inode);
    if (mine == socket_owner.end()) continue;
    auto peer = by_ends.find(endpoint_str(c.remote) + "|" + endpoint_str(c.local));
    if (peer == by_ends.end()) continue;
    auto theirs = socket_owner.find(peer->second);
    if (theirs == socket_owner.end()) continue;
    for (uint32_t a : mine->second)
      for (uint32_t b : theirs->second)
        if (a != b) tcp_pairs.insert(std::minmax(a, b));
  }
  for (const auto& [a, b] : tcp_pairs) loops_.add_channel(a, b, loops::ChannelKind::TcpLoopback, now);

  // Unix sockets (connections and socketpairs inherited across fork): the kernel names each
  // end's peer inode.
  std::set<std::pair<uint32_t, uint32_t>> unix_pairs;
  for (const auto& [ino, peer] : capture::unix_socket_peers()) {
    auto mine = socket_owner.find(ino);
    auto theirs = socket_owner.find(peer);
    if (mine == socket_owner.end() || theirs == socket_owner.end()) continue;
    for (uint32_t a : mine->second)
      for (uint32_t b : theirs->second)
        if (a != b) unix_pairs.insert(std::minmax(a, b));
  }
  for (const auto& [a, b] : unix_pairs) loops_.add_channel(a, b, loops::ChannelKind::Unix, now);
}

void Daemon::loops_on_request(const capture::CapturedRequest& cr, uint64_t call_id) {
  if (!loops_enabled()) return;
  const auto& r = cr.request;
  loops::CallObservation o;
  o.who = loop_info(cr.pid);
  o.call_id = call_id;
  o.now_ns = static_cast<int64_t>(r.request_start_ns);
  if (!r.last_message_text.empty())
    o.fingerprint = loops::request_fingerprint({r.last_message_text}, loops::turn_fingerprint(r.previous_message_text));
  act_on_findings(loops_.observe_call(o));
}

void Daemon::loops_on_response(const LlmCall& call, uint32_t pid, uint64_t call_id, uint64_t start_mono,
                               uint64_t end_mono) {
  if (!loops_enabled()) return;
  loops::ResponseObservation o;
  o.who = loop_info(pid);
  o.call_id = call_id;
  o.start_ns = static_cast<int64_t>(start_mono);
  o.now_ns = static_cast<int64_t>(end_mono);
  o.status = call.status;
  o.retry_after_s = call.retry_after_s;
  o.tokens = call.input_tokens + call.output_tokens;
  o.cost_usd = call.cost_usd;
  act_on_findings(loops_.observe_response(o));
  // A retry storm's pacing applies from this response on: close the gate now, not at the
  // next tick (a fast retry would pass on the old credit).
  if (gate_credits_.count(pid) && loop_holds(pid, clock_ns(CLOCK_MONOTONIC))) write_gate(pid, 0);
}

void Daemon::act_on_findings(const std::vector<loops::Finding>& findings) {
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  for (const auto& f : findings) {
    json detail = loops::to_json(f);
    const bool dry = engine_ ? engine_->dry_run() : opts_.dry_run;
    detail["action"] = std::string(policy::to_string(f.action));
    detail["dry_run"] = dry;
    const uint32_t pid = f.members.empty() ? 0 : f.members.front().pid;
    const std::string cgroup = f.members.empty() ? "" : f.members.front().cgroup;
    const std::string comm = f.members.empty() ? "" : f.members.front().comm;
    spdlog::warn("loop detected ({}) in {}: {} member(s) → {}", f.detector, f.entity, f.members.size(),
                 detail["action"].get<std::string>());
    record_event("loop_detected", pid, cgroup, comm, detail);
    if (dry) {
      // what a real run would have done: hold the members at their next request start
      if (f.action == policy::Action::Throttle || f.action == policy::Action::Deny)
        for (const auto& m : f.members) record_dry_run_hold(m.pid, f.detector == loops::kFanOut ? "fan_out" : "loop",
                                                            {{"detector", f.detector}});
      continue;
    }
    switch (f.action) {
      case policy::Action::Alert:
        break;
      case policy::Action::Kill:
        for (const auto& e : f.entities) kill_entity(e, pid, "loop", "");
        break;
      case policy::Action::Deny:
        for (const auto& e : f.entities) deny_entity(e, pid, f.detector);
        [[fallthrough]];
      case policy::Action::Throttle: {
        // Pace the members: their next request starts wait (held) until the pause is over.
        //   repetition: the same work again and again: held for the rule's window (max_hold
        //               ends it with a recorded escalation if the loop goes on);
        //   retry_storm: every later request waits out the retry-after it was given;
        //   ping_pong / fan_out: a pause of one cooldown (fan-out also caps concurrency).
        int64_t pause_ns = std::max<int64_t>(policy_->cooldown.count(), 1000) * 1'000'000;
        if (f.detector == loops::kRepetition)
          pause_ns = std::max<int64_t>(pause_ns, policy_->loops.repetition.window.count() * 1'000'000);
        if (f.evidence.retry_after_s > 0) pause_ns = std::max<int64_t>(pause_ns, int64_t(f.evidence.retry_after_s * 1e9));
        if (f.detector == loops::kFanOut) break;  // held by its concurrency credits, not paused
        for (const auto& m : f.members) {
          loop_paced_until_[m.pid] = now + pause_ns;
          paced_by_[m.pid] = f.detector;
          if (f.detector == loops::kRetryStorm)
            storm_until_[m.pid] = now + policy_->loops.retry_storm.window.count() * 1'000'000;
          if (watched_.count(m.pid) && watched_[m.pid].attached) write_gate(m.pid, 0);
        }
        break;
      }
    }
  }
}

// A member paced by a loop rule is held at its next request start (fan-out: fan_out_full).
bool Daemon::loop_holds(uint32_t pid, int64_t now) {
  auto it = loop_paced_until_.find(pid);
  if (it != loop_paced_until_.end()) {
    if (now < it->second) return true;
    loop_paced_until_.erase(it);
    paced_by_.erase(pid);
  }
  if (auto st = storm_until_.find(pid); st != storm_until_.end()) {
    if (now >= st->second) storm_until_.erase(st);
    else if (loops_.pace_until_ns(loop_info(pid), now) > now) return true;
  }
  return false;
}

// A call held because its entity already has max_concurrent in flight: that is the fan-out
// finding (the detector itself never sees the excess, since it never leaves). Reported once
// per episode: again only after the entity went a minute without being held.
void Daemon::report_fan_out_hold(uint32_t pid, const std::string& entity, int64_t now) {
  auto last = fan_out_reported_.find(entity);
  const bool same_episode = last != fan_out_reported_.end() && now - last->second < 60'000'000'000LL;
  fan_out_reported_[entity] = now;
  if (same_episode) return;
  loops::Finding f;
  f.detector = std::string(loops::kFanOut);
  f.entity = entity;
  f.entities = {entity};
  f.action = policy_->loops.fan_out.action;
  f.at_ns = now;
  f.evidence.concurrent = loops_.fan_out().in_flight(entity, now) + 1;
  f.evidence.since_ns = now;
  for (const auto& [p, w] : watched_) {
    if (!w.attached || fan_out_entity(p) != entity || f.members.size() >= loops::kMaxMembers) continue;
    f.members.push_back(loop_info(p).member());
  }
  if (f.members.empty()) f.members.push_back(loop_info(pid).member());
  act_on_findings({f});
}

// The fan-out entity of a process when the fan_out rule gates (throttle, deny, kill).
std::optional<std::string> Daemon::fan_out_entity(uint32_t pid) {
  const auto& fo = policy_->loops.fan_out;
  if (!fo.enabled || !policy::gates(fo.action) || (engine_ && engine_->dry_run())) return std::nullopt;
  const loops::ProcessInfo info = loop_info(pid);
  return policy::bucket_key(fo.match, fo.per, info.facts, pid, info.tree_root_pid);
}

// A place is taken from the moment a request may go (a credit written, a hold released) until
// the request is seen; from then on it is a call in flight until its response ends. Counting
// places this way, and never re-dealing a credit the kernel may already have used, keeps the
// entity at max_concurrent even when many processes start at once.
int64_t Daemon::places_held(uint32_t pid) const {
  int64_t n = 0;
  if (auto it = gate_credits_.find(pid); it != gate_credits_.end()) n += std::max<int64_t>(0, it->second);
  if (auto it = released_unseen_.find(pid); it != released_unseen_.end()) n += it->second;
  return n;
}

int64_t Daemon::fan_out_room(const std::string& entity, int64_t now, uint32_t except_pid) {
  int64_t room = policy_->loops.fan_out.max_concurrent - loops_.fan_out().in_flight(entity, now);
  std::set<uint32_t> holders;
  for (const auto& [pid, credits] : gate_credits_)
    if (credits > 0) holders.insert(pid);
  for (const auto& [pid, n] : released_unseen_)
    if (n > 0) holders.insert(pid);
  for (uint32_t pid : holders)
    if (pid != except_pid && fan_out_entity(pid) == entity) room -= places_held(pid);
  return room;
}

bool Daemon::fan_out_full(uint32_t pid, int64_t now) {
  auto entity = fan_out_entity(pid);
  return entity && fan_out_room(*entity, now, pid) <= 0;
}

size_t Daemon::calls_in_flight(uint32_t pid) const {
  size_t n = 0;
  for (auto it = call_ids_.lower_bound({pid, 0}); it != call_ids_.end() && it->first.first == pid; ++it)
    n += it->second.size();
  return n;
}

}  // namespace ab::core

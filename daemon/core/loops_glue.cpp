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
  // After a retry storm was found, every later request waits out the retry-after it was given
  // (for the rule's window), from this response on: a fast retry must not pass on its credit.
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  if (auto st = storm_until_.find(pid); st != storm_until_.end()) {
    if (now >= st->second.until_ns) {
      storm_until_.erase(st);
    } else if (int64_t until = loops_.pace_until_ns(o.who, now); until > now && gate_) {
      gate::Pace pc{pid, until, gate::HoldReason::Loop, std::string(loops::kRetryStorm), st->second.action,
                    st->second.entities};
      apply_gate(gate_->pace(pc, now));
    }
  }
}

void Daemon::act_on_findings(const std::vector<loops::Finding>& findings) {
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  for (const auto& f : findings) {
    json detail = loops::to_json(f);
    const bool dry = gate_ ? gate_->dry_run() : opts_.dry_run;
    detail["action"] = std::string(policy::to_string(f.action));
    detail["dry_run"] = dry;
    const uint32_t pid = f.members.empty() ? 0 : f.members.front().pid;
    const std::string cgroup = f.members.empty() ? "" : f.members.front().cgroup;
    const std::string comm = f.members.empty() ? "" : f.members.front().comm;
    spdlog::warn("loop detected ({}) in {}: {} member(s) → {}", f.detector, f.entity, f.members.size(),
                 detail["action"].get<std::string>());
    record_event("loop_detected", pid, cgroup, comm, detail);
    if (!gate_) continue;
    // What the gate does with it: kill or deny the entities; throttle (and deny) pace the
    // members, whose next request starts are held until the pause is over:
    //   repetition: the same work again and again: held for the rule's window;
    //   retry_storm: every later request waits out the retry-after it was given;
    //   ping_pong: a pause of one cooldown. fan_out is held by its places, not paused.
    // max_hold ends every one of these holds, with the rule's action as its escalation.
    gate::LoopFinding lf;
    lf.detector = f.detector;
    lf.action = f.action;
    lf.pid = pid;
    for (const auto& e : f.entities)
      if (auto k = gate::EntityKey::parse(e)) lf.entities.push_back(*k);
    for (const auto& m : f.members) lf.members.push_back(m.pid);
    int64_t pause_ns = std::max<int64_t>(policy_->cooldown.count(), 1000) * 1'000'000;
    if (f.detector == loops::kRepetition)
      pause_ns = std::max<int64_t>(pause_ns, policy_->loops.repetition.window.count() * 1'000'000);
    if (f.evidence.retry_after_s > 0) pause_ns = std::max<int64_t>(pause_ns, int64_t(f.evidence.retry_after_s * 1e9));
    lf.pause_ns = std::min<int64_t>(pause_ns, policy_->max_hold.count() * 1'000'000);
    if (f.detector == loops::kRetryStorm && policy::gates(f.action))
      for (const auto& m : f.members)
        storm_until_[m.pid] = {now + policy_->loops.retry_storm.window.count() * 1'000'000, f.action, lf.entities};
    apply_gate(gate_->loop_found(lf, now));
  }
}

}  // namespace ab::core

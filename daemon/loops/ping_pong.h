// ping_pong.h — agents answering each other through a local channel, each answer an LLM call.
//
// What it learns:
//   - channels between processes, from rare events: loopback TCP connect/accept pairs, Unix
//     sockets, pipes inherited across fork (add_channel). Undirected; kept until a member exits.
//   - every finished LLM call of a watched process: who, start and end (on_llm_call).
//
// A hand-off X → Y is Y's LLM call that answers X's turn: X and Y share a channel, Y's call
// starts after X's last call ended, and the exchange is strictly sequential — Y had no call
// in flight during X's last call (it was waiting for X), and no other channel neighbour of Y
// finished a call between the start of X's last call and the start of Y's (otherwise Y's
// input is ambiguous: parallel workers, a batch, a shared queue). Consecutive calls of one
// process are one turn (an agent may call the model several times before it answers).
// Processes that make no LLM calls never take a turn, so a relay through a tool server or a
// broker does not connect two agents: a shared tool server would otherwise connect every
// agent on the host.
//
// The chain of hand-offs is followed; when it comes back to a process already on it since the
// last return (A→B→A, A→B→C→A), that is one round trip of the ring formed by the processes in
// between. Round trips are counted per ring (its set of pids): an orchestrator handing work to
// a different worker each time completes no ring twice. More than `max_round_trips` round
// trips of one ring within the window is a finding naming the ring's members, the tokens and
// cost of the calls in those round trips, and the entities of all members. Once per episode
// per ring: re-armed after a whole window without a round trip over the limit, or by
// reset(entity) of any member's entity.
//
// Pure and single-threaded; times are monotonic ns.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "loops/detail.h"
#include "loops/finding.h"
#include "policy/policy.h"

namespace ab::loops {

enum class ChannelKind { TcpLoopback, Unix, Pipe };
std::string_view to_string(ChannelKind);  // "tcp_loopback", "unix", "pipe"

class PingPongDetector {
 public:
  static constexpr size_t kMaxProcesses = 8192;
  static constexpr size_t kMaxNeighbours = 64;   // per process; the oldest channel goes first
  static constexpr size_t kMaxChain = 16;        // hand-offs remembered per conversation
  static constexpr size_t kMaxRings = 4096;
  static constexpr size_t kMaxTripsPerRing = 4096;

  explicit PingPongDetector(policy::PingPong rule = {}) : rule_(std::move(rule)) {}
  void set_rule(const policy::PingPong& rule) { rule_ = rule; }
  const policy::PingPong& rule() const { return rule_; }

  // A channel between two processes (either order; a repeat is ignored; a == b is ignored).
  void add_channel(uint32_t pid_a, uint32_t pid_b, ChannelKind kind, int64_t now_ns);
  bool connected(uint32_t pid_a, uint32_t pid_b) const;

  // A finished LLM call of `who` (start_ns: request start, end_ns: response end; calls are
  // reported in the order they end). `entity`: who's bucket under the rule.
  std::optional<Finding> on_llm_call(const std::string& entity, const Member& who, int64_t start_ns,
                                     int64_t end_ns, int64_t tokens, double cost_usd);

  void reset(const std::string& entity);  // rings with a member in `entity` start over
  void forget_pid(uint32_t pid);          // the process, its channels and its rings
  void clear_activity();                  // calls and rings; channels stay (they are not re-reported)
  size_t process_count() const { return processes_.size(); }
  size_t ring_count() const { return rings_.size(); }

 private:
  struct Step {                 // one turn on a conversation chain
    uint32_t pid;
    int64_t started_ns;
    int64_t tokens;
    double cost_usd;
  };
  struct Process {
    Member member;
    std::string entity;
    std::vector<std::pair<uint32_t, ChannelKind>> neighbours;
    bool has_call = false;
    int64_t last_start_ns = 0;  // of its latest call
    int64_t last_end_ns = 0;
    std::vector<Step> chain;    // the conversation that led to its current turn, its turn last
    int64_t last_seen_ns = 0;
  };
  struct RoundTrip {
    int64_t at_ns;
    int64_t started_ns;
    int64_t tokens;
    double cost_usd;
  };
  struct Ring {
    std::deque<RoundTrip> trips;
    detail::Episode episode;
  };

  Process& process(uint32_t pid, int64_t now_ns);
  const Process* find(uint32_t pid) const;
  std::optional<uint32_t> handed_off_by(uint32_t pid, const Process& self, int64_t start_ns) const;
  std::optional<Finding> round_trip(const std::vector<uint32_t>& ring, const RoundTrip& trip, const std::string& entity,
                                    int64_t now_ns);
  void sweep(int64_t now_ns);

  policy::PingPong rule_;
  std::unordered_map<uint32_t, Process> processes_;
  std::map<std::vector<uint32_t>, Ring> rings_;  // key: the ring's pids, sorted
  int64_t last_sweep_ns_ = 0;
};

}  // namespace ab::loops

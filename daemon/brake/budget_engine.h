// budget_engine.h — the budget decisions: which buckets a call falls in, whether it may go out
// now, what it costs each bucket, who waits in the hold queue, and when they may go.
//
// Pure: no I/O, no BPF, no clock. Every function that depends on time takes now_ns, a
// monotonic clock in nanoseconds that the caller uses consistently (tests use a fake clock).
// Not thread-safe: owned by the daemon's event loop. The daemon turns decisions into side
// effects (gate maps, freezing, EPERM, kill) and events (database, alerts).
//
// Vocabulary.
//  - Bucket: one (budget, bucket key) pair. The key comes from policy::bucket_key: "cgroup:/a",
//    "tree:<root pid>", "process:<pid>". One call may fall in several buckets, of several
//    budgets (nesting: "/agents/*" and "/agents" both apply to a call from /agents/a).
//  - Each limit of a bucket is a sliding window (sliding_window.h). Tokens count
//    est_input_tokens + reserved_output_tokens when admitted and the real total when settled;
//    spend_usd counts est_cost_usd, then the real cost; requests count 1 per call.
//  - In flight: calls admitted and neither settled nor cancelled, per bucket; gated by the
//    budget's max_inflight.
//  - A call is admitted only if EVERY gating bucket (action throttle, deny or kill) has room in
//    every limit and below max_inflight, and no earlier held call waits in that bucket. Alert
//    buckets never block; they report that they are exceeded and still count the call.
//  - "Room": the bucket's level plus this call stays within the limit, or the window is empty
//    (a call larger than a whole window's limit goes out alone). Hence, in any window, the
//    admitted amount stays within the limit give or take one call (settlement may exceed the
//    reservation).
//  - Episode: a bucket enters an episode the first time a call finds no room in it (window
//    or in-flight) and leaves it when a call next finds room. The Exceeded entry that opens
//    an episode carries new_episode = true: that is when budget_exceeded is recorded, once.
//  - Dry run (policy mode observe, or set_dry_run(true)): every decision is made and
//    reported, the call is admitted and counted anyway, and the Decision says dry_run.
//  - Match cache: which budgets select a process, and its bucket in each, is a pure function
//    of (policy, pid, tree_root_pid, ProcessFacts). The engine remembers it per pid (bounded,
//    least recently used first out) so that a call costs the budgets it falls in, not every
//    budget's selector. An entry is used only when the call's tree root and facts equal the
//    ones it was computed from: an exec, a cgroup move or a reused pid is matched afresh
//    without being told. A policy change empties the cache; forget_process drops an exited
//    process's entry. Decisions are the same with the cache or without it (capacity 0).
#pragma once

#include <compare>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "brake/lease_source.h"
#include "brake/sliding_window.h"
#include "policy/policy.h"

namespace ab::brake {

// A call about to go out, as the daemon knows it at the start of the request.
struct CallFacts {
  uint32_t pid = 0;
  uint32_t tree_root_pid = 0;             // 0: the process is its own tree root
  policy::ProcessFacts facts;
  int64_t est_input_tokens = 0;           // estimated from the request size
  int64_t reserved_output_tokens = 0;     // the request's max_tokens, or the model's default
  double est_cost_usd = 0;                // the reservation priced (input + reserved output)
  int64_t reserved_tokens() const { return est_input_tokens + reserved_output_tokens; }
};

struct BucketId {
  std::string budget;                     // budget name
  std::string key;                        // policy::bucket_key
  auto operator<=>(const BucketId&) const = default;
};

// A bucket a call falls in.
struct BucketRef {
  BucketId id;
  policy::Action action = policy::Action::Throttle;
  bool gates() const { return policy::gates(action); }
};

// A bucket without room for a call.
struct Exceeded {
  enum class Reason {
    Window,    // a windowed limit (tokens, spend_usd, requests) would be passed
    Inflight,  // max_inflight calls are already in flight
    Queue,     // the bucket has room, but an earlier held call waits in it (FIFO)
  };
  BucketId bucket;
  policy::Action action = policy::Action::Throttle;
  Reason reason = Reason::Window;
  // Reason::Window: which limit, as compiled (index into Budget::limits).
  int limit_index = -1;
  policy::LimitKind kind = policy::LimitKind::Tokens;
  int64_t window_ns = 0;
  // Window: the limit's amount; Inflight: max_inflight. Unused for Queue.
  double limit = 0;
  // Window: the level before this call; Inflight: calls in flight. Unused for Queue.
  double level = 0;
  double requested = 0;                   // what this call would add (1 for in-flight)
  // This bucket just entered an episode: record budget_exceeded now (once per episode).
  bool new_episode = false;
  bool gates() const { return policy::gates(action); }
};

struct Decision {
  bool admitted = false;
  uint64_t reservation_id = 0;            // non-zero when admitted: settle or cancel it later
  std::vector<BucketRef> buckets;         // every bucket the call falls in, policy order
  std::vector<Exceeded> exceeded;         // every bucket without room, gating or not
  // Made in a dry run: admitted whatever `exceeded` says; nothing is to be enforced.
  bool dry_run = false;

  // The entries of `exceeded` that hold the call (or would have, in a dry run).
  std::vector<Exceeded> blocking() const;
  // The strongest action among blocking buckets; nullopt when nothing blocks.
  std::optional<policy::Action> strongest_action() const;
  // Whether a bucket entered an episode with this call.
  bool any_new_episode() const;
};

// A call waiting in the hold queue.
struct Held {
  uint64_t hold_id = 0;
  uint32_t pid = 0;
  uint64_t start_time = 0;                // the process's start time: pid + start_time name it
  CallFacts call;
  int64_t since_ns = 0;                   // when it was put on hold
};

struct Released {
  Held held;
  Decision decision;                      // admitted; settle or cancel decision.reservation_id
};

// A held call that waited max_hold: removed from the queue and not admitted. The caller
// records the escalation, then releases it (force_admit) or applies `action` to its entity.
struct Expired {
  Held held;
  int64_t held_ns = 0;
  std::vector<BucketRef> gating;          // its gating buckets at expiry
  policy::Action action = policy::Action::Throttle;  // the strongest of them
};

struct LimitStatus {
  policy::LimitKind kind = policy::LimitKind::Tokens;
  double limit = 0;
  int64_t window_ns = 0;
  std::string origin;                     // "tokens_per_minute", "limits[2]"
  double level = 0;                       // in the window at the snapshot's now
};

struct BucketStatus {
  BucketId id;
  policy::Action action = policy::Action::Throttle;
  std::vector<LimitStatus> limits;        // Budget::limits order
  int64_t inflight = 0;
  std::optional<int64_t> max_inflight;
  size_t held = 0;                        // held calls that fall in this bucket
  bool in_episode = false;
};

struct Snapshot {
  std::vector<BucketStatus> buckets;      // ordered by (budget, key)
  size_t held = 0;                        // calls in the hold queue
  size_t reservations = 0;                // admitted calls not yet settled or cancelled
  bool dry_run = false;
};

// A past call, for rebuilding windows at start (from the database). ts_ns must be on the
// clock the engine is driven with: convert wall-clock times before calling restore.
struct HistoryRecord {
  int64_t ts_ns = 0;
  uint32_t pid = 0;
  uint32_t tree_root_pid = 0;
  policy::ProcessFacts facts;
  int64_t tokens = 0;
  double cost_usd = 0;
};

class BudgetEngine {
 public:
  explicit BudgetEngine(std::shared_ptr<const policy::Policy> policy);

  // Swaps the policy. A bucket's levels survive when its budget (by name) still exists and
  // has a limit of the same kind and window; in-flight counts and episodes survive with the
  // budget. Buckets of removed budgets are dropped. Held calls stay held and are judged by
  // the new policy at the next release_ready.
  void set_policy(std::shared_ptr<const policy::Policy> policy);
  const policy::Policy& policy() const { return *policy_; }

  // Where `scope: fleet` buckets get their room (lease_source.h); null: fleet budgets are
  // counted like host budgets (no fleet configured, unit tests). Not owned.
  void set_lease_source(LeaseSource* source);

  // --dry-run: on top of the policy's mode.
  void set_dry_run(bool on) { dry_run_flag_ = on; }
  bool dry_run() const { return dry_run_flag_ || policy_->dry_run(); }

  // Decides a new call. Admitted: counted in every bucket it falls in (a reservation that
  // settle or cancel ends). Not admitted: nothing is counted; a throttled caller may hold().
  Decision admit(const CallFacts& call, int64_t now_ns);
  // Counts a call that goes out whatever the buckets say (a hold that expired and is
  // released, a request that could not be held). The Decision reports what was exceeded.
  Decision force_admit(const CallFacts& call, int64_t now_ns);

  // Replaces a reservation by the real usage (larger or smaller) and ends its in-flight
  // count. The call stays counted at its admission time. False for an unknown id.
  // A negative (or non-finite) amount keeps what was reserved for that kind of limit: the call's
  // real usage is unknown (its response was malformed).
  bool settle(uint64_t reservation_id, int64_t actual_tokens, double actual_cost_usd, int64_t now_ns);
  // Withdraws a reservation entirely (the request never left) and ends its in-flight count.
  bool cancel(uint64_t reservation_id);

  // ---- the hold queue ------------------------------------------------------------------------
  // Puts a call that was not admitted on hold; returns its hold id (never 0).
  uint64_t hold(uint32_t pid, uint64_t start_time, const CallFacts& call, int64_t now_ns);
  // Admits the held calls that fit now, oldest first, and removes them from the queue. A held
  // call never overtakes an earlier one that shares one of its gating buckets: once a call
  // stays held, every later call in any of its gating buckets stays held too.
  std::vector<Released> release_ready(int64_t now_ns);
  // Removes the calls held for max_hold or longer, oldest first.
  std::vector<Expired> expired(int64_t now_ns);
  // Removes held calls of a process (it exited, or the caller released it by other means).
  // start_time 0 matches any. Returns how many.
  size_t drop_held(uint32_t pid, uint64_t start_time = 0);
  size_t held_count() const { return held_.size(); }
  std::vector<Held> held() const { return held_; }
  // When the caller should next run expired/release_ready if nothing else happens: the
  // earliest max_hold deadline or window expiry that could free a held call. Settlements
  // and cancellations can free calls sooner; run release_ready after them too.
  std::optional<int64_t> next_wakeup_ns(int64_t now_ns) const;

  // ---- cooldown between two actions on one entity ------------------------------------------
  // `entity` is whatever the caller acts on ("cgroup:/agents/a", "tree:42").
  bool action_allowed(const std::string& entity, int64_t now_ns) const;
  void note_action(const std::string& entity, int64_t now_ns);

  // ---- history and upkeep -------------------------------------------------------------------
  // Seeds windows with calls made before this engine existed (settled, never in flight).
  // Records older than every window of their buckets have no effect.
  void restore(const std::vector<HistoryRecord>& history, int64_t now_ns);
  // Forgets buckets with nothing in their windows, nothing in flight and nothing held, and
  // cooldowns that have run out. Returns how many buckets were forgotten.
  size_t forget_idle(int64_t now_ns);

  Snapshot snapshot(int64_t now_ns) const;

  // The buckets a call falls in under the current policy, policy order.
  std::vector<BucketRef> buckets_of(const CallFacts& call) const;

  // ---- the match cache (see the top of this file) --------------------------------------------
  static constexpr size_t kDefaultMatchCacheCapacity = 4096;  // processes
  // The process exited: forget its matches (its pid may come back as another process; that
  // would be noticed anyway, this only frees the entry early).
  void forget_process(uint32_t pid);
  // At most `n` processes remembered; 0 turns the cache off. Shrinking drops the least
  // recently used entries.
  void set_match_cache_capacity(size_t n);
  size_t match_cache_capacity() const { return cache_capacity_; }
  size_t match_cache_size() const { return cache_.size(); }
  struct MatchCacheStats {
    uint64_t hits = 0;        // a call's matches found, facts unchanged
    uint64_t misses = 0;      // a process matched for the first time (or again after eviction)
    uint64_t rematches = 0;   // an entry whose facts or tree root changed, matched again
    uint64_t evictions = 0;   // entries dropped to stay within the capacity
  };
  const MatchCacheStats& match_cache_stats() const { return cache_stats_; }

 private:
  struct LimitWindow {
    policy::Limit limit;
    SlidingWindow window;
    mutable void* lease_slot = nullptr;      // the LeaseSource's handle (fleet budgets)
  };
  struct Bucket {
    std::vector<LimitWindow> limits;         // Budget::limits order
    int64_t inflight = 0;
    bool in_episode = false;
  };
  struct FleetCharge {                       // what a reservation took from a fleet limit
    size_t bucket_index = 0;                 // into Reservation::buckets (no copy of the id)
    size_t limit_index = 0;
    double amount = 0;
    void* slot = nullptr;
  };
  struct Reservation {
    std::vector<BucketId> buckets;
    std::vector<FleetCharge> fleet;
  };
  // Whether `need` fits one limit of a bucket now: its own window for a host budget, the
  // lease source's allowance for a fleet one.
  struct LimitCheck {
    bool fits = true;
    bool gates = true;                       // false: fleet under fail: open (alert only)
    double limit = 0;                        // the limit in force (a fleet share, when degraded)
    double level = 0;
    std::optional<double> share;             // set when a share of the limit is in force
  };
  template <typename Fn>
  void for_fleet_charges(const Reservation& r, size_t index, Bucket& b, size_t* next, Fn&& fn);
  LimitCheck check_limit(const policy::Budget& budget, const BucketId& id, size_t limit_index,
                         const LimitWindow& lw, double need, int64_t now_ns) const;

  // A budget that selects a process: its index in policy_->budgets and the process's bucket.
  struct Matched {
    size_t budget = 0;
    BucketRef ref;
  };
  struct CacheEntry {
    uint32_t pid = 0;
    uint32_t tree_root_pid = 0;
    policy::ProcessFacts facts;
    std::vector<Matched> matched;            // policy order
  };

  // The budgets that select `call`, policy order, from the cache when it knows the process.
  // The reference is valid until the next call of matched(), set_policy or forget_process.
  const std::vector<Matched>& matched(const CallFacts& call) const;
  std::vector<Matched> match_uncached(const CallFacts& call) const;
  void evict_to(size_t n) const;

  Bucket& bucket(const BucketId& id, const policy::Budget& budget);
  std::vector<BucketRef> gating_refs(const CallFacts& call) const;
  static Bucket make_bucket(const policy::Budget& budget);
  // Judges and, if admitted (or forced, or dry run), counts the call. `queued`: gating buckets
  // in which an earlier held call waits.
  Decision decide(const CallFacts& call, int64_t now_ns, const std::set<BucketId>& queued, bool force);
  std::set<BucketId> gating_of(const CallFacts& call) const;
  std::set<BucketId> queued_buckets(int64_t now_ns) const;
  std::set<BucketId> blocking_of(const CallFacts& call, int64_t now_ns) const;

  std::shared_ptr<const policy::Policy> policy_;
  LeaseSource* lease_source_ = nullptr;
  bool dry_run_flag_ = false;
  std::map<BucketId, Bucket> buckets_;
  std::map<uint64_t, Reservation> reservations_;
  uint64_t next_reservation_id_ = 1;
  std::vector<Held> held_;                   // oldest first
  uint64_t next_hold_id_ = 1;
  std::map<std::string, int64_t> last_action_ns_;

  // The match cache: most recently used first; cache_ indexes it by pid. Mutable: a lookup
  // from a const query still remembers what it computed.
  size_t cache_capacity_ = kDefaultMatchCacheCapacity;
  mutable std::list<CacheEntry> cache_lru_;
  mutable std::unordered_map<uint32_t, std::list<CacheEntry>::iterator> cache_;
  mutable std::vector<Matched> uncached_;    // matched()'s answer when the cache is off
  mutable MatchCacheStats cache_stats_;
};

}  // namespace ab::brake

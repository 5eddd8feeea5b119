// live_usage.h — in-memory, live usage per entity: totals since the daemon started (or since the
// entity was last forgotten) and rates over a sliding 60-second window.
//
// Pure: no clock inside. Every call takes `now_ns` (any monotonic or wall clock, as long as the
// caller uses one clock consistently). Not thread-safe: owned by the daemon's event loop.
//
// One recorded call counts for five entities: its cgroup (who.cgroup), its agent tree
// (who.tree_root_pid, or who.pid if 0), its process (who.pid), its model and its provider.
// Rates: tokens_per_min is the sum of tokens (billed input + output) of the calls recorded in
// (now − 60 s, now]; spend_per_min_usd and calls_per_min likewise. With a 60 s window the sum IS
// the per-minute rate.
#pragma once

#include <compare>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "protocol/llm_call.h"

namespace ab::accounting {

enum class EntityKind { Cgroup, Tree, Process, Model, Provider };
std::string_view to_string(EntityKind);

struct EntityKey {
  EntityKind kind = EntityKind::Cgroup;
  std::string id;  // cgroup path, tree root pid, pid, model name, provider name
  auto operator<=>(const EntityKey&) const = default;

  static EntityKey cgroup(std::string path) { return {EntityKind::Cgroup, std::move(path)}; }
  static EntityKey tree(uint32_t root_pid) { return {EntityKind::Tree, std::to_string(root_pid)}; }
  static EntityKey process(uint32_t pid) { return {EntityKind::Process, std::to_string(pid)}; }
  static EntityKey model(std::string name) { return {EntityKind::Model, std::move(name)}; }
  static EntityKey provider(std::string name) { return {EntityKind::Provider, std::move(name)}; }
};

struct UsageTotals {
  uint64_t calls = 0;
  int64_t input_tokens = 0;        // billed input, cache included
  int64_t output_tokens = 0;       // reasoning included
  int64_t cache_read_tokens = 0;
  int64_t cache_write_tokens = 0;
  double cost_usd = 0;
  uint64_t estimated_calls = 0;    // tokens estimated (no usage on the wire, cut off)
  uint64_t unpriced_calls = 0;     // model not in the price table (cost 0)
  uint64_t error_calls = 0;        // HTTP status >= 400, or no response (status 0)
  int64_t first_ns = 0;            // now_ns of the first and last recorded call
  int64_t last_ns = 0;
  int64_t tokens() const { return input_tokens + output_tokens; }
};

struct EntityUsage {
  EntityKey key;
  UsageTotals totals;
  double tokens_per_min = 0;      // sliding 60 s
  double spend_per_min_usd = 0;   // sliding 60 s
  double calls_per_min = 0;       // sliding 60 s
  std::string last_model;         // of the latest call
  std::string last_provider;
};

class LiveUsage {
 public:
  static constexpr int64_t kWindowNs = 60'000'000'000;

  // Counts a finished (priced) call for its five entities at time now_ns.
  void record(const ab::LlmCall& call, int64_t now_ns);

  std::optional<EntityUsage> get(const EntityKey& key, int64_t now_ns) const;
  double tokens_per_min(const EntityKey& key, int64_t now_ns) const;
  double spend_per_min_usd(const EntityKey& key, int64_t now_ns) const;
  // Every entity of one kind, highest tokens_per_min first (then highest total cost, then key).
  std::vector<EntityUsage> list(EntityKind kind, int64_t now_ns) const;

  // Drops one entity (e.g. a process that exited and was flushed to the database).
  void forget(const EntityKey& key);
  // Drops entities whose last call is older than idle_ns; returns how many. Also trims every
  // rate window to now_ns.
  size_t expire(int64_t now_ns, int64_t idle_ns);
  size_t size() const { return entries_.size(); }

 private:
  struct Sample {
    int64_t ts;
    int64_t tokens;
    double cost;
  };
  struct Entry {
    UsageTotals totals;
    std::deque<Sample> recent;  // ordered by ts when now_ns never goes backwards
    std::string last_model, last_provider;
  };
  void add(const EntityKey& key, const ab::LlmCall& call, int64_t now_ns);
  static void trim(Entry& e, int64_t now_ns);
  static EntityUsage view(const EntityKey& key, const Entry& e, int64_t now_ns);

  std::map<EntityKey, Entry> entries_;
};

}  // namespace ab::accounting

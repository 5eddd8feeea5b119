// live_usage.cpp — per-entity totals and sliding 60 s rates (see live_usage.h).
#include "accounting/live_usage.h"

#include <algorithm>

namespace ab::accounting {

std::string_view to_string(EntityKind k) {
  switch (k) {
    case EntityKind::Cgroup: return "cgroup";
    case EntityKind::Tree: return "tree";
    case EntityKind::Process: return "process";
    case EntityKind::Model: return "model";
    case EntityKind::Provider: return "provider";
  }
  return "?";
}

void LiveUsage::record(const ab::LlmCall& call, int64_t now_ns) {
  const uint32_t root = call.who.tree_root_pid ? call.who.tree_root_pid : call.who.pid;
  add(EntityKey::cgroup(call.who.cgroup.empty() ? "/" : call.who.cgroup), call, now_ns);
  add(EntityKey::tree(root), call, now_ns);
  add(EntityKey::process(call.who.pid), call, now_ns);
  add(EntityKey::model(call.model.empty() ? "unknown" : call.model), call, now_ns);
  add(EntityKey::provider(call.provider.empty() ? "unknown" : call.provider), call, now_ns);
}

void LiveUsage::add(const EntityKey& key, const ab::LlmCall& c, int64_t now_ns) {
  Entry& e = entries_[key];
  UsageTotals& t = e.totals;
  if (t.calls == 0) t.first_ns = now_ns;
  t.calls++;
  t.input_tokens += c.input_tokens;
  t.output_tokens += c.output_tokens;
  t.cache_read_tokens += c.cache_read_tokens;
  t.cache_write_tokens += c.cache_write_tokens;
  t.cost_usd += c.cost_usd;
  if (c.estimated) t.estimated_calls++;
  if (!c.price_known) t.unpriced_calls++;
  if (c.status == 0 || c.status >= 400) t.error_calls++;
  t.last_ns = std::max(t.last_ns, now_ns);
  e.last_model = c.model;
  e.last_provider = c.provider;
  e.recent.push_back(Sample{now_ns, c.input_tokens + c.output_tokens, c.cost_usd});
  trim(e, now_ns);
}

void LiveUsage::trim(Entry& e, int64_t now_ns) {
  while (!e.recent.empty() && e.recent.front().ts <= now_ns - kWindowNs) e.recent.pop_front();
}

EntityUsage LiveUsage::view(const EntityKey& key, const Entry& e, int64_t now_ns) {
  EntityUsage u;
  u.key = key;
  u.totals = e.totals;
  u.last_model = e.last_model;
  u.last_provider = e.last_provider;
  // Samples are in time order; those that fell out of the window may not be trimmed yet
  // (queries are const), so test each one. A sample stamped after now_ns is not counted yet.
  for (const Sample& s : e.recent) {
    if (s.ts <= now_ns - kWindowNs || s.ts > now_ns) continue;
    u.tokens_per_min += double(s.tokens);
    u.spend_per_min_usd += s.cost;
    u.calls_per_min += 1;
  }
  return u;
}

std::optional<EntityUsage> LiveUsage::get(const EntityKey& key, int64_t now_ns) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return view(key, it->second, now_ns);
}

double LiveUsage::tokens_per_min(const EntityKey& key, int64_t now_ns) const {
  auto u = get(key, now_ns);
  return u ? u->tokens_per_min : 0;
}

double LiveUsage::spend_per_min_usd(const EntityKey& key, int64_t now_ns) const {
  auto u = get(key, now_ns);
  return u ? u->spend_per_min_usd : 0;
}

std::vector<EntityUsage> LiveUsage::list(EntityKind kind, int64_t now_ns) const {
  std::vector<EntityUsage> out;
  for (auto it = entries_.lower_bound(EntityKey{kind, ""}); it != entries_.end() && it->first.kind == kind; ++it)
    out.push_back(view(it->first, it->second, now_ns));
  std::stable_sort(out.begin(), out.end(), [](const EntityUsage& a, const EntityUsage& b) {
    if (a.tokens_per_min != b.tokens_per_min) return a.tokens_per_min > b.tokens_per_min;
    if (a.totals.cost_usd != b.totals.cost_usd) return a.totals.cost_usd > b.totals.cost_usd;
    return a.key < b.key;
  });
  return out;
}

void LiveUsage::forget(const EntityKey& key) { entries_.erase(key); }

size_t LiveUsage::expire(int64_t now_ns, int64_t idle_ns) {
  size_t n = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.totals.last_ns < now_ns - idle_ns) {
      it = entries_.erase(it);
      ++n;
    } else {
      trim(it->second, now_ns);
      ++it;
    }
  }
  return n;
}

}  // namespace ab::accounting

#include "brake/budget_engine.h"

#include <algorithm>
#include <cmath>

namespace ab::brake {

using policy::Action;
using policy::Budget;
using policy::LimitKind;

namespace {

constexpr int64_t kNsPerMs = 1'000'000;

int64_t to_ns(policy::Millis d) { return d.count() * kNsPerMs; }

// What one call adds to a limit of `kind` when it is admitted.
double reserved_amount(LimitKind kind, const CallFacts& call) {
  switch (kind) {
    case LimitKind::Tokens: return static_cast<double>(call.reserved_tokens());
    case LimitKind::SpendUsd: return call.est_cost_usd;
    case LimitKind::Requests: return 1;
  }
  return 0;
}

}  // namespace

// ---- Decision ---------------------------------------------------------------------------------

std::vector<Exceeded> Decision::blocking() const {
  std::vector<Exceeded> out;
  for (const Exceeded& e : exceeded)
    if (e.gates()) out.push_back(e);
  return out;
}

std::optional<Action> Decision::strongest_action() const {
  std::optional<Action> strongest;
  for (const Exceeded& e : exceeded)
    if (e.gates() && (!strongest || e.action > *strongest)) strongest = e.action;
  return strongest;
}

bool Decision::any_new_episode() const {
  return std::any_of(exceeded.begin(), exceeded.end(), [](const Exceeded& e) { return e.new_episode; });
}

// ---- buckets ----------------------------------------------------------------------------------

BudgetEngine::BudgetEngine(std::shared_ptr<const policy::Policy> policy) : policy_(std::move(policy)) {}

BudgetEngine::Bucket BudgetEngine::make_bucket(const Budget& budget) {
  Bucket b;
  for (const policy::Limit& l : budget.limits) b.limits.push_back({l, SlidingWindow(to_ns(l.window))});
  return b;
}

BudgetEngine::Bucket& BudgetEngine::bucket(const BucketId& id, const Budget& budget) {
  auto it = buckets_.find(id);
  if (it == buckets_.end()) it = buckets_.emplace(id, make_bucket(budget)).first;
  return it->second;
}

// ---- the match cache ---------------------------------------------------------------------------

namespace {

bool same_facts(const policy::ProcessFacts& a, const policy::ProcessFacts& b) {
  return a.uid == b.uid && a.cgroup == b.cgroup && a.exe == b.exe && a.comm == b.comm && a.unit == b.unit;
}

}  // namespace

std::vector<BudgetEngine::Matched> BudgetEngine::match_uncached(const CallFacts& call) const {
  std::vector<Matched> out;
  for (size_t i = 0; i < policy_->budgets.size(); ++i) {
    const Budget& b = policy_->budgets[i];
    auto key = policy::bucket_key(b.match, b.per, call.facts, call.pid, call.tree_root_pid);
    if (key) out.push_back({i, {{b.name, std::move(*key)}, b.action}});
  }
  return out;
}

const std::vector<BudgetEngine::Matched>& BudgetEngine::matched(const CallFacts& call) const {
  if (cache_capacity_ == 0) {
    uncached_ = match_uncached(call);
    return uncached_;
  }
  auto it = cache_.find(call.pid);
  if (it != cache_.end()) {
    auto entry = it->second;
    if (entry != cache_lru_.begin()) cache_lru_.splice(cache_lru_.begin(), cache_lru_, entry);
    if (entry->tree_root_pid == call.tree_root_pid && same_facts(entry->facts, call.facts)) {
      ++cache_stats_.hits;
      return entry->matched;
    }
    // An exec, a cgroup move, a new tree root or another process under a reused pid.
    ++cache_stats_.rematches;
    entry->tree_root_pid = call.tree_root_pid;
    entry->facts = call.facts;
    entry->matched = match_uncached(call);
    return entry->matched;
  }
  ++cache_stats_.misses;
  evict_to(cache_capacity_ - 1);
  cache_lru_.push_front({call.pid, call.tree_root_pid, call.facts, match_uncached(call)});
  cache_.emplace(call.pid, cache_lru_.begin());
  return cache_lru_.front().matched;
}

void BudgetEngine::evict_to(size_t n) const {
  while (cache_.size() > n) {
    cache_.erase(cache_lru_.back().pid);
    cache_lru_.pop_back();
    ++cache_stats_.evictions;
  }
}

void BudgetEngine::forget_process(uint32_t pid) {
  auto it = cache_.find(pid);
  if (it == cache_.end()) return;
  cache_lru_.erase(it->second);
  cache_.erase(it);
}

void BudgetEngine::set_match_cache_capacity(size_t n) {
  cache_capacity_ = n;
  evict_to(n);
}

std::vector<BucketRef> BudgetEngine::buckets_of(const CallFacts& call) const {
  std::vector<BucketRef> out;
  for (const Matched& m : matched(call)) out.push_back(m.ref);
  return out;
}

std::vector<BucketRef> BudgetEngine::gating_refs(const CallFacts& call) const {
  std::vector<BucketRef> out;
  for (const Matched& m : matched(call))
    if (m.ref.gates()) out.push_back(m.ref);
  return out;
}

std::set<BucketId> BudgetEngine::gating_of(const CallFacts& call) const {
  std::set<BucketId> out;
  for (const Matched& m : matched(call))
    if (m.ref.gates()) out.insert(m.ref.id);
  return out;
}

void BudgetEngine::set_lease_source(LeaseSource* source) {
  if (source == lease_source_) return;
  lease_source_ = source;
  for (auto& [id, b] : buckets_)
    for (LimitWindow& lw : b.limits) lw.lease_slot = nullptr;  // handles of another source
}

BudgetEngine::LimitCheck BudgetEngine::check_limit(const Budget& budget, const BucketId& id, size_t limit_index,
                                                   const LimitWindow& lw, double need, int64_t now_ns) const {
  LimitCheck c;
  c.level = lw.window.level(now_ns);
  c.limit = lw.limit.amount;
  if (!budget.fleet() || !lease_source_) {
    c.fits = fits(c.level, need, c.limit);
    return c;
  }
  const Allowance a = lease_source_->allowance({&id, limit_index, &lw.limit, &lw.lease_slot}, need, now_ns);
  c.gates = a.gates;
  switch (a.kind) {
    case Allowance::Kind::Lease:
      // The fleet's window is kept in the store; this host may use what it leased.
      c.fits = need <= a.room + 1e-9;
      c.level = std::max(0.0, c.limit - a.room);
      break;
    case Allowance::Kind::Share:
      c.limit = a.share;
      c.share = a.share;
      c.fits = fits(c.level, need, a.share);
      break;
    case Allowance::Kind::Closed: c.fits = false; break;
  }
  return c;
}

// The gating buckets that lack room for `call` now (a window limit or max_inflight): the
// ones that hold it. Its other buckets have room and are no reason to make anyone wait.
std::set<BucketId> BudgetEngine::blocking_of(const CallFacts& call, int64_t now_ns) const {
  std::set<BucketId> out;
  for (const Matched& m : matched(call)) {
    if (!m.ref.gates()) continue;
    const Budget& budget = policy_->budgets[m.budget];
    auto found = buckets_.find(m.ref.id);
    std::optional<Bucket> fresh;
    if (found == buckets_.end()) {  // never used: all room, unless its room is a fleet lease
      if (!budget.fleet() || !lease_source_) continue;
      fresh = make_bucket(budget);
    }
    const Bucket& b = fresh ? *fresh : found->second;
    bool room = !(budget.max_inflight && b.inflight >= *budget.max_inflight);
    for (size_t i = 0; room && i < b.limits.size(); ++i) {
      const LimitWindow& lw = b.limits[i];
      const LimitCheck c = check_limit(budget, m.ref.id, i, lw, reserved_amount(lw.limit.kind, call), now_ns);
      if (!c.fits && c.gates) room = false;
    }
    if (!room) out.insert(m.ref.id);
  }
  return out;
}

// FIFO: buckets in which an earlier held call waits for room; nobody later passes it there.
std::set<BucketId> BudgetEngine::queued_buckets(int64_t now_ns) const {
  std::set<BucketId> out;
  for (const Held& h : held_) out.merge(blocking_of(h.call, now_ns));
  return out;
}

void BudgetEngine::set_policy(std::shared_ptr<const policy::Policy> policy) {
  policy_ = std::move(policy);
  cache_.clear();  // matched against the old budgets (and indexes into them)
  cache_lru_.clear();
  std::map<BucketId, Bucket> kept;
  for (auto& [id, old] : buckets_) {
    const Budget* budget = policy_->find_budget(id.budget);
    if (!budget) continue;
    Bucket next = make_bucket(*budget);
    // A limit keeps its history when it still measures the same thing over the same span;
    // its amount may have changed, which only changes how much room is left.
    for (LimitWindow& lw : next.limits) {
      for (const LimitWindow& was : old.limits) {
        if (was.limit.kind == lw.limit.kind && was.limit.window == lw.limit.window) {
          lw.window = was.window;
          break;
        }
      }
    }
    next.inflight = old.inflight;
    next.in_episode = old.in_episode;
    kept.emplace(id, std::move(next));
  }
  buckets_ = std::move(kept);
}

// ---- admission --------------------------------------------------------------------------------

Decision BudgetEngine::decide(const CallFacts& call, int64_t now_ns, const std::set<BucketId>& queued,
                              bool force) {
  Decision d;
  d.dry_run = dry_run();
  std::vector<Bucket*> touched;
  std::vector<const Budget*> touched_budgets;

  for (const Matched& m : matched(call)) {
    const Budget& budget = policy_->budgets[m.budget];
    const BucketId& id = m.ref.id;
    Bucket& b = bucket(id, budget);
    d.buckets.push_back(m.ref);
    touched.push_back(&b);
    touched_budgets.push_back(&budget);

    const size_t first_of_bucket = d.exceeded.size();
    for (size_t i = 0; i < b.limits.size(); ++i) {
      LimitWindow& lw = b.limits[i];
      lw.window.trim(now_ns);
      const double need = reserved_amount(lw.limit.kind, call);
      const LimitCheck c = check_limit(budget, id, i, lw, need, now_ns);
      if (c.fits) continue;
      Exceeded e;
      e.bucket = id;
      e.action = c.gates ? budget.action : Action::Alert;
      e.reason = Exceeded::Reason::Window;
      e.limit_index = static_cast<int>(i);
      e.kind = lw.limit.kind;
      e.window_ns = lw.window.length_ns();
      e.limit = c.limit;
      e.level = c.level;
      e.requested = need;
      d.exceeded.push_back(std::move(e));
    }
    if (budget.max_inflight && b.inflight >= *budget.max_inflight) {
      Exceeded e;
      e.bucket = id;
      e.action = budget.action;
      e.reason = Exceeded::Reason::Inflight;
      e.limit = static_cast<double>(*budget.max_inflight);
      e.level = static_cast<double>(b.inflight);
      e.requested = 1;
      d.exceeded.push_back(std::move(e));
    }

    const bool no_room = d.exceeded.size() > first_of_bucket;
    if (no_room) {
      if (!b.in_episode) {
        b.in_episode = true;
        d.exceeded[first_of_bucket].new_episode = true;
      }
    } else if (budget.action != Action::Alert && queued.contains(id)) {
      // Room, but not this call's turn. The episode goes on until the waiters are through.
      Exceeded e;
      e.bucket = id;
      e.action = budget.action;
      e.reason = Exceeded::Reason::Queue;
      d.exceeded.push_back(std::move(e));
    } else {
      b.in_episode = false;
    }
  }

  const bool blocked = std::any_of(d.exceeded.begin(), d.exceeded.end(),
                                   [](const Exceeded& e) { return e.gates(); });
  d.admitted = !blocked || force || d.dry_run;
  if (!d.admitted) return d;

  const uint64_t id = next_reservation_id_++;
  d.reservation_id = id;
  Reservation r;
  if (lease_source_) {  // one allocation for a reservation's fleet charges
    size_t n = 0;
    for (size_t i = 0; i < touched.size(); ++i)
      if (touched_budgets[i]->fleet()) n += touched[i]->limits.size();
    r.fleet.reserve(n);
  }
  for (size_t i = 0; i < touched.size(); ++i) {
    Bucket& b = *touched[i];
    const bool fleet = touched_budgets[i]->fleet() && lease_source_;
    for (size_t li = 0; li < b.limits.size(); ++li) {
      LimitWindow& lw = b.limits[li];
      const double amount = reserved_amount(lw.limit.kind, call);
      lw.window.add(now_ns, amount, id);
      if (fleet) {
        lease_source_->charge({&d.buckets[i].id, li, &lw.limit, &lw.lease_slot}, amount, now_ns);
        r.fleet.push_back({r.buckets.size(), li, amount, lw.lease_slot});
      }
    }
    ++b.inflight;
    r.buckets.push_back(d.buckets[i].id);
  }
  reservations_.emplace(id, std::move(r));
  return d;
}

Decision BudgetEngine::admit(const CallFacts& call, int64_t now_ns) {
  return decide(call, now_ns, queued_buckets(now_ns), false);
}

Decision BudgetEngine::force_admit(const CallFacts& call, int64_t now_ns) {
  return decide(call, now_ns, {}, true);
}

// The fleet charges of reservation `r` on its bucket `index` (found as `b`), in order: they are
// grouped by bucket, so `*next` walks them once over a reservation's buckets.
template <typename Fn>
void BudgetEngine::for_fleet_charges(const Reservation& r, size_t index, Bucket& b, size_t* next, Fn&& fn) {
  while (*next < r.fleet.size() && r.fleet[*next].bucket_index < index) ++*next;
  for (; *next < r.fleet.size() && r.fleet[*next].bucket_index == index; ++*next) {
    const FleetCharge& fc = r.fleet[*next];
    if (fc.limit_index >= b.limits.size() || !lease_source_) continue;
    LimitWindow& lw = b.limits[fc.limit_index];
    // a handle the source replaced since (set_lease_source) is not passed on
    void* slot = lw.lease_slot == fc.slot ? fc.slot : nullptr;
    fn(fc, lw, slot);
  }
}

bool BudgetEngine::settle(uint64_t reservation_id, int64_t actual_tokens, double actual_cost_usd,
                          int64_t now_ns) {
  auto it = reservations_.find(reservation_id);
  if (it == reservations_.end()) return false;
  const Reservation& r = it->second;
  size_t next_fleet = 0;
  for (size_t i = 0; i < r.buckets.size(); ++i) {
    const BucketId& id = r.buckets[i];
    auto b = buckets_.find(id);
    if (b == buckets_.end()) continue;  // its budget went away with a reload
    for (LimitWindow& lw : b->second.limits) {
      lw.window.trim(now_ns);
      // A reservation already out of the window (a call longer than the window) stays out.
      // An amount that is not one (negative, not finite: a malformed response) keeps what was
      // reserved: a broken or hostile server never gives a bucket room back.
      switch (lw.limit.kind) {
        case LimitKind::Tokens:
          if (actual_tokens >= 0) lw.window.set_amount(reservation_id, static_cast<double>(actual_tokens));
          break;
        case LimitKind::SpendUsd:
          if (std::isfinite(actual_cost_usd) && actual_cost_usd >= 0) lw.window.set_amount(reservation_id, actual_cost_usd);
          break;
        case LimitKind::Requests: break;  // one call is one request, however it ended
      }
    }
    b->second.inflight = std::max<int64_t>(0, b->second.inflight - 1);
    for_fleet_charges(r, i, b->second, &next_fleet, [&](const FleetCharge& fc, LimitWindow& lw, void* slot) {
      double actual = fc.amount;  // the same rule as the window: an amount that is none keeps the reservation
      if (lw.limit.kind == LimitKind::Tokens && actual_tokens >= 0) actual = static_cast<double>(actual_tokens);
      if (lw.limit.kind == LimitKind::SpendUsd && std::isfinite(actual_cost_usd) && actual_cost_usd >= 0)
        actual = actual_cost_usd;
      lease_source_->settle({&id, fc.limit_index, &lw.limit, slot ? &slot : nullptr}, fc.amount, actual, now_ns);
    });
  }
  reservations_.erase(it);
  return true;
}

bool BudgetEngine::cancel(uint64_t reservation_id) {
  auto it = reservations_.find(reservation_id);
  if (it == reservations_.end()) return false;
  const Reservation& r = it->second;
  size_t next_fleet = 0;
  for (size_t i = 0; i < r.buckets.size(); ++i) {
    const BucketId& id = r.buckets[i];
    auto b = buckets_.find(id);
    if (b == buckets_.end()) continue;
    for (LimitWindow& lw : b->second.limits) lw.window.remove(reservation_id);
    b->second.inflight = std::max<int64_t>(0, b->second.inflight - 1);
    for_fleet_charges(r, i, b->second, &next_fleet, [&](const FleetCharge& fc, LimitWindow& lw, void* slot) {
      lease_source_->cancel({&id, fc.limit_index, &lw.limit, slot ? &slot : nullptr}, fc.amount, 0);
    });
  }
  reservations_.erase(it);
  return true;
}

// ---- the hold queue ---------------------------------------------------------------------------

uint64_t BudgetEngine::hold(uint32_t pid, uint64_t start_time, const CallFacts& call, int64_t now_ns) {
  const uint64_t id = next_hold_id_++;
  held_.push_back({id, pid, start_time, call, now_ns});
  return id;
}

std::vector<Released> BudgetEngine::release_ready(int64_t now_ns) {
  std::vector<Released> released;
  std::vector<Held> still_held;
  // Gating buckets in which an earlier call stays held: nobody later may pass it there.
  std::set<BucketId> waiting;
  for (Held& h : held_) {
    std::set<BucketId> gating = gating_of(h.call);
    const bool behind = std::any_of(gating.begin(), gating.end(),
                                    [&](const BucketId& id) { return waiting.contains(id); });
    if (!behind) {
      Decision d = decide(h.call, now_ns, waiting, false);
      if (d.admitted) {
        released.push_back({std::move(h), std::move(d)});
        continue;
      }
    }
    std::set<BucketId> blocking = blocking_of(h.call, now_ns);
    if (blocking.empty() && behind)  // waits only behind others: it queues where they wait
      for (const BucketId& id : gating)
        if (waiting.contains(id)) blocking.insert(id);
    waiting.merge(blocking);
    still_held.push_back(std::move(h));
  }
  held_ = std::move(still_held);
  return released;
}

std::vector<Expired> BudgetEngine::expired(int64_t now_ns) {
  const int64_t max_hold_ns = to_ns(policy_->max_hold);
  std::vector<Expired> out;
  std::vector<Held> still_held;
  for (Held& h : held_) {
    if (now_ns - h.since_ns < max_hold_ns) {
      still_held.push_back(std::move(h));
      continue;
    }
    Expired e;
    e.held_ns = now_ns - h.since_ns;
    e.gating = gating_refs(h.call);
    e.action = Action::Alert;  // nothing gates it any more: nothing to escalate
    for (const BucketRef& r : e.gating) e.action = std::max(e.action, r.action);
    e.held = std::move(h);
    out.push_back(std::move(e));
  }
  held_ = std::move(still_held);
  return out;
}

size_t BudgetEngine::drop_held(uint32_t pid, uint64_t start_time) {
  return std::erase_if(held_, [&](const Held& h) {
    return h.pid == pid && (start_time == 0 || h.start_time == start_time);
  });
}

std::optional<int64_t> BudgetEngine::next_wakeup_ns(int64_t now_ns) const {
  std::optional<int64_t> next;
  auto consider = [&](int64_t t) {
    if (!next || t < *next) next = t;
  };
  const int64_t max_hold_ns = to_ns(policy_->max_hold);
  for (const Held& h : held_) {
    consider(h.since_ns + max_hold_ns);
    // When every window of its gating buckets has room for it. In-flight limits are freed by
    // settlements, not by time, and are left out.
    int64_t fits_at = now_ns;
    for (const BucketId& id : gating_of(h.call)) {
      auto b = buckets_.find(id);
      if (b == buckets_.end()) continue;
      const Budget* budget = policy_->find_budget(id.budget);
      const bool fleet = budget && budget->fleet() && lease_source_;
      for (size_t i = 0; i < b->second.limits.size(); ++i) {
        const LimitWindow& lw = b->second.limits[i];
        const double need = reserved_amount(lw.limit.kind, h.call);
        double limit = lw.limit.amount;
        if (fleet) {
          // Leased room comes with the store's answers (the daemon runs release_ready then),
          // not with time; a share of the limit frees up like a host window.
          const LimitCheck c = check_limit(*budget, id, i, lw, need, now_ns);
          if (!c.share) continue;
          limit = *c.share;
        }
        fits_at = std::max(fits_at, lw.window.room_at(now_ns, need, limit));
      }
    }
    if (fits_at > now_ns) consider(fits_at);
  }
  return next;
}

// ---- cooldown ---------------------------------------------------------------------------------

bool BudgetEngine::action_allowed(const std::string& entity, int64_t now_ns) const {
  auto it = last_action_ns_.find(entity);
  return it == last_action_ns_.end() || now_ns - it->second >= to_ns(policy_->cooldown);
}

void BudgetEngine::note_action(const std::string& entity, int64_t now_ns) { last_action_ns_[entity] = now_ns; }

// ---- history and upkeep -----------------------------------------------------------------------

void BudgetEngine::restore(const std::vector<HistoryRecord>& history, int64_t now_ns) {
  for (const HistoryRecord& rec : history) {
    CallFacts call;
    call.pid = rec.pid;
    call.tree_root_pid = rec.tree_root_pid;
    call.facts = rec.facts;
    call.est_input_tokens = rec.tokens;
    call.est_cost_usd = rec.cost_usd;
    for (const Budget& budget : policy_->budgets) {
      auto key = policy::bucket_key(budget.match, budget.per, call.facts, call.pid, call.tree_root_pid);
      if (!key) continue;
      Bucket& b = bucket({budget.name, *key}, budget);
      for (LimitWindow& lw : b.limits) {
        if (now_ns - rec.ts_ns >= lw.window.length_ns()) continue;  // already out of this window
        lw.window.add(rec.ts_ns, reserved_amount(lw.limit.kind, call));
      }
    }
  }
}

size_t BudgetEngine::forget_idle(int64_t now_ns) {
  std::set<BucketId> in_use;
  for (const Held& h : held_)
    for (const BucketRef& r : buckets_of(h.call)) in_use.insert(r.id);
  size_t forgotten = 0;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    Bucket& b = it->second;
    bool idle = b.inflight == 0 && !in_use.contains(it->first);
    for (LimitWindow& lw : b.limits) {
      lw.window.trim(now_ns);
      idle = idle && lw.window.empty(now_ns);
    }
    if (idle) {
      it = buckets_.erase(it);
      ++forgotten;
    } else {
      ++it;
    }
  }
  const int64_t cooldown_ns = to_ns(policy_->cooldown);
  std::erase_if(last_action_ns_, [&](const auto& entry) { return now_ns - entry.second >= cooldown_ns; });
  return forgotten;
}

Snapshot BudgetEngine::snapshot(int64_t now_ns) const {
  Snapshot s;
  s.held = held_.size();
  s.reservations = reservations_.size();
  s.dry_run = dry_run();
  std::map<BucketId, size_t> held_per_bucket;
  for (const Held& h : held_)
    for (const BucketRef& r : buckets_of(h.call)) ++held_per_bucket[r.id];
  for (const auto& [id, b] : buckets_) {
    BucketStatus st;
    st.id = id;
    if (const Budget* budget = policy_->find_budget(id.budget)) {
      st.action = budget->action;
      st.max_inflight = budget->max_inflight;
    }
    for (const LimitWindow& lw : b.limits)
      st.limits.push_back({lw.limit.kind, lw.limit.amount, lw.window.length_ns(), lw.limit.origin,
                           lw.window.level(now_ns)});
    st.inflight = b.inflight;
    if (auto it = held_per_bucket.find(id); it != held_per_bucket.end()) st.held = it->second;
    st.in_episode = b.in_episode;
    s.buckets.push_back(std::move(st));
  }
  return s;
}

}  // namespace ab::brake

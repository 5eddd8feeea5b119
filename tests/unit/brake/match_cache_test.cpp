// BudgetEngine's match cache: a process's matching budgets are remembered per pid, and used only
// while its facts are those they were computed from. Decisions must be the same as without it.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <sstream>

#include "brake/budget_engine.h"

using namespace ab::brake;
using ab::policy::Action;

namespace {

constexpr int64_t kSec = 1'000'000'000;

std::shared_ptr<const ab::policy::Policy> policy(const std::string& yaml) {
  auto r = ab::policy::load_text(yaml, "test.yaml");
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  return r.policy;
}

CallFacts proc(uint32_t pid, std::string cgroup, std::string exe = "/usr/bin/python3.11",
               std::string comm = "python3", uint32_t uid = 1000, uint32_t root = 0) {
  CallFacts c;
  c.pid = pid;
  c.tree_root_pid = root;
  c.facts.cgroup = std::move(cgroup);
  c.facts.exe = std::move(exe);
  c.facts.comm = std::move(comm);
  c.facts.uid = uid;
  c.est_input_tokens = 50;
  c.reserved_output_tokens = 50;
  c.est_cost_usd = 0.001;
  return c;
}

std::vector<std::string> keys(const std::vector<BucketRef>& refs) {
  std::vector<std::string> out;
  for (const auto& r : refs) out.push_back(r.id.budget + " " + r.id.key);
  return out;
}

const char* kAgents = R"(
budgets:
  - name: agents
    match: {cgroup: "/agents/*"}
    per: cgroup
    limits: [{tokens: 1000, window: 60s}]
  - name: python
    match: {exe: "python3*"}
    per: tree
    limits: [{requests: 100, window: 60s}]
  - name: ops
    match: {uid: 0}
    per: process
    limits: [{requests: 100, window: 60s}]
)";

using V = std::vector<std::string>;

TEST(MatchCache, RepeatedCallsOfAProcessAreMatchedOnce) {
  BudgetEngine e(policy(kAgents));
  const CallFacts c = proc(100, "/agents/a/job");
  for (int i = 0; i < 5; ++i) {
    Decision d = e.admit(c, 10 * kSec);
    ASSERT_TRUE(d.admitted);
    EXPECT_EQ(keys(d.buckets), (V{"agents cgroup:/agents/a", "python tree:100"}));
    e.settle(d.reservation_id, 100, 0.001, 10 * kSec);
  }
  EXPECT_EQ(e.match_cache_stats().misses, 1u);
  EXPECT_EQ(e.match_cache_stats().hits, 4u);
  EXPECT_EQ(e.match_cache_size(), 1u);
}

TEST(MatchCache, ACgroupMoveIsMatchedAgain) {
  BudgetEngine e(policy(kAgents));
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/agents/a/job"))), (V{"agents cgroup:/agents/a", "python tree:100"}));
  // moved to another agent's cgroup: another bucket
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/agents/b"))), (V{"agents cgroup:/agents/b", "python tree:100"}));
  // moved out of /agents: that budget no longer applies
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/system.slice/x"))), (V{"python tree:100"}));
  EXPECT_EQ(e.match_cache_stats().rematches, 2u);
  EXPECT_EQ(e.match_cache_size(), 1u);

  // and the windows follow the bucket the process is in now
  Decision d = e.admit(proc(100, "/agents/c"), 10 * kSec);
  EXPECT_EQ(keys(d.buckets), (V{"agents cgroup:/agents/c", "python tree:100"}));
}

TEST(MatchCache, AnExecIsMatchedAgain) {
  BudgetEngine e(policy(kAgents));
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/agents/a"))), (V{"agents cgroup:/agents/a", "python tree:100"}));
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/agents/a", "/usr/bin/node", "node"))), (V{"agents cgroup:/agents/a"}));
  // a setuid exec: uid 0 now
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/agents/a", "/usr/bin/node", "node", 0))),
            (V{"agents cgroup:/agents/a", "ops process:100"}));
  EXPECT_EQ(e.match_cache_stats().rematches, 2u);
}

TEST(MatchCache, EveryFactCountsAndSoDoesTheTreeRoot) {
  BudgetEngine e(policy(R"(
budgets:
  - name: unit
    match: {unit: "agent@*.service", comm: "py*"}
    per: tree
    limits: [{requests: 100, window: 60s}]
)"));
  CallFacts c = proc(100, "/system.slice/agent@1.service");
  c.facts.unit = "agent@1.service";
  EXPECT_EQ(keys(e.buckets_of(c)), (V{"unit tree:100"}));
  c.tree_root_pid = 42;  // reparented: its tree root changed
  EXPECT_EQ(keys(e.buckets_of(c)), (V{"unit tree:42"}));
  c.facts.unit = "other.service";
  EXPECT_EQ(keys(e.buckets_of(c)), V{});
  c.facts.unit = "agent@2.service";
  c.facts.comm = "bash";
  EXPECT_EQ(keys(e.buckets_of(c)), V{});
  c.facts.comm = "python3";
  EXPECT_EQ(keys(e.buckets_of(c)), (V{"unit tree:42"}));
  EXPECT_EQ(e.match_cache_stats().misses, 1u);
  EXPECT_EQ(e.match_cache_stats().rematches, 4u);
}

TEST(MatchCache, AReusedPidWithOtherFactsIsMatchedAfresh) {
  BudgetEngine e(policy(kAgents));
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/agents/a"))), (V{"agents cgroup:/agents/a", "python tree:100"}));
  // pid 100 exited unnoticed and came back as another program elsewhere
  EXPECT_EQ(keys(e.buckets_of(proc(100, "/user.slice", "/bin/bash", "bash", 0))), (V{"ops process:100"}));
}

TEST(MatchCache, APolicyChangeEmptiesIt) {
  BudgetEngine e(policy(kAgents));
  const CallFacts c = proc(100, "/agents/a");
  EXPECT_EQ(keys(e.buckets_of(c)), (V{"agents cgroup:/agents/a", "python tree:100"}));
  EXPECT_EQ(e.match_cache_size(), 1u);

  e.set_policy(policy(R"(
budgets:
  - name: all
    match: {cgroup: "/**"}
    per: cgroup
    limits: [{tokens: 1000, window: 60s}]
  - name: agents
    match: {cgroup: "/agents"}
    per: cgroup
    limits: [{tokens: 1000, window: 60s}]
)"));
  EXPECT_EQ(e.match_cache_size(), 0u);
  EXPECT_EQ(keys(e.buckets_of(c)), (V{"all cgroup:/", "agents cgroup:/agents"}));
  Decision d = e.admit(c, 10 * kSec);
  EXPECT_EQ(keys(d.buckets), (V{"all cgroup:/", "agents cgroup:/agents"}));
  EXPECT_EQ(d.buckets[1].action, Action::Throttle);
}

TEST(MatchCache, AnExitedProcessIsForgotten) {
  BudgetEngine e(policy(kAgents));
  e.buckets_of(proc(100, "/agents/a"));
  e.buckets_of(proc(101, "/agents/b"));
  EXPECT_EQ(e.match_cache_size(), 2u);
  e.forget_process(100);
  EXPECT_EQ(e.match_cache_size(), 1u);
  e.forget_process(100);  // twice, or a pid never seen: nothing
  e.forget_process(999);
  EXPECT_EQ(e.match_cache_size(), 1u);
  e.buckets_of(proc(101, "/agents/b"));
  EXPECT_EQ(e.match_cache_stats().hits, 1u);  // the other one is still there
  e.buckets_of(proc(100, "/agents/a"));
  EXPECT_EQ(e.match_cache_stats().misses, 3u);
}

TEST(MatchCache, ItStaysWithinItsCapacityDroppingTheLeastRecentlyUsed) {
  BudgetEngine e(policy(kAgents));
  EXPECT_EQ(e.match_cache_capacity(), BudgetEngine::kDefaultMatchCacheCapacity);
  e.set_match_cache_capacity(8);
  for (uint32_t pid = 1; pid <= 100; ++pid) {
    e.buckets_of(proc(pid, "/agents/a"));
    e.buckets_of(proc(1, "/agents/a"));  // pid 1 is used all the time
    ASSERT_LE(e.match_cache_size(), 8u);
  }
  EXPECT_EQ(e.match_cache_size(), 8u);
  EXPECT_EQ(e.match_cache_stats().misses, 100u);  // pid 1 was never dropped
  EXPECT_EQ(e.match_cache_stats().evictions, 92u);
  const uint64_t hits = e.match_cache_stats().hits;
  e.buckets_of(proc(100, "/agents/a"));  // among the 7 most recent (94..100) besides pid 1
  e.buckets_of(proc(94, "/agents/a"));
  EXPECT_EQ(e.match_cache_stats().hits, hits + 2);
  e.buckets_of(proc(93, "/agents/a"));  // dropped
  EXPECT_EQ(e.match_cache_stats().misses, 101u);

  e.set_match_cache_capacity(3);  // shrinking drops the least recent ones now
  EXPECT_EQ(e.match_cache_size(), 3u);
  e.set_match_cache_capacity(0);  // off
  EXPECT_EQ(e.match_cache_size(), 0u);
  EXPECT_EQ(keys(e.buckets_of(proc(5, "/agents/x"))), (V{"agents cgroup:/agents/x", "python tree:5"}));
  EXPECT_EQ(e.match_cache_size(), 0u);
}

TEST(MatchCache, RestoredHistoryDoesNotFillIt) {
  BudgetEngine e(policy(kAgents));
  std::vector<HistoryRecord> history;
  for (uint32_t pid = 1; pid <= 50; ++pid) {
    HistoryRecord r;
    r.ts_ns = 9 * kSec;
    r.pid = pid;
    r.facts = proc(pid, "/agents/a").facts;
    r.tokens = 10;
    history.push_back(r);
  }
  e.restore(history, 10 * kSec);
  EXPECT_EQ(e.match_cache_size(), 0u);
  Snapshot s = e.snapshot(10 * kSec);
  ASSERT_FALSE(s.buckets.empty());
  EXPECT_EQ(s.buckets[0].id.key, "cgroup:/agents/a");
  EXPECT_DOUBLE_EQ(s.buckets[0].limits[0].level, 500);
}

// ---- with and without the cache: the same decisions ----------------------------------------

std::string str(const BucketId& id) { return id.budget + "|" + id.key; }

std::string str(const Decision& d) {
  std::ostringstream o;
  o << "admitted=" << d.admitted << " id=" << d.reservation_id << " dry=" << d.dry_run << " buckets=[";
  for (const auto& b : d.buckets) o << str(b.id) << ":" << static_cast<int>(b.action) << " ";
  o << "] exceeded=[";
  for (const auto& x : d.exceeded)
    o << str(x.bucket) << ":" << static_cast<int>(x.action) << ":" << static_cast<int>(x.reason) << ":"
      << x.limit_index << ":" << x.limit << ":" << x.level << ":" << x.requested << ":" << x.new_episode << " ";
  o << "]";
  return o.str();
}

std::string str(const Held& h) {
  std::ostringstream o;
  o << "hold " << h.hold_id << " pid " << h.pid << "/" << h.start_time << " since " << h.since_ns;
  return o.str();
}

std::string str(const std::vector<Released>& rs) {
  std::string s;
  for (const auto& r : rs) s += str(r.held) + " → " + str(r.decision) + "\n";
  return s;
}

std::string str(const std::vector<Expired>& es) {
  std::ostringstream o;
  for (const auto& x : es) {
    o << str(x.held) << " held " << x.held_ns << " action " << static_cast<int>(x.action) << " gating";
    for (const auto& g : x.gating) o << " " << str(g.id);
    o << "\n";
  }
  return o.str();
}

std::string str(const Snapshot& s) {
  std::ostringstream o;
  o << "held=" << s.held << " reservations=" << s.reservations << "\n";
  for (const auto& b : s.buckets) {
    o << str(b.id) << " inflight=" << b.inflight << " held=" << b.held << " episode=" << b.in_episode;
    for (const auto& l : b.limits) o << " " << l.origin << "=" << l.level;
    o << "\n";
  }
  return o.str();
}

// A random policy out of a pool of selectors that overlap and nest.
std::string random_policy(std::mt19937& rng) {
  const char* selectors[] = {
      "{cgroup: \"/agents/*\"}",  "{cgroup: \"/agents/**\"}",   "{cgroup: \"/agents\"}",
      "{cgroup: \"/agents/a*\"}", "{cgroup: \"/**/job\"}",      "{cgroup: \"/batch/*\", uid: 1000}",
      "{uid: 1001}",              "{comm: \"python*\"}",        "{exe: \"python3*\"}",
      "{exe: \"/usr/bin/*\"}",    "{exe: \"/opt/**/node\"}",    "{unit: \"*.service\"}",
      "{}",                       "{comm: node, cgroup: \"/agents/**\"}",
  };
  const char* pers[] = {"cgroup", "tree", "process"};
  const char* actions[] = {"alert", "throttle", "throttle", "deny", "kill"};
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  std::ostringstream y;
  y << "max_hold: " << 5 + pick(20) << "s\n";
  y << "budgets:\n";
  const int n = 1 + pick(8);
  for (int i = 0; i < n; ++i) {
    y << "  - name: b" << pick(10) * 100 + i << "\n";
    y << "    match: " << selectors[pick(std::size(selectors))] << "\n";
    y << "    per: " << pers[pick(3)] << "\n";
    if (pick(3) == 0) y << "    max_inflight: " << 1 + pick(3) << "\n";
    y << "    limits:\n";
    y << "      - {tokens: " << 200 + pick(800) << ", window: " << 5 + pick(20) << "s}\n";
    if (pick(2)) y << "      - {requests: " << 1 + pick(5) << ", window: " << 5 + pick(20) << "s}\n";
    if (pick(3) == 0) y << "      - {spend_usd: 0.01, window: 1h}\n";
    y << "    action: " << actions[pick(std::size(actions))] << "\n";
  }
  return y.str();
}

TEST(MatchCache, DecisionsAreTheSameWithAndWithoutIt) {
  const char* cgroups[] = {"/agents/a", "/agents/a/job", "/agents/b", "/agents", "/batch/x",
                           "/other",    "/agents/b/c/job", "/agents/alpha", "/"};
  const char* exes[] = {"/usr/bin/python3.11", "/usr/bin/node", "/opt/x/bin/node", "/home/u/python3"};
  const char* comms[] = {"python3", "node", "bash"};
  const char* units[] = {"", "agent@1.service", "user@1000.service"};
  const uint32_t uids[] = {0, 1000, 1001};

  size_t refused = 0, released = 0, expired = 0;
  BudgetEngine::MatchCacheStats total;
  for (unsigned seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    auto pick = [&](int n) { return static_cast<int>(rng() % n); };
    auto p = policy(random_policy(rng));
    ASSERT_TRUE(p);
    BudgetEngine cached(p);
    BudgetEngine plain(p);
    plain.set_match_cache_capacity(0);
    cached.set_match_cache_capacity(seed % 2 ? 4 : BudgetEngine::kDefaultMatchCacheCapacity);  // 4: evicts

    // 12 processes, some sharing trees
    std::vector<CallFacts> procs;
    auto randomize = [&](CallFacts& c) {
      c.facts.cgroup = cgroups[pick(std::size(cgroups))];
      c.facts.exe = exes[pick(std::size(exes))];
      c.facts.comm = comms[pick(std::size(comms))];
      c.facts.unit = units[pick(std::size(units))];
      c.facts.uid = uids[pick(std::size(uids))];
    };
    for (uint32_t i = 0; i < 12; ++i) {
      CallFacts c;
      c.pid = 200 + i;
      c.tree_root_pid = pick(3) ? 0 : 200 + static_cast<uint32_t>(pick(3));
      randomize(c);
      procs.push_back(c);
    }

    int64_t now = 1000 * kSec;
    std::vector<uint64_t> open;  // reservations not yet settled or cancelled
    for (int step = 0; step < 600; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      now += static_cast<int64_t>(rng() % (3 * kSec));
      CallFacts& c = procs[pick(procs.size())];
      c.est_input_tokens = 10 + pick(200);
      c.reserved_output_tokens = pick(200);
      c.est_cost_usd = pick(100) * 0.0001;
      const int op = pick(100);
      if (op < 35) {
        Decision a = cached.admit(c, now), b = plain.admit(c, now);
        ASSERT_EQ(str(a), str(b));
        if (a.admitted) {
          open.push_back(a.reservation_id);
        } else {
          ++refused;
          if (pick(2)) {
            ASSERT_EQ(cached.hold(c.pid, 7, c, now), plain.hold(c.pid, 7, c, now));
          }
        }
      } else if (op < 40) {
        Decision a = cached.force_admit(c, now), b = plain.force_admit(c, now);
        ASSERT_EQ(str(a), str(b));
        open.push_back(a.reservation_id);
      } else if (op < 55 && !open.empty()) {
        const size_t i = pick(open.size());
        const int64_t tokens = pick(400);
        ASSERT_EQ(cached.settle(open[i], tokens, 0.001, now), plain.settle(open[i], tokens, 0.001, now));
        open.erase(open.begin() + i);
      } else if (op < 60 && !open.empty()) {
        const size_t i = pick(open.size());
        ASSERT_EQ(cached.cancel(open[i]), plain.cancel(open[i]));
        open.erase(open.begin() + i);
      } else if (op < 70) {
        auto a = cached.release_ready(now), b = plain.release_ready(now);
        ASSERT_EQ(str(a), str(b));
        released += a.size();
        for (const auto& r : a) open.push_back(r.decision.reservation_id);
      } else if (op < 74) {
        auto a = cached.expired(now), b = plain.expired(now);
        ASSERT_EQ(str(a), str(b));
        expired += a.size();
      } else if (op < 82) {
        // the process changes: a cgroup move, an exec, both, or a reparenting
        switch (pick(4)) {
          case 0: c.facts.cgroup = cgroups[pick(std::size(cgroups))]; break;
          case 1:
            c.facts.exe = exes[pick(std::size(exes))];
            c.facts.comm = comms[pick(std::size(comms))];
            c.facts.uid = uids[pick(std::size(uids))];
            break;
          case 2: randomize(c); break;
          case 3: c.tree_root_pid = pick(2) ? 0 : 200 + static_cast<uint32_t>(pick(3)); break;
        }
      } else if (op < 85) {
        // it exits; its pid comes back as another process
        ASSERT_EQ(cached.drop_held(c.pid), plain.drop_held(c.pid));
        cached.forget_process(c.pid);
        plain.forget_process(c.pid);
        randomize(c);
      } else if (op < 87) {
        p = policy(random_policy(rng));
        ASSERT_TRUE(p);
        cached.set_policy(p);
        plain.set_policy(p);
      } else if (op < 90) {
        ASSERT_EQ(cached.forget_idle(now), plain.forget_idle(now));
      } else if (op < 95) {
        ASSERT_EQ(keys(cached.buckets_of(c)), keys(plain.buckets_of(c)));
      } else {
        ASSERT_EQ(cached.next_wakeup_ns(now), plain.next_wakeup_ns(now));
        ASSERT_EQ(str(cached.snapshot(now)), str(plain.snapshot(now)));
      }
      ASSERT_LE(cached.match_cache_size(), cached.match_cache_capacity());
    }
    ASSERT_EQ(str(cached.snapshot(now)), str(plain.snapshot(now)));
    EXPECT_EQ(plain.match_cache_size(), 0u);
    total.hits += cached.match_cache_stats().hits;
    total.misses += cached.match_cache_stats().misses;
    total.rematches += cached.match_cache_stats().rematches;
    total.evictions += cached.match_cache_stats().evictions;
  }
  // the runs went through every path: refusals, releases, expiries, and the cache's own
  EXPECT_GT(refused, 100u);
  EXPECT_GT(released, 10u);
  EXPECT_GT(expired, 10u);
  EXPECT_GT(total.hits, total.misses + total.rematches);
  EXPECT_GT(total.rematches, 100u);
  EXPECT_GT(total.evictions, 100u);
  std::printf("refused %zu released %zu expired %zu; cache hits %lu misses %lu rematches %lu evictions %lu\n",
              refused, released, expired, static_cast<unsigned long>(total.hits),
              static_cast<unsigned long>(total.misses), static_cast<unsigned long>(total.rematches),
              static_cast<unsigned long>(total.evictions));
}

}  // namespace

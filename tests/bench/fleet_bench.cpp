// fleet_bench — admission cost with `scope: fleet` (the lease path) vs `scope: host`.
//
// One budget with three limits (tokens/60s, spend/1h, requests/60s), one process calling; one
// iteration = admit + settle of one call, the fake clock moving 10 ms per call. With
// scope: fleet the engine asks a LeaseBook (daemon/fleet/lease_book.h) for each limit's room
// and charges/settles it; every 10 calls (the daemon's 100 ms tick) the book's requests are
// collected and answered in memory as the Redis worker would (a grant of what was asked),
// so what is measured is the event loop's share of a fleet call — the Redis round trips run
// on the worker thread and are not on the loop. Target: fleet ≤ 1.1 × host.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "brake/budget_engine.h"
#include "fleet/lease_book.h"
#include "policy/policy.h"

using namespace ab;

namespace {

constexpr int64_t kStepNs = 10'000'000;

std::shared_ptr<const policy::Policy> make_policy(bool fleet) {
  std::string y;
  if (fleet) y += "fleet: {redis: \"redis://127.0.0.1:6379\", host_id: bench}\n";
  y += "budgets:\n"
       "  - name: team\n"
       "    match: {cgroup: \"/agents/*\"}\n"
       "    limits:\n"
       "      - {tokens: 1000000000, window: 60s}\n"
       "      - {spend_usd: 1000000, window: 1h}\n"
       "      - {requests: 100000000, window: 60s}\n"
       "    action: throttle\n";
  if (fleet) y += "    scope: fleet\n";
  auto r = policy::load_text(y, "fleet_bench.yaml");
  if (!r.ok()) {
    for (const auto& e : r.errors) std::fprintf(stderr, "%s\n", e.c_str());
    std::abort();
  }
  return r.policy;
}

brake::CallFacts make_call() {
  brake::CallFacts c;
  c.pid = 4242;
  c.facts.cgroup = "/agents/a";
  c.facts.comm = "agent";
  c.facts.exe = "/usr/bin/agent";
  c.est_input_tokens = 800;
  c.reserved_output_tokens = 200;
  c.est_cost_usd = 0.001;
  return c;
}

// The worker's part, in memory: every request gets what it asked for.
void answer(fleet::LeaseBook& book, int64_t now, std::map<std::string, double>& lease) {
  for (const fleet::Request& q : book.poll(now)) {
    double& mine = lease[q.key];
    mine = std::max(0.0, mine - q.report - q.give_back) + q.want;
    fleet::Reply r;
    r.seq = q.seq;
    r.key = q.key;
    r.ok = true;
    r.granted = q.want;
    r.my_lease = mine;
    r.hosts_seen = 2;
    book.apply(r, now);
  }
}

void BM_AdmitSettle(benchmark::State& state) {
  const bool fleet = state.range(0) == 1;
  auto pol = make_policy(fleet);
  brake::BudgetEngine engine(pol);
  std::unique_ptr<fleet::LeaseBook> book;
  std::map<std::string, double> store;  // the leases "Redis" holds
  int64_t now = 1'000'000'000'000;
  if (fleet) {
    book = std::make_unique<fleet::LeaseBook>(*pol->fleet);
    book->heartbeat(true, 2, "", now);
    engine.set_lease_source(book.get());
  }
  const brake::CallFacts call = make_call();
  // Warm up: the first lease, the windows filled to their steady state (6,000 calls a minute).
  for (int i = 0; i < 6000; ++i) {
    now += kStepNs;
    if (book && i % 10 == 0) answer(*book, now, store);
    auto d = engine.admit(call, now);
    if (d.admitted) engine.settle(d.reservation_id, 1000, 0.001, now);
  }
  uint64_t refused = 0, n = 0;
  for (auto _ : state) {
    now += kStepNs;
    if (book && ++n % 10 == 0) answer(*book, now, store);
    auto d = engine.admit(call, now);
    if (d.admitted) engine.settle(d.reservation_id, 1000, 0.001, now);
    else ++refused;
    benchmark::DoNotOptimize(d);
  }
  state.counters["refused"] = static_cast<double>(refused);
  state.SetLabel(fleet ? "scope: fleet (lease path)" : "scope: host");
}
BENCHMARK(BM_AdmitSettle)->ArgName("fleet")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace

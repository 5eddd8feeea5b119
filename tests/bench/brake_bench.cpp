// brake_bench — Google Benchmark for the budget engine's decision cost (issue 4): what one LLM
// call costs the daemon's event loop in budget decisions, for policies of 1, 10 and 100 budgets.
// Links with ab_core (the engine and the policy compiler) and benchmark_main. Times are printed
// in µs per call (one iteration = one call).
//
//   BM_AdmitSettle/budgets:N/match:one   N budgets, each selecting its own cgroup; the call
//                                         comes from the cgroup of the LAST budget (one bucket
//                                         is charged; every budget is matched against it the
//                                         first time, then the engine's match cache answers)
//   BM_AdmitSettleNewProcess/budgets:N   the same, but every call comes from a pid the engine
//                                         has not seen (the match cache misses every time and,
//                                         past its capacity, evicts): a host of one-shot
//                                         processes
//   BM_AdmitSettle/budgets:N/match:all   N budgets that all select the call's cgroup: the call
//                                         falls in N buckets (nesting taken to the extreme)
//   BM_CreditProbe/...                   admit + cancel: the probe refresh_gates() makes per
//                                         gated process after every admission and settlement,
//                                         with 6,000 settled calls in each 60 s window (the clock
//                                         stands still: the window stays that full)
//   BM_HoldRelease/...                   a call found without room, held, then released by
//                                         release_ready() once its window moved on, settled
//
// Each budget has three limits (tokens/60s, spend/1h, requests/60s) and max_inflight, as the
// policy examples do. The fake clock advances 10 ms per call, so a 60 s window holds about 6,000
// entries per bucket in steady state (a host making 100 calls/s).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "brake/budget_engine.h"
#include "policy/policy.h"

using namespace ab;

namespace {

constexpr int64_t kStepNs = 10'000'000;  // 10 ms between two calls

std::shared_ptr<const policy::Policy> make_policy(int n, bool all_match, double tokens_limit, double req_limit) {
  std::string y = "budgets:\n";
  for (int i = 0; i < n; i++) {
    const std::string sel = all_match ? "/agents/**" : "/agents/a" + std::to_string(i);
    y += "  - name: b" + std::to_string(i) + "\n";
    y += "    match: {cgroup: \"" + sel + "\"}\n";
    y += "    per: cgroup\n";
    y += "    max_inflight: 64\n";
    y += "    limits:\n";
    y += "      - {tokens: " + std::to_string(static_cast<long long>(tokens_limit)) + ", window: 60s}\n";
    y += "      - {spend_usd: 1000000, window: 1h}\n";
    y += "      - {requests: " + std::to_string(static_cast<long long>(req_limit)) + ", window: 60s}\n";
    y += "    action: throttle\n";
  }
  auto r = policy::load_text(y, "brake_bench.yaml");
  if (!r.ok()) {
    for (const auto& e : r.errors) std::fprintf(stderr, "%s\n", e.c_str());
    std::abort();
  }
  return r.policy;
}

brake::CallFacts call_from(int n) {
  brake::CallFacts c;
  c.pid = 4242;
  c.tree_root_pid = 4200;
  c.facts.cgroup = "/agents/a" + std::to_string(n - 1) + "/job";
  c.facts.exe = "/usr/bin/python3.11";
  c.facts.comm = "python3";
  c.facts.uid = 1000;
  c.est_input_tokens = 600;
  c.reserved_output_tokens = 256;
  c.est_cost_usd = 0.0004;
  return c;
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"budgets", "match"});
  for (int n : {1, 10, 100})
    for (int all : {0, 1}) b->Args({n, all});
  b->Unit(benchmark::kMicrosecond);
}

void label(benchmark::State& state, size_t buckets) {
  state.SetLabel(std::string(state.range(1) ? "all match" : "one matches") + ", " + std::to_string(buckets) +
                 " bucket(s) per call");
}

// admit + settle: the engine's part of every LLM call the daemon sees.
void BM_AdmitSettle(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  brake::BudgetEngine engine(make_policy(n, state.range(1) != 0, 1e12, 1e12));
  const brake::CallFacts call = call_from(n);
  int64_t now = 1'000'000'000;
  size_t buckets = 0;
  for (auto _ : state) {
    brake::Decision d = engine.admit(call, now);
    if (!d.admitted) state.SkipWithError("not admitted");
    buckets = d.buckets.size();
    engine.settle(d.reservation_id, 700, 0.0003, now + kStepNs / 2);
    now += kStepNs;
  }
  label(state, buckets);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AdmitSettle)->Apply(args);

// admit + settle, each call from another pid: the match cache never has the process.
void BM_AdmitSettleNewProcess(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  brake::BudgetEngine engine(make_policy(n, false, 1e12, 1e12));
  brake::CallFacts call = call_from(n);
  int64_t now = 1'000'000'000;
  size_t buckets = 0;
  uint32_t i = 0;
  for (auto _ : state) {
    call.pid = call.tree_root_pid = 100'000 + (i++ % 1'000'000);
    brake::Decision d = engine.admit(call, now);
    if (!d.admitted) state.SkipWithError("not admitted");
    buckets = d.buckets.size();
    engine.settle(d.reservation_id, 700, 0.0003, now + kStepNs / 2);
    now += kStepNs;
  }
  state.SetLabel("a new process per call, " + std::to_string(buckets) + " bucket(s) per call");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AdmitSettleNewProcess)->ArgNames({"budgets"})->Arg(1)->Arg(10)->Arg(100)->Unit(benchmark::kMicrosecond);

// admit + cancel: the daemon's credit probe (refresh_gates) for one gated process.
void BM_CreditProbe(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  brake::BudgetEngine engine(make_policy(n, state.range(1) != 0, 1e12, 1e12));
  const brake::CallFacts call = call_from(n);
  int64_t now = 1'000'000'000;
  // some history in the windows, as on a busy host
  for (int i = 0; i < 6000; i++, now += kStepNs) {
    auto d = engine.admit(call, now);
    engine.settle(d.reservation_id, 700, 0.0003, now);
  }
  size_t buckets = 0;
  for (auto _ : state) {
    brake::Decision d = engine.admit(call, now);
    buckets = d.buckets.size();
    engine.cancel(d.reservation_id);
    now += 1000;  // 1 µs: the window keeps its 6,000 entries for the whole run
  }
  label(state, buckets);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CreditProbe)->Apply(args);

// A call that finds no room: admit (refused) + hold, then release_ready once the window moved
// on (admitted there) + settle. Requests limit 1 per 60 s, so every call is held first.
void BM_HoldRelease(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  brake::BudgetEngine engine(make_policy(n, state.range(1) != 0, 1e12, 1));
  const brake::CallFacts call = call_from(n);
  int64_t now = 1'000'000'000;
  {
    auto d = engine.admit(call, now);   // fills the window
    engine.settle(d.reservation_id, 700, 0.0003, now);
  }
  size_t buckets = 0;
  for (auto _ : state) {
    brake::Decision d = engine.admit(call, now);
    if (d.admitted) {
      state.SkipWithError("admitted: the window should be full");
      break;
    }
    engine.hold(call.pid, 77, call, now);
    now += 60'000'000'000;  // the window moves on
    auto rel = engine.release_ready(now);
    if (rel.size() != 1) {
      state.SkipWithError("not released");
      break;
    }
    buckets = rel[0].decision.buckets.size();
    engine.settle(rel[0].decision.reservation_id, 700, 0.0003, now);
  }
  label(state, buckets);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HoldRelease)->Apply(args);

}  // namespace

// loops_bench — Google Benchmark for the loop detectors (daemon/loops), through the
// LoopDetectors facade the daemon uses, with all four rules enabled (policy compiled by
// ab::policy::load_text; thresholds = the documented defaults, actions that gate calls).
//
//   BM_Fingerprint2KB          request_fingerprint over a ~2 KB user message plus
//                              turn_fingerprint of a ~500 B previous assistant turn: what the
//                              daemon computes per request (core/loops_glue.cpp)
//   BM_DetectorsPerCall/N/W    observe_call + observe_response of one call, N tracked agents,
//                              fingerprints precomputed (the detectors alone); W: warm-up
//                              calls per agent (0: a full window, 62)
//   BM_CallWithFingerprint/N/W the same plus the fingerprint of the call's ~2 KB message
//   BM_MemoryPerAgent/N/C      malloc'd bytes (mallinfo2 uordblks + hblkhd) and RSS added to
//                              the detectors by N agents that made C calls each, divided by N
//                              (one iteration; the figures are the counters bytes_per_agent
//                              and rss_per_agent; the bench's own table of agents is excluded)
//
// Workload (steady state, reached before timing): N agents, each its own process and tree
// (pid 100000 + i, tree root itself, 100 agents per cgroup), agents 2j and 2j+1 joined by a
// loopback TCP channel (ping-pong has neighbours to check), one spawn each. Agents take turns
// round-robin; every agent always has exactly one call in flight and calls again as soon as
// its previous call ends, one call every kAgentIntervalNs (5 s) per agent, so the detectors'
// clocks advance kAgentIntervalNs / N per call and every agent keeps a full repetition window
// (5 min = 60 calls) of history. Each call: observe_response of the agent's previous call
// (600 tokens, $0.001; every 97th call a 429 with retry-after 2 s), then observe_call of the
// next one. Fingerprints are of distinct texts (no repetition fires); the pairs never hand
// off (both always in flight), so no ping-pong either: the figure is the honest steady state.
//
// Note: repetition, fan-out and retry storm track at most 4096 entities and ping-pong 8192
// processes; with N = 10000 the least recent are evicted (see the counters *_entities), and
// each eviction costs a sweep of the whole map (see BM_DetectorsPerCall/10000).
#include <benchmark/benchmark.h>

#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "loops/fingerprint.h"
#include "loops/loop_detectors.h"
#include "policy/policy.h"

using namespace ab;

namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr int64_t kAgentIntervalNs = 5 * kNsPerSec;  // one call per agent every 5 s
constexpr int kWindowCalls = 60;                     // 5 min repetition window / 5 s
constexpr size_t kPool = 4096;                       // distinct messages / fingerprints

constexpr std::string_view kPolicy = R"(loops:
  ping_pong: {action: kill, max_round_trips: 10, window: 10m}
  repetition: {action: throttle, max_repeats: 6, window: 5m, hamming: 3}
  fan_out: {action: throttle, max_concurrent: 16}
  retry_storm: {action: throttle, max_errors: 20, window: 1m}
)";

const policy::Policy& bench_policy() {
  static const std::shared_ptr<const policy::Policy> p = [] {
    auto r = policy::load_text(kPolicy, "loops_bench.yaml");
    if (!r.ok()) {
      for (auto& e : r.errors) std::fprintf(stderr, "%s\n", e.c_str());
      throw std::runtime_error("loops_bench policy does not compile");
    }
    const auto& l = r.policy->loops;
    if (!(l.ping_pong.enabled && l.repetition.enabled && l.fan_out.enabled && l.retry_storm.enabled))
      throw std::runtime_error("loops_bench policy: a loop rule is disabled");
    return r.policy;
  }();
  return *p;
}

// Varied English-like text of about `bytes` bytes, the same for the same seed.
std::string text(uint64_t seed, size_t bytes) {
  static const char* kWords[] = {
      "account", "agent",   "archive", "balance", "branch",  "bucket",  "budget",  "buffer",  "cable",
      "camera",  "canvas",  "carbon",  "castle",  "catalog", "channel", "chapter", "circle",  "client",
      "cluster", "column",  "comment", "course",  "credit",  "crystal", "current", "cycle",   "debate",
      "decade",  "delta",   "design",  "detail",  "device",  "domain",  "driver",  "editor",  "effect",
      "element", "energy",  "engine",  "event",   "export",  "fabric",  "figure",  "filter",  "format",
      "frame",   "garden",  "gate",    "global",  "harbor",  "harvest", "horizon", "index",   "island",
      "kernel",  "ladder",  "layer",   "leader",  "legend",  "letter",  "library", "limit",   "liquid",
      "market",  "memory",  "metal",   "mirror",  "module",  "motion",  "network", "notice",  "number",
      "object",  "office",  "option",  "orbit",   "outcome", "owner",   "panel",   "parcel",  "pattern",
      "period",  "planet",  "pocket",  "portal",  "profit",  "pulse",   "puzzle",  "radar",   "record",
      "region",  "relay",   "remote",  "report",  "ribbon",  "river",   "sample",  "scale",   "screen",
      "season",  "sector",  "signal",  "socket",  "spiral",  "stream",  "string",  "summit",  "symbol",
      "system",  "tablet",  "theory",  "thread",  "ticket",  "topic",   "tower",   "trail",   "tunnel",
      "uniform", "valley",  "vector",  "vendor",  "vessel",  "village", "volume",  "window",  "winter"};
  constexpr size_t kN = sizeof(kWords) / sizeof(kWords[0]);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  std::string s;
  s.reserve(bytes + 16);
  while (s.size() < bytes) {
    if (!s.empty()) s += (rng() % 12 == 0) ? ". " : " ";
    s += kWords[rng() % kN];
  }
  return s;
}

struct Corpus {
  std::vector<std::string> messages;       // ~2 KB user messages
  std::vector<std::string> turns;          // ~500 B assistant turns
  std::vector<uint64_t> fingerprints;      // request_fingerprint(messages[i], turn_fingerprint(turns[i]))
};

const Corpus& corpus() {
  static const Corpus c = [] {
    Corpus c;
    for (size_t i = 0; i < kPool; ++i) {
      c.messages.push_back(text(2 * i, 2048));
      c.turns.push_back(text(2 * i + 1, 512));
      c.fingerprints.push_back(loops::request_fingerprint({c.messages.back()}, loops::turn_fingerprint(c.turns.back())));
    }
    return c;
  }();
  return c;
}

uint64_t fingerprint_of(size_t i) {
  const Corpus& c = corpus();
  return loops::request_fingerprint({c.messages[i]}, loops::turn_fingerprint(c.turns[i]));
}

// N agents driven round-robin as described at the top.
class Workload {
 public:
  explicit Workload(int agents) : n_(agents), step_ns_(kAgentIntervalNs / agents), det_(bench_policy()) {
    who_.resize(n_);
    in_flight_.assign(n_, {0, 0});
    for (int i = 0; i < n_; ++i) {
      auto& w = who_[i];
      w.pid = 100000 + i;
      w.tree_root_pid = w.pid;
      w.facts.cgroup = "/agents/group" + std::to_string(i / 100);
      w.facts.unit = "agent@" + std::to_string(i / 100) + ".service";
      w.facts.exe = "/usr/bin/python3.11";
      w.facts.comm = "python3";
      w.facts.uid = 1000;
    }
    now_ns_ = 1000 * kNsPerSec;
  }

  // The agents start: one spawn each, a channel per pair.
  void seed() {
    for (int i = 0; i < n_; ++i) det_.on_spawn(who_[i], now_ns_);
    for (int i = 0; i + 1 < n_; i += 2)
      det_.add_channel(who_[i].pid, who_[i + 1].pid, loops::ChannelKind::TcpLoopback, now_ns_);
  }

  // One call of the next agent: its previous call ends, the next one starts.
  template <bool kComputeFingerprint>
  size_t call() {
    const int a = static_cast<int>(k_ % n_);
    const size_t msg = k_ % kPool;
    size_t findings = 0;
    if (auto [id, start] = in_flight_[a]; id) {
      loops::ResponseObservation r;
      r.who = who_[a];
      r.call_id = id;
      r.start_ns = start;
      r.now_ns = now_ns_;
      r.status = id % 97 == 0 ? 429 : 200;
      r.retry_after_s = r.status == 429 ? 2.0 : -1;
      r.tokens = r.status == 200 ? 600 : 0;
      r.cost_usd = r.status == 200 ? 0.001 : 0;
      findings += det_.observe_response(r).size();
    }
    loops::CallObservation o;
    o.who = who_[a];
    o.call_id = ++next_id_;
    o.now_ns = now_ns_;
    o.fingerprint = kComputeFingerprint ? fingerprint_of(msg) : corpus().fingerprints[msg];
    findings += det_.observe_call(o).size();
    in_flight_[a] = {o.call_id, now_ns_};
    now_ns_ += step_ns_;
    ++k_;
    return findings;
  }

  void warm_up(int calls_per_agent) {
    for (int64_t i = 0; i < int64_t{calls_per_agent} * n_; ++i) warm_findings_ += call<false>();
  }

  const loops::LoopDetectors& detectors() const { return det_; }
  size_t warm_findings() const { return warm_findings_; }

 private:
  int n_;
  int64_t step_ns_;
  loops::LoopDetectors det_;
  std::vector<loops::ProcessInfo> who_;
  std::vector<std::pair<uint64_t, int64_t>> in_flight_;  // per agent: call id, start
  int64_t now_ns_ = 0;
  uint64_t next_id_ = 0;
  uint64_t k_ = 0;
  size_t warm_findings_ = 0;
};

void report(benchmark::State& state, const Workload& w, size_t findings) {
  const auto& d = w.detectors();
  state.counters["findings"] = static_cast<double>(findings + w.warm_findings());
  state.counters["rep_entities"] = static_cast<double>(d.repetition().entity_count());
  state.counters["fan_entities"] = static_cast<double>(d.fan_out().entity_count());
  state.counters["pp_processes"] = static_cast<double>(d.ping_pong().process_count());
}

// range(0) agents; range(1) warm-up calls per agent (default: a full window and then some).
template <bool kComputeFingerprint>
void run_calls(benchmark::State& state) {
  corpus();
  Workload w(static_cast<int>(state.range(0)));
  w.seed();
  w.warm_up(state.range(1) ? static_cast<int>(state.range(1)) : kWindowCalls + 2);
  size_t findings = 0;
  for (auto _ : state) findings += w.call<kComputeFingerprint>();
  state.SetItemsProcessed(state.iterations());
  report(state, w, findings);
}

void BM_DetectorsPerCall(benchmark::State& state) { run_calls<false>(state); }
void BM_CallWithFingerprint(benchmark::State& state) { run_calls<true>(state); }

void BM_Fingerprint2KB(benchmark::State& state) {
  const Corpus& c = corpus();
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(fingerprint_of(i));
    i = (i + 1) % kPool;
  }
  state.SetBytesProcessed(state.iterations() * int64_t(c.messages[0].size() + c.turns[0].size()));
}

// Bytes in use by malloc (arena + mmapped chunks) and the resident set.
struct Mem {
  size_t heap;
  size_t rss;
};
Mem mem_now() {
  struct mallinfo2 mi = mallinfo2();
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return {mi.uordblks + mi.hblkhd, static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE))};
}

void BM_MemoryPerAgent(benchmark::State& state) {
  corpus();
  bench_policy();
  const int n = static_cast<int>(state.range(0));
  const int calls = static_cast<int>(state.range(1));
  double heap_per = 0, rss_per = 0, heap_total = 0;
  for (auto _ : state) {
    auto w = std::make_unique<Workload>(n);  // the agent table is the bench's, not counted
    malloc_trim(0);
    const Mem before = mem_now();
    w->seed();
    w->warm_up(calls);
    const Mem after = mem_now();
    heap_total = static_cast<double>(after.heap) - static_cast<double>(before.heap);
    heap_per = heap_total / n;
    rss_per = (static_cast<double>(after.rss) - static_cast<double>(before.rss)) / n;
    report(state, *w, 0);
  }
  state.counters["bytes_per_agent"] = heap_per;
  state.counters["rss_per_agent"] = rss_per;
  state.counters["heap_MiB"] = heap_total / (1 << 20);
}

}  // namespace

BENCHMARK(BM_Fingerprint2KB);
BENCHMARK(BM_DetectorsPerCall)->Args({10, 0})->Args({100, 0})->Args({1000, 0})->Args({4000, 0});
BENCHMARK(BM_CallWithFingerprint)->Args({10, 0})->Args({100, 0})->Args({1000, 0});
// Past the entity caps (4096) every call is a new entity for repetition, fan-out and retry
// storm, and each one sweeps the whole map and scans it for the least recent: milliseconds per
// call, so a short warm-up (1 call per agent) and a fixed iteration count.
BENCHMARK(BM_DetectorsPerCall)->Args({10000, 1})->Iterations(2000)->Unit(benchmark::kMicrosecond);
// {agents, calls per agent}: 1 call = just tracked; 62 = a full 5-minute window of history
// (4000: just under the entity cap; 10000 x 62 would take ~30 min at the at-cap cost above)
BENCHMARK(BM_MemoryPerAgent)
    ->Args({1000, 1})
    ->Args({10000, 1})
    ->Args({1000, kWindowCalls + 2})
    ->Args({4000, kWindowCalls + 2})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

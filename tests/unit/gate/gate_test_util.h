// The gate's test bench: a fake clock, policies in the policy language, a recording Effects,
// and helpers that pick effects of one kind out of a list.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "gate/effects.h"
#include "gate/ledger.h"
#include "policy/policy.h"

namespace ab::gate::testing {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

struct FakeClock {
  int64_t now = 7'000 * kSec;
  int64_t advance(int64_t ns) { return now += ns; }
};

inline std::shared_ptr<const policy::Policy> policy(const std::string& yaml) {
  auto r = policy::load_text(yaml, "test.yaml");
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  return r.policy;
}

// What a kernel (or dry-run) implementation would be given, in order.
struct RecordingEffects : Effects {
  EffectList applied;
  void apply(const Effect& e) override { applied.push_back(e); }
};

template <class T>
std::vector<T> all_of(const EffectList& list) {
  std::vector<T> out;
  for (const auto& e : list)
    if (auto* x = std::get_if<T>(&e)) out.push_back(*x);
  return out;
}

template <class T>
std::vector<T> records_of(const EffectList& list) {
  std::vector<T> out;
  for (const auto& r : all_of<Record>(list))
    if (auto* x = std::get_if<T>(&r.event.what)) out.push_back(*x);
  return out;
}

inline std::vector<uint32_t> released_pids(const EffectList& list) {
  std::vector<uint32_t> pids;
  for (const auto& r : all_of<Release>(list)) pids.push_back(r.pid);
  return pids;
}

// Index of the first effect satisfying `pred`, or -1.
template <class Pred>
int index_of(const EffectList& list, Pred pred) {
  for (size_t i = 0; i < list.size(); i++)
    if (pred(list[i])) return static_cast<int>(i);
  return -1;
}

inline ProcessInfo process(uint32_t pid, uint32_t tree_root, const std::string& cgroup = "/agents/a") {
  ProcessInfo p;
  p.pid = pid;
  p.start_time = 1000 + pid;
  p.tree_root_pid = tree_root;
  p.facts.cgroup = cgroup;
  p.facts.exe = "/usr/bin/python3";
  p.facts.comm = "python3";
  p.facts.uid = 1000;
  return p;
}

// A ledger driven like the daemon drives it: every input's effects go to `effects`.
struct Bench {
  FakeClock clock;
  Ledger ledger;
  RecordingEffects effects;

  explicit Bench(const std::string& yaml, bool dry_run = false) : ledger(policy(yaml), options(dry_run)) {}

  static Ledger::Options options(bool dry_run) {
    Ledger::Options o;
    o.price = [](const std::string&, int64_t, int64_t) { return 0.0; };
    o.dry_run = dry_run;
    return o;
  }

  EffectList apply(EffectList list) {
    effects.apply_all(list);
    return list;
  }
  EffectList attach(uint32_t pid, uint32_t root, const std::string& cgroup = "/agents/a") {
    return apply(ledger.process_attached(process(pid, root, cgroup), clock.now));
  }
  // A request start seen in user space (an LLM call on stream `pid`).
  EffectList seen(uint32_t pid, uint64_t stream = 0) {
    RequestStart r;
    r.pid = pid;
    r.stream = stream ? stream : pid;
    r.is_llm = true;
    r.est_input_tokens = 10;
    r.max_tokens = 10;
    return apply(ledger.request_seen(r, clock.now));
  }
  EffectList ended(uint32_t pid, uint64_t stream = 0) {
    ResponseEnd r;
    r.pid = pid;
    r.stream = stream ? stream : pid;
    r.input_tokens = 10;
    r.output_tokens = 10;
    return apply(ledger.response_ended(r, clock.now));
  }
  // A hold the kernel took at `kernel_at` (0: now), reported now.
  EffectList held(uint32_t pid, HoldReport::Taken taken = HoldReport::Taken::Stopped, bool capture = false,
                  int64_t kernel_at = 0) {
    HoldReport h;
    h.pid = pid;
    h.start_time = 1000 + pid;
    h.capture = capture;
    h.taken = taken;
    h.at_ns = kernel_at ? kernel_at : clock.now;
    return apply(ledger.hold_reported(h, clock.now));
  }
  EffectList tick() { return apply(ledger.tick(clock.now)); }
  int64_t credits(uint32_t pid) const { return ledger.credits(pid).value_or(-1); }
};

}  // namespace ab::gate::testing

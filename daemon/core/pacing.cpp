// pacing.cpp — holding an agent before a provider's quota runs out (policy `pacing:`), and
// the projected-spend alert (a bucket whose current spend rate crosses a spend limit before
// its window ends).
//
// Pacing reads the remaining-quota headers of each response:
//   OpenAI     x-ratelimit-remaining-{requests,tokens} + x-ratelimit-reset-{requests,tokens}
//              (Go durations: "1s", "6m0s", "20ms")
//   Anthropic  anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset}
//              (reset: an RFC 3339 time)
// When no request is left, or fewer tokens than the agent's last call used, its next request
// start is held until the reset (a slow call, never an error).
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdlib>
#include <ctime>

#include "core/daemon_impl.h"

namespace ab::core {

namespace {

const std::string* header(const LlmCall& c, const char* name) {
  auto it = c.ratelimit.find(name);
  return it == c.ratelimit.end() ? nullptr : &it->second;
}

}  // namespace

void Daemon::pace_on_response(const LlmCall& call, uint32_t pid) {
  if (!policy_->pacing.enabled || call.ratelimit.empty() || !gate_ || gate_->dry_run()) return;
  const int64_t now_unix = clock_ns(CLOCK_REALTIME), now = clock_ns(CLOCK_MONOTONIC);
  const int64_t used = call.input_tokens + call.output_tokens;
  int64_t wait_ns = 0;
  auto consider = [&](const char* remaining, const char* reset, bool is_tokens, bool rfc3339) {
    const std::string* r = header(call, remaining);
    const std::string* t = header(call, reset);
    if (!r || !t) return;
    char* end = nullptr;
    const long long left = std::strtoll(r->c_str(), &end, 10);
    if (end == r->c_str()) return;
    const bool exhausted = is_tokens ? (used > 0 && left < used) : left <= 0;
    if (!exhausted) return;
    int64_t ns = rfc3339 ? util::parse_rfc3339_ns(*t) - now_unix : util::parse_go_duration_ns(*t);
    if (ns > 0) wait_ns = std::max(wait_ns, ns);
  };
  consider("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", false, false);
  consider("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", true, false);
  consider("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset", false, true);
  consider("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset", true, true);
  consider("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset", true, true);
  consider("anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset", true, true);
  if (wait_ns <= 0) return;
  wait_ns = std::min<int64_t>(wait_ns, policy_->max_hold.count() * 1'000'000);
  spdlog::info("pid {}: provider quota exhausted, next request held {:.1f}s (pacing)", pid, double(wait_ns) / 1e9);
  apply_gate(gate_->pace(gate::Pace{pid, now + wait_ns, gate::HoldReason::Pacing, "", policy::Action::Throttle, {}}, now));
}

// Projected spend: for each spend limit of the call's buckets, the bucket's spend rate over
// the last minute (or the window, if shorter) projected over the window's length. When the
// projection passes the limit while the level is still below it, `spend_projected` is
// recorded once per episode (again only after a quiet window).
void Daemon::project_spend(const LlmCall& call, uint32_t pid) {
  if (!gate_ || call.cost_usd <= 0) return;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  const auto& engine = gate_->budgets();
  auto refs = engine.buckets_of(gate_->typical_call(pid));
  if (refs.empty()) return;
  brake::Snapshot snap;
  bool have_snap = false;
  for (const auto& ref : refs) {
    const std::string id = ref.id.budget + "\n" + ref.id.key;
    auto& samples = spend_samples_[id];
    samples.emplace_back(now, call.cost_usd);
    if (!have_snap) {
      snap = engine.snapshot(now);
      have_snap = true;
    }
    for (const auto& b : snap.buckets) {
      if (!(b.id == ref.id)) continue;
      for (const auto& l : b.limits) {
        if (l.kind != policy::LimitKind::SpendUsd || l.window_ns <= 0) continue;
        const int64_t span = std::min<int64_t>(l.window_ns, 60'000'000'000LL);
        while (!samples.empty() && now - samples.front().first > span) samples.pop_front();
        if (samples.size() < 2) continue;
        double spent = 0;
        for (const auto& [t, c] : samples) spent += c;
        const double elapsed_s = std::max(1.0, double(now - samples.front().first) / 1e9);
        const double rate = spent / elapsed_s;
        const double window_s = double(l.window_ns) / 1e9;
        if (l.level >= l.limit || rate * window_s <= l.limit) continue;
        const double crossing_s = (l.limit - l.level) / rate;
        auto& last = last_projected_[id];
        if (last && now - last < l.window_ns) continue;
        last = now;
        const Attribution who = attribute(pid);
        record_event("spend_projected", pid, who.cgroup, who.comm,
                     {{"budget", ref.id.budget}, {"bucket", ref.id.key}, {"limit", l.limit},
                      {"spent", l.level}, {"rate_usd_per_s", rate},
                      {"window", util::format_policy_duration(std::chrono::milliseconds(l.window_ns / 1'000'000))},
                      {"projected_crossing_s", crossing_s},
                      {"action", std::string(policy::to_string(ref.action))}});
        spdlog::warn("budget {} ({}): ${:.4f}/s would cross ${} in {:.0f}s", ref.id.budget, ref.id.key, rate, l.limit,
                     crossing_s);
      }
    }
  }
}

}  // namespace ab::core

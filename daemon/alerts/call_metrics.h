// call_metrics.h — per provider and model aggregates of completed LLM calls (calls, tokens,
// cost, a latency histogram), with bounded label cardinality. The daemon's event loop feeds
// every call; /metrics (render_prometheus) and the OTLP metrics export read copies.
//
// Cardinality bound: at most kMaxProviders provider values and, per provider, at most
// kMaxModelsPerProvider model values keep a label of their own; a later provider is counted
// as provider="other" and a later model as model="other" of its provider. The assignment is
// first come, first kept (never re-ranked), so a series, once it exists, keeps counting and
// never resets: counters stay monotonic. Worst case: 16 × (16 + 1) + 1 label pairs per family.
// Model names are cut to kMaxLabelBytes bytes (a model string comes off the wire).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ab::alerts {

inline constexpr size_t kMaxProviders = 16;
inline constexpr size_t kMaxModelsPerProvider = 16;
inline constexpr size_t kMaxLabelBytes = 100;
inline constexpr const char* kOtherLabel = "other";

// Upper bounds (seconds) of the call-latency histogram buckets; +Inf is implicit.
inline constexpr std::array<double, 13> kLatencyBucketsS = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300};

// Decides the (provider, model) label pair a call is counted under. Pure; not thread-safe.
class ModelLabels {
 public:
  ModelLabels(size_t max_providers = kMaxProviders, size_t max_models_per_provider = kMaxModelsPerProvider)
      : max_providers_(max_providers), max_models_(max_models_per_provider) {}
  // Empty provider/model become "unknown" (counted against the bound like any other value).
  std::pair<std::string, std::string> labels(std::string_view provider, std::string_view model);
  size_t folded() const { return folded_; }  // calls counted under an "other" label so far

 private:
  size_t max_providers_, max_models_;
  std::map<std::string, std::map<std::string, bool>, std::less<>> seen_;  // provider → models with own label
  size_t folded_ = 0;
};

struct ModelAggregate {
  uint64_t calls = 0;
  uint64_t errors = 0;          // HTTP status >= 400 or no response
  uint64_t input_tokens = 0;    // billed input, cache included
  uint64_t output_tokens = 0;
  uint64_t cache_read_tokens = 0;
  uint64_t cache_write_tokens = 0;
  double cost_usd = 0;
  std::array<uint64_t, kLatencyBucketsS.size()> latency_buckets{};  // non-cumulative counts per bucket
  uint64_t latency_over = 0;    // above the last bucket
  double latency_sum_s = 0;
  uint64_t latency_count = 0;   // calls with a measured latency (a response arrived)
};

struct CallSample {
  std::string_view provider, model;
  int64_t input_tokens = 0, output_tokens = 0, cache_read_tokens = 0, cache_write_tokens = 0;
  double cost_usd = 0;
  double latency_s = -1;        // < 0: none measured
  bool error = false;
};

// The aggregates, keyed by the bounded labels.
class CallMetrics {
 public:
  void add(const CallSample& c);
  const std::map<std::pair<std::string, std::string>, ModelAggregate>& by_model() const { return by_model_; }
  size_t folded_calls() const { return labels_.folded(); }

 private:
  ModelLabels labels_;
  std::map<std::pair<std::string, std::string>, ModelAggregate> by_model_;
};

}  // namespace ab::alerts

#include "alerts/call_metrics.h"

#include <algorithm>

namespace ab::alerts {

namespace {

// A label value cut to kMaxLabelBytes without splitting a UTF-8 sequence.
std::string bounded(std::string_view v) {
  if (v.empty()) return "unknown";
  if (v.size() <= kMaxLabelBytes) return std::string(v);
  size_t n = kMaxLabelBytes;
  while (n > 0 && (static_cast<unsigned char>(v[n]) & 0xC0) == 0x80) n--;
  return std::string(v.substr(0, n));
}

}  // namespace

std::pair<std::string, std::string> ModelLabels::labels(std::string_view provider_in, std::string_view model_in) {
  std::string provider = bounded(provider_in), model = bounded(model_in);
  auto p = seen_.find(provider);
  if (p == seen_.end()) {
    if (provider == kOtherLabel || seen_.size() >= max_providers_) {
      // the "other" provider folds every model too: its models are not worth a series each
      folded_++;
      return {kOtherLabel, kOtherLabel};
    }
    p = seen_.emplace(provider, std::map<std::string, bool>{}).first;
  }
  auto& models = p->second;
  if (models.count(model)) return {provider, model};
  if (model == kOtherLabel || models.size() >= max_models_) {
    folded_++;
    return {provider, kOtherLabel};
  }
  models.emplace(model, true);
  return {provider, model};
}

void CallMetrics::add(const CallSample& c) {
  auto& a = by_model_[labels_.labels(c.provider, c.model)];
  a.calls++;
  if (c.error) a.errors++;
  a.input_tokens += static_cast<uint64_t>(std::max<int64_t>(0, c.input_tokens));
  a.output_tokens += static_cast<uint64_t>(std::max<int64_t>(0, c.output_tokens));
  a.cache_read_tokens += static_cast<uint64_t>(std::max<int64_t>(0, c.cache_read_tokens));
  a.cache_write_tokens += static_cast<uint64_t>(std::max<int64_t>(0, c.cache_write_tokens));
  a.cost_usd += c.cost_usd;
  if (c.latency_s >= 0) {
    a.latency_count++;
    a.latency_sum_s += c.latency_s;
    auto it = std::lower_bound(kLatencyBucketsS.begin(), kLatencyBucketsS.end(), c.latency_s);
    if (it == kLatencyBucketsS.end())
      a.latency_over++;
    else
      a.latency_buckets[static_cast<size_t>(it - kLatencyBucketsS.begin())]++;
  }
}

}  // namespace ab::alerts

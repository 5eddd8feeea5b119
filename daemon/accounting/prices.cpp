// prices.cpp — price table look-ups and the per-provider cost formulas (see prices.h).
#include "accounting/prices.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace ab::accounting {

namespace {

std::string normalize(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  std::string out(s.substr(b, e - b));
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

bool is_boundary(char c) { return c == '-' || c == '@' || c == ':'; }

// "us.anthropic.claude-3-5-haiku-20241022-v1:0" → "claude-3-5-haiku-20241022-v1:0"; a name
// that does not start with [geo.]vendor. is returned whole.
std::string_view bedrock_base(std::string_view n) {
  static constexpr std::string_view kGeo[] = {"us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca."};
  static constexpr std::string_view kVendor[] = {"anthropic.", "meta.", "amazon.", "mistral.", "cohere.",
                                                 "ai21.", "deepseek.", "openai.", "qwen.", "writer."};
  std::string_view r = n;
  for (auto g : kGeo)
    if (r.starts_with(g)) {
      r.remove_prefix(g.size());
      break;
    }
  for (auto v : kVendor)
    if (r.starts_with(v)) return r.substr(v.size());
  return n;
}

}  // namespace

PriceTable PriceTable::builtin() {
  static const PriceTable table = [] {
    std::vector<std::string> errors;
    PriceTable t = from_yaml(ab::embedded::kPrices, "builtin:prices.yaml", errors);
    if (!errors.empty()) throw std::logic_error("embedded price table is invalid: " + errors.front());
    return t;
  }();
  return table;
}

PriceTable PriceTable::from_yaml(std::string_view yaml, const std::string& source_name,
                                 std::vector<std::string>& errors) {
  PriceTable t;
  t.override_with(ab::policy::parse_price_file(yaml, source_name, errors));
  return t;
}

PriceTable PriceTable::for_policy(const ab::policy::Policy& policy) {
  PriceTable t = builtin();
  t.override_with(policy.prices);
  return t;
}

void PriceTable::set(std::string_view model, const Price& price) { prices_[normalize(model)] = price; }

void PriceTable::override_with(const std::map<std::string, Price>& prices) {
  for (const auto& [model, price] : prices) set(model, price);
}

std::optional<std::string> PriceTable::resolve(std::string_view model) const {
  std::string name = normalize(model);
  if (name.empty()) return std::nullopt;
  if (prices_.count(name)) return name;
  if (size_t slash = name.rfind('/'); slash != std::string::npos) {
    name = name.substr(slash + 1);
    if (name.empty()) return std::nullopt;
    if (prices_.count(name)) return name;
  }
  // Longest key that is a prefix of the name ending at a boundary: try every boundary from
  // the right.
  auto longest_prefix = [this](std::string_view n) -> std::optional<std::string> {
    for (size_t i = n.size(); i-- > 1;) {
      if (!is_boundary(n[i])) continue;
      std::string_view prefix(n.data(), i);
      if (auto it = prices_.find(prefix); it != prices_.end()) return it->first;
    }
    return std::nullopt;
  };
  if (auto k = longest_prefix(name)) return k;
  // Bedrock model ids: "[geo.]vendor.model-…-v1:0" ("us.anthropic.claude-sonnet-4-20250514-v1:0")
  // are retried without the geography and vendor.
  if (std::string_view rest = bedrock_base(name); rest.size() != name.size()) {
    if (prices_.count(rest)) return std::string(rest);
    return longest_prefix(rest);
  }
  return std::nullopt;
}

std::optional<Price> PriceTable::lookup(std::string_view model) const {
  auto key = resolve(model);
  if (!key) return std::nullopt;
  return prices_.find(*key)->second;
}

CostFormula formula_for(std::string_view api, std::string_view provider) {
  std::string_view k = api.empty() ? provider : api;
  // Bedrock reports cache reads and writes apart (Converse cacheRead/WriteInputTokens, Claude's
  // own usage in InvokeModel): the Anthropic shape; without a cache_write price it is the
  // OpenAI one.
  if (k == "anthropic" || k == "bedrock" || k == "aws") return CostFormula::Anthropic;
  if (k == "gemini" || k == "google") return CostFormula::Gemini;
  return CostFormula::OpenAI;
}

double cost_usd(CostFormula formula, const TokenUsage& u, const Price& p) {
  const double in = std::max<int64_t>(u.input, 0);
  const double out = std::max<int64_t>(u.output, 0);
  const double cr = std::max<int64_t>(u.cache_read, 0);
  const double cw = std::max<int64_t>(u.cache_write, 0);
  const double p_in = p.input / 1e6;
  const double p_out = p.output / 1e6;
  const double p_cr = p.cache_read.value_or(p.input) / 1e6;
  const double p_cw = p.cache_write.value_or(p.input) / 1e6;
  switch (formula) {
    case CostFormula::Anthropic: {
      double uncached = std::max(in - cr - cw, 0.0);
      // 1-hour writes at 2x the base input price; the rest (5-minute TTL) at cache_write.
      const double cw1h = std::min<double>(std::max<int64_t>(u.cache_write_1h, 0), cw);
      return uncached * p_in + (cw - cw1h) * p_cw + cw1h * kCacheWrite1hFactor * p_in + cr * p_cr + out * p_out;
    }
    case CostFormula::Gemini:
    case CostFormula::OpenAI: {
      // Identical shapes: cached input at the cache-read price, the rest at the input price.
      double uncached = std::max(in - cr, 0.0);
      return uncached * p_in + cr * p_cr + out * p_out;
    }
  }
  return 0;
}

void price_call(ab::LlmCall& call, const PriceTable& table) {
  auto price = table.lookup(call.model);
  if (!price) {
    call.cost_usd = 0;
    call.price_known = false;
    return;
  }
  TokenUsage u{call.input_tokens, call.output_tokens, call.cache_read_tokens, call.cache_write_tokens,
               call.cache_write_1h_tokens};
  call.cost_usd = cost_usd(formula_for(call.api, call.provider), u, *price);
  call.price_known = true;
}

}  // namespace ab::accounting

// prices.h — model prices and the cost of one LLM call.
//
// PRICE TABLE. USD per 1M tokens, per model: input, output, cache_read, cache_write. The
// built-in table is policies/prices.yaml (embedded in the binary); a policy's `prices:`
// extends/overrides it (PriceTable::for_policy). A missing cache price means "the input price".
//
// MODEL NAME MATCHING (lookup). The name is trimmed and lower-cased, then, first hit wins:
//   1. exact:   the name is a key                         ("gpt-4o-2024-05-13" has its own row)
//   2. basename: a name with '/' is retried from the last '/' on
//               ("models/gemini-2.5-pro", "openai/gpt-4o" on OpenRouter)
//   3. longest prefix at a boundary: the longest key K such that the name starts with K and
//      the next character is '-', '@' or ':' — so dated snapshots and aliases resolve:
//      "gpt-4o-2024-08-06" → gpt-4o, "gpt-4o-mini-2024-07-18" → gpt-4o-mini (longer wins),
//      "claude-sonnet-4-5-20250929" → claude-sonnet-4-5, "claude-3-5-haiku-latest" →
//      claude-3-5-haiku, "claude-sonnet-4-5@20250929" (Vertex) → claude-sonnet-4-5,
//      "llama3:8b" → llama3. A '.' is NOT a boundary: "gpt-5.1" never takes gpt-5's price.
//   4. Bedrock ids: a name starting with [geo.]vendor. ("us.", "eu.", "apac.", "global.", …;
//      "anthropic.", "meta.", "amazon.", "mistral.", …) is retried by 1 and 3 without them:
//      "us.anthropic.claude-sonnet-4-20250514-v1:0" → claude-sonnet-4.
//   Otherwise the model is unknown.
//
// COST OF A CALL (price_call). Token fields are those of ab::LlmCall: input_tokens is the
// BILLED input with cache reads and writes included, output_tokens includes reasoning /
// thinking tokens. P_x is the price of x per token (table value / 1e6):
//   OpenAI    (api openai, and ollama / OpenAI-compatible servers):
//             (input − cache_read)·P_in + cache_read·P_cache_read + output·P_out
//             (reasoning tokens are inside output; OpenAI bills no cache writes)
//   Anthropic (api anthropic, and bedrock: its cache reads and writes are reported apart):
//             (input − cache_read − cache_write)·P_in + cache_write·P_cache_write
//             + cache_read·P_cache_read + output·P_out
//             where cache_write splits by TTL (usage.cache_creation): the 1-hour writes
//             (cache_write_1h) cost 2·P_in, the rest (5-minute TTL) P_cache_write:
//             … + (cache_write − cache_write_1h)·P_cache_write + cache_write_1h·2·P_in …
//   Gemini    (api gemini):
//             (input − cached)·P_in + cached·P_cache_read + output·P_out
//             (cached = cache_read_tokens = cachedContentTokenCount; output includes
//             thoughtsTokenCount; the ≤200k-token prompt tier is the one priced)
//   DeepSeek's prompt_cache_hit_tokens are its cache_read (protocol/adapter.cpp), so the
//   OpenAI formula prices them at the row's cache_read ("cache hit") price.
// Batch rates are never applied: no call agentbrake sees is a batch (OpenAI /v1/batches and
// Anthropic's Message Batches are uploaded files and fetched results, not per-call
// exchanges; docs/accounting.md).
// The uncached part is clamped at 0 if a provider reports more cached than billed tokens.
// Unknown model: cost 0, price_known = false (the call is still counted).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/policy.h"
#include "protocol/llm_call.h"

namespace ab::accounting {

using Price = ab::policy::ModelPrice;  // USD per 1M tokens; absent cache prices = input price

class PriceTable {
 public:
  PriceTable() = default;

  // policies/prices.yaml as embedded in the binary. Parsed once; a broken embedded table is a
  // build defect and throws std::logic_error.
  static PriceTable builtin();
  // A price file (same format as policies/prices.yaml). Errors: "source:line: message".
  static PriceTable from_yaml(std::string_view yaml, const std::string& source_name,
                              std::vector<std::string>& errors);
  // builtin() overridden by the policy's `prices:`.
  static PriceTable for_policy(const ab::policy::Policy& policy);

  void set(std::string_view model, const Price& price);
  // Each entry replaces the table's row of that model (or adds it).
  void override_with(const std::map<std::string, Price>& prices);

  std::optional<Price> lookup(std::string_view model) const;
  // The table key lookup() would use, for diagnostics ("gpt-4o-2024-08-06" → "gpt-4o").
  std::optional<std::string> resolve(std::string_view model) const;

  size_t size() const { return prices_.size(); }
  const std::map<std::string, Price, std::less<>>& rows() const { return prices_; }

 private:
  std::map<std::string, Price, std::less<>> prices_;  // keys lower-cased
};

// Which formula applies: by wire format (api), else by provider name.
enum class CostFormula { OpenAI, Anthropic, Gemini };
CostFormula formula_for(std::string_view api, std::string_view provider);

struct TokenUsage {
  int64_t input = 0;        // billed input, cache reads and writes included
  int64_t output = 0;       // reasoning included
  int64_t cache_read = 0;
  int64_t cache_write = 0;
  int64_t cache_write_1h = 0;  // of cache_write, 1-hour TTL writes (Anthropic)
};

// Anthropic bills a 1-hour-TTL cache write at 2x the model's base input price (a 5-minute one
// at 1.25x: the table's cache_write).
inline constexpr double kCacheWrite1hFactor = 2.0;

// USD for `usage` at `price` with `formula` (see the header comment).
double cost_usd(CostFormula formula, const TokenUsage& usage, const Price& price);

// Sets call.cost_usd and call.price_known from call.model, call.api/provider and its tokens.
void price_call(ab::LlmCall& call, const PriceTable& table);

}  // namespace ab::accounting

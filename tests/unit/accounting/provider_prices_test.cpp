// The rows of the OpenAI-compatible hosts, Anthropic's 1-hour cache writes, DeepSeek's cache
// hits: a known usage, priced by the built-in table, to the exact dollar amount worked by hand.
#include <gtest/gtest.h>

#include "accounting/prices.h"

using namespace ab::accounting;

namespace {

// 1,000,000 billed input tokens of which `cached` were cache hits, 100,000 output tokens.
double cost_of(const std::string& api, const std::string& model, int64_t cached) {
  ab::LlmCall c;
  c.api = api;
  c.provider = "test";
  c.model = model;
  c.input_tokens = 1'000'000;
  c.cache_read_tokens = cached;
  c.output_tokens = 100'000;
  price_call(c, PriceTable::builtin());
  EXPECT_TRUE(c.price_known) << model;
  return c.cost_usd;
}

struct Row {
  const char* model;   // as the provider's response names it
  int64_t cached;      // 200,000 where the row has a cache-hit price, else 0
  double usd;          // (1e6 − cached)·in + cached·cache_read + 1e5·out, per 1M prices
};

}  // namespace

TEST(ProviderPrices, EveryNewRowPricesAKnownUsage) {
  const Row rows[] = {
      // OpenRouter names of Anthropic models (OpenAI wire: no cache-write charge)
      {"anthropic/claude-opus-4.5", 200'000, 6.60},      // .8·5 + .2·.5 + .1·25
      {"anthropic/claude-opus-4.1", 200'000, 19.80},     // .8·15 + .2·1.5 + .1·75
      {"anthropic/claude-sonnet-4.5", 200'000, 3.96},    // .8·3 + .2·.3 + .1·15
      {"anthropic/claude-3.7-sonnet", 200'000, 3.96},
      {"anthropic/claude-3.5-sonnet", 200'000, 3.96},
      {"anthropic/claude-haiku-4.5", 200'000, 1.32},     // .8·1 + .2·.1 + .1·5
      {"anthropic/claude-3.5-haiku", 200'000, 1.056},    // .8·.8 + .2·.08 + .1·4
      // DeepSeek: miss .28, hit .028, out .42
      {"deepseek-chat", 200'000, 0.2716},                // .224 + .0056 + .042
      {"deepseek-reasoner", 200'000, 0.2716},
      // Mistral
      {"mistral-large-2411", 0, 2.60},                   // 2 + .6
      {"mistral-large-2407", 0, 2.60},
      {"mistral-medium-2508", 0, 0.60},                  // .4 + .2
      {"mistral-medium-latest", 0, 0.60},
      {"mistral-small-2506", 0, 0.13},                   // .1 + .03
      {"codestral-2508", 0, 0.39},                       // .3 + .09
      {"magistral-medium-2509", 0, 2.50},                // 2 + .5
      {"magistral-small-2509", 0, 0.65},                 // .5 + .15
      {"ministral-8b-2410", 0, 0.11},
      {"ministral-3b-2410", 0, 0.044},
      {"open-mistral-nemo", 0, 0.165},
      // Groq
      {"llama-3.3-70b-versatile", 0, 0.669},             // .59 + .079
      {"llama-3.1-8b-instant", 0, 0.058},                // .05 + .008
      // Together
      {"meta-llama/Llama-3.3-70B-Instruct-Turbo", 0, 0.968},
      {"meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", 0, 0.198},
      {"meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo", 0, 3.85},
      {"Qwen/Qwen2.5-72B-Instruct-Turbo", 0, 1.32},
      {"deepseek-ai/DeepSeek-V3", 0, 1.375},
      {"deepseek-ai/DeepSeek-R1", 0, 3.70},              // 3 + .7
      // Fireworks
      {"accounts/fireworks/models/llama-v3p3-70b-instruct", 0, 0.99},
      {"accounts/fireworks/models/llama-v3p1-8b-instruct", 0, 0.22},
      {"accounts/fireworks/models/llama-v3p1-405b-instruct", 0, 3.30},
      {"accounts/fireworks/models/deepseek-v3", 0, 0.99},
      {"accounts/fireworks/models/deepseek-r1", 0, 3.80},  // 3 + .8
      // xAI
      {"grok-4-0709", 200'000, 4.05},                    // .8·3 + .2·.75 + .1·15
      {"grok-4-fast-reasoning", 200'000, 0.22},          // .16 + .01 + .05
      {"grok-4-fast-non-reasoning", 200'000, 0.22},
      {"grok-4-1-fast-reasoning", 200'000, 0.22},
      {"grok-code-fast-1", 200'000, 0.314},              // .16 + .004 + .15
      {"grok-3", 200'000, 4.05},
      {"grok-3-mini", 200'000, 0.305},                   // .24 + .015 + .05
  };
  for (const auto& r : rows) EXPECT_NEAR(cost_of("openai", r.model, r.cached), r.usd, 1e-9) << r.model;
}

TEST(ProviderPrices, HostSpecificIdsDoNotBorrowEachOthersPrice) {
  PriceTable t = PriceTable::builtin();
  // Together and Fireworks serve the same weights under their own ids at their own prices.
  EXPECT_DOUBLE_EQ(t.lookup("meta-llama/Llama-3.3-70B-Instruct-Turbo")->input, 0.88);
  EXPECT_DOUBLE_EQ(t.lookup("accounts/fireworks/models/llama-v3p3-70b-instruct")->input, 0.90);
  EXPECT_DOUBLE_EQ(t.lookup("llama-3.3-70b-versatile")->input, 0.59);
  // A bare basename of a host-specific id is not a row.
  EXPECT_FALSE(t.lookup("llama-3.3-70b-instruct-turbo"));
  EXPECT_FALSE(t.lookup("llama-v3p3-70b-instruct"));
  // The longer xAI rows win over grok-4's.
  EXPECT_EQ(t.resolve("grok-4-fast-reasoning"), "grok-4-fast");
  EXPECT_EQ(t.resolve("grok-4-1-fast-non-reasoning"), "grok-4-1-fast");
  EXPECT_EQ(t.resolve("grok-4-latest"), "grok-4");
  // Aliases whose model changed at another price are not guessed.
  EXPECT_FALSE(t.lookup("mistral-large-latest"));
  EXPECT_FALSE(t.lookup("ministral-8b-latest"));
}

TEST(ProviderPrices, DeepSeekCacheHitsAreCachedInput) {
  // The adapter maps prompt_cache_hit_tokens to cache_read_tokens (protocol tests); the
  // 10,000-token prompt below had 9,000 hits and 1,000 misses, 500 output tokens:
  //   1,000 × 0.28e-6 + 9,000 × 0.028e-6 + 500 × 0.42e-6 = 0.00028 + 0.000252 + 0.00021
  ab::LlmCall c;
  c.api = "openai";
  c.provider = "api.deepseek.com";
  c.model = "deepseek-chat";
  c.input_tokens = 10'000;
  c.cache_read_tokens = 9'000;
  c.output_tokens = 500;
  price_call(c, PriceTable::builtin());
  EXPECT_NEAR(c.cost_usd, 0.000742, 1e-12);
}

TEST(ProviderPrices, AnthropicOneHourCacheWritesCostTwiceTheInputPrice) {
  // claude-sonnet-4-5: in 3.00, 5-minute write 3.75 (1.25x), 1-hour write 6.00 (2x), read 0.30,
  // out 15.00. Billed input 100,000 = 10,000 uncached + 30,000 written (20,000 of them with
  // the 1-hour TTL, 10,000 with the 5-minute one) + 60,000 read; 1,000 output.
  //   10,000·3 + 10,000·3.75 + 20,000·6 + 60,000·0.30 + 1,000·15  (per 1M)
  //   = 0.03 + 0.0375 + 0.12 + 0.018 + 0.015 = 0.2205
  ab::LlmCall c;
  c.api = "anthropic";
  c.provider = "anthropic";
  c.model = "claude-sonnet-4-5-20250929";
  c.input_tokens = 100'000;
  c.cache_write_tokens = 30'000;
  c.cache_write_1h_tokens = 20'000;
  c.cache_read_tokens = 60'000;
  c.output_tokens = 1'000;
  price_call(c, PriceTable::builtin());
  EXPECT_NEAR(c.cost_usd, 0.2205, 1e-12);
  // All 5-minute writes: 10,000·3 + 30,000·3.75 + 60,000·0.3 + 1,000·15 = 0.03+0.1125+0.018+0.015
  c.cache_write_1h_tokens = 0;
  price_call(c, PriceTable::builtin());
  EXPECT_NEAR(c.cost_usd, 0.1755, 1e-12);
  // All 1-hour writes: 0.03 + 30,000·6 + 0.018 + 0.015 = 0.243
  c.cache_write_1h_tokens = 30'000;
  price_call(c, PriceTable::builtin());
  EXPECT_NEAR(c.cost_usd, 0.243, 1e-12);
  // More 1-hour writes than writes (a malformed split) are clamped to the writes.
  c.cache_write_1h_tokens = 99'000;
  price_call(c, PriceTable::builtin());
  EXPECT_NEAR(c.cost_usd, 0.243, 1e-12);
}

TEST(ProviderPrices, OneHourWritesUseTheOverriddenInputPrice) {
  TokenUsage u;
  u.input = 1'000'000;
  u.cache_write = 1'000'000;
  u.cache_write_1h = 400'000;
  Price p;
  p.input = 10.0;
  p.output = 0;
  p.cache_write = 12.5;
  // 600,000 · 12.5 + 400,000 · 20  (per 1M) = 7.5 + 8
  EXPECT_NEAR(cost_usd(CostFormula::Anthropic, u, p), 15.5, 1e-9);
  // The OpenAI and Gemini formulas bill no cache writes at all.
  EXPECT_NEAR(cost_usd(CostFormula::OpenAI, u, p), 10.0, 1e-9);
}

TEST(ProviderPrices, BedrockIdsResolveToTheModelsRow) {
  PriceTable t = PriceTable::builtin();
  EXPECT_EQ(t.resolve("anthropic.claude-3-5-haiku-20241022-v1:0"), "claude-3-5-haiku");
  EXPECT_EQ(t.resolve("us.anthropic.claude-sonnet-4-20250514-v1:0"), "claude-sonnet-4");
  EXPECT_EQ(t.resolve("global.anthropic.claude-sonnet-4-5-20250929-v1:0"), "claude-sonnet-4-5");
  EXPECT_EQ(t.resolve("eu.anthropic.claude-3-7-sonnet-20250219-v1:0"), "claude-3-7-sonnet");
  EXPECT_FALSE(t.lookup("anthropic.my-model"));
  EXPECT_FALSE(t.lookup("us.amazon.nova-pro-v1:0"));  // no row: unknown, not guessed
  EXPECT_FALSE(t.lookup("us.claude-3-5-haiku"));     // a geography needs a vendor after it
  EXPECT_EQ(t.resolve("llama3.1:8b"), std::nullopt);  // dots elsewhere are untouched
}

TEST(ProviderPrices, BedrockCallUsesTheAnthropicShape) {
  // A Bedrock Converse call of Claude Sonnet 4: billed input 10,000 = 2,000 uncached + 3,000
  // cache writes + 5,000 reads, 400 output:
  //   2,000·3 + 3,000·3.75 + 5,000·0.30 + 400·15 (per 1M) = 0.006 + 0.01125 + 0.0015 + 0.006
  ab::LlmCall c;
  c.api = "bedrock";
  c.provider = "aws";
  c.model = "us.anthropic.claude-sonnet-4-20250514-v1:0";
  c.input_tokens = 10'000;
  c.cache_write_tokens = 3'000;
  c.cache_read_tokens = 5'000;
  c.output_tokens = 400;
  price_call(c, PriceTable::builtin());
  EXPECT_TRUE(c.price_known);
  EXPECT_NEAR(c.cost_usd, 0.02475, 1e-12);
  EXPECT_EQ(formula_for("bedrock", "aws"), CostFormula::Anthropic);
}

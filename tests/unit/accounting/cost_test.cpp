// Cost formulas per provider, with cache reads and writes, worked by hand.
#include <gtest/gtest.h>

#include "accounting/prices.h"

using namespace ab::accounting;

namespace {

Price P(double in, double out, std::optional<double> cr = std::nullopt, std::optional<double> cw = std::nullopt) {
  Price p;
  p.input = in;
  p.output = out;
  p.cache_read = cr;
  p.cache_write = cw;
  return p;
}

ab::LlmCall call(std::string api, std::string model, int64_t in, int64_t out, int64_t cr = 0, int64_t cw = 0) {
  ab::LlmCall c;
  c.api = api;
  c.provider = api == "gemini" ? "google" : api;
  c.model = std::move(model);
  c.input_tokens = in;
  c.output_tokens = out;
  c.cache_read_tokens = cr;
  c.cache_write_tokens = cw;
  return c;
}

}  // namespace

TEST(Cost, OpenAICachedInputAtCacheReadPrice) {
  // gpt-4o: in 2.50, cached 1.25, out 10.00 per 1M.
  // 10,000 prompt tokens of which 4,000 cached; 1,000 completion tokens (300 reasoning inside).
  //   6,000 × 2.50e-6 = 0.015; 4,000 × 1.25e-6 = 0.005; 1,000 × 10e-6 = 0.010 → 0.030
  auto c = call("openai", "gpt-4o-2024-08-06", 10'000, 1'000, 4'000);
  c.reasoning_tokens = 300;
  price_call(c, PriceTable::builtin());
  EXPECT_TRUE(c.price_known);
  EXPECT_NEAR(c.cost_usd, 0.030, 1e-12);
}

TEST(Cost, AnthropicCacheWritesAndReads) {
  // claude-sonnet-4-5: in 3.00, cache write 3.75, cache read 0.30, out 15.00 per 1M.
  // Billed input 25,000 = 5,000 uncached + 12,000 written + 8,000 read; output 2,000.
  //   5,000 × 3e-6 = 0.015; 12,000 × 3.75e-6 = 0.045; 8,000 × 0.3e-6 = 0.0024; 2,000 × 15e-6 = 0.03
  //   → 0.0924
  auto c = call("anthropic", "claude-sonnet-4-5-20250929", 25'000, 2'000, 8'000, 12'000);
  price_call(c, PriceTable::builtin());
  EXPECT_TRUE(c.price_known);
  EXPECT_NEAR(c.cost_usd, 0.0924, 1e-12);
}

TEST(Cost, GeminiCachedContentAndThoughts) {
  // gemini-2.5-pro: in 1.25, cached 0.125, out 10.00 per 1M.
  // promptTokenCount 100,000 incl. 60,000 cached; candidates 3,000 + thoughts 2,000 = 5,000 out.
  //   40,000 × 1.25e-6 = 0.05; 60,000 × 0.125e-6 = 0.0075; 5,000 × 10e-6 = 0.05 → 0.1075
  auto c = call("gemini", "gemini-2.5-pro", 100'000, 5'000, 60'000);
  price_call(c, PriceTable::builtin());
  EXPECT_NEAR(c.cost_usd, 0.1075, 1e-12);
}

TEST(Cost, FormulasDifferOnlyInCacheWrites) {
  Price p = P(2.0, 8.0, 0.5, 2.5);
  TokenUsage u{1'000'000, 100'000, 200'000, 300'000};
  // OpenAI / Gemini: cache writes are plain input. (1M − 0.2M)·2 + 0.2M·0.5 + 0.1M·8 = 1.6+0.1+0.8
  EXPECT_NEAR(cost_usd(CostFormula::OpenAI, u, p), 2.5, 1e-12);
  EXPECT_NEAR(cost_usd(CostFormula::Gemini, u, p), 2.5, 1e-12);
  // Anthropic: (1M − 0.2M − 0.3M)·2 + 0.3M·2.5 + 0.2M·0.5 + 0.1M·8 = 1.0+0.75+0.1+0.8
  EXPECT_NEAR(cost_usd(CostFormula::Anthropic, u, p), 2.65, 1e-12);
}

TEST(Cost, MissingCachePricesFallBackToInput) {
  Price p = P(4.0, 16.0);
  TokenUsage u{1'000'000, 0, 250'000, 250'000};
  EXPECT_NEAR(cost_usd(CostFormula::Anthropic, u, p), 4.0, 1e-12);
  EXPECT_NEAR(cost_usd(CostFormula::OpenAI, u, p), 4.0, 1e-12);
}

TEST(Cost, MoreCachedThanBilledIsClamped) {
  Price p = P(1.0, 1.0, 0.1, 1.25);
  TokenUsage u{100, 0, 80, 50};  // a confused provider: 130 cached of 100 billed
  EXPECT_NEAR(cost_usd(CostFormula::Anthropic, u, p), (50 * 1.25 + 80 * 0.1) / 1e6, 1e-15);
  TokenUsage neg{-5, -5, 0, 0};
  EXPECT_EQ(cost_usd(CostFormula::OpenAI, neg, p), 0.0);
}

TEST(Cost, FormulaFollowsTheWireFormatThenTheProvider) {
  EXPECT_EQ(formula_for("anthropic", "my-gateway"), CostFormula::Anthropic);
  EXPECT_EQ(formula_for("gemini", "google"), CostFormula::Gemini);
  EXPECT_EQ(formula_for("openai", "openrouter.ai"), CostFormula::OpenAI);
  EXPECT_EQ(formula_for("ollama", "ollama"), CostFormula::OpenAI);
  EXPECT_EQ(formula_for("", "anthropic"), CostFormula::Anthropic);
  EXPECT_EQ(formula_for("", "google"), CostFormula::Gemini);
}

TEST(Cost, UnknownModelCostsZeroAndSaysSo) {
  auto c = call("openai", "my-private-model", 1'000, 1'000);
  c.cost_usd = 123;  // stale value must be overwritten
  price_call(c, PriceTable::builtin());
  EXPECT_FALSE(c.price_known);
  EXPECT_EQ(c.cost_usd, 0.0);
  auto empty = call("openai", "", 1'000, 1'000);
  price_call(empty, PriceTable::builtin());
  EXPECT_FALSE(empty.price_known);
}

TEST(Cost, PolicyOverrideChangesTheCost) {
  PriceTable t = PriceTable::builtin();
  t.override_with({{"gpt-4o-mini", P(1.0, 1.0)}});
  auto c = call("openai", "gpt-4o-mini", 500'000, 500'000, 100'000);
  price_call(c, t);
  EXPECT_NEAR(c.cost_usd, 1.0, 1e-12);  // cache read falls back to the (overridden) input price
}

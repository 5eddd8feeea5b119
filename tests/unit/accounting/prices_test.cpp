// The price table: the built-in rows, model-name matching, overrides.
#include <gtest/gtest.h>

#include "accounting/prices.h"
#include "policy/policy.h"

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
}  // namespace

TEST(PriceTable, BuiltinCoversTheMajorModels) {
  PriceTable t = PriceTable::builtin();
  for (const char* m :
       {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini", "o4-mini", "gpt-5",
        "gpt-5-mini", "gpt-5-nano", "claude-opus-4-1", "claude-opus-4-5", "claude-sonnet-4-5", "claude-sonnet-4",
        "claude-haiku-4-5", "claude-3-5-haiku", "claude-3-7-sonnet", "gemini-2.5-pro", "gemini-2.5-flash",
        "gemini-2.0-flash"}) {
    EXPECT_TRUE(t.lookup(m)) << m;
    EXPECT_EQ(t.resolve(m), m);  // each has its own row
  }
}

TEST(PriceTable, BuiltinListPrices) {
  PriceTable t = PriceTable::builtin();
  auto gpt4o = t.lookup("gpt-4o");
  ASSERT_TRUE(gpt4o);
  EXPECT_DOUBLE_EQ(gpt4o->input, 2.50);
  EXPECT_DOUBLE_EQ(gpt4o->output, 10.00);
  EXPECT_DOUBLE_EQ(*gpt4o->cache_read, 1.25);
  EXPECT_FALSE(gpt4o->cache_write);
  auto sonnet = t.lookup("claude-sonnet-4-5");
  ASSERT_TRUE(sonnet);
  EXPECT_DOUBLE_EQ(sonnet->input, 3.00);
  EXPECT_DOUBLE_EQ(sonnet->output, 15.00);
  EXPECT_DOUBLE_EQ(*sonnet->cache_write, 3.75);
  EXPECT_DOUBLE_EQ(*sonnet->cache_read, 0.30);
  auto flash = t.lookup("gemini-2.5-flash");
  ASSERT_TRUE(flash);
  EXPECT_DOUBLE_EQ(flash->input, 0.30);
  EXPECT_DOUBLE_EQ(flash->output, 2.50);
  // Sanity over the whole table: output never cheaper than input, cache reads never dearer.
  for (const auto& [model, p] : t.rows()) {
    EXPECT_GE(p.output, p.input) << model;
    if (p.cache_read) {
      EXPECT_LE(*p.cache_read, p.input) << model;
    }
    if (p.cache_write) {
      EXPECT_GE(*p.cache_write, p.input) << model;
    }
  }
}

TEST(PriceTable, DatedSnapshotsResolveByLongestPrefix) {
  PriceTable t = PriceTable::builtin();
  EXPECT_EQ(t.resolve("gpt-4o-2024-08-06"), "gpt-4o");
  EXPECT_EQ(t.resolve("gpt-4o-mini-2024-07-18"), "gpt-4o-mini");  // the longer row wins
  EXPECT_EQ(t.resolve("gpt-4.1-nano-2025-04-14"), "gpt-4.1-nano");
  EXPECT_EQ(t.resolve("o3-mini-2025-01-31"), "o3-mini");
  EXPECT_EQ(t.resolve("gpt-5-mini-2025-08-07"), "gpt-5-mini");
  EXPECT_EQ(t.resolve("claude-sonnet-4-5-20250929"), "claude-sonnet-4-5");
  EXPECT_EQ(t.resolve("claude-opus-4-20250514"), "claude-opus-4");  // not claude-opus-4-1
  EXPECT_EQ(t.resolve("claude-opus-4-1-20250805"), "claude-opus-4-1");
  EXPECT_EQ(t.resolve("claude-3-5-haiku-latest"), "claude-3-5-haiku");
  EXPECT_EQ(t.resolve("claude-3-7-sonnet-20250219"), "claude-3-7-sonnet");
  EXPECT_EQ(t.resolve("claude-haiku-4-5-20251001"), "claude-haiku-4-5");
  EXPECT_EQ(t.resolve("claude-sonnet-4-5@20250929"), "claude-sonnet-4-5");  // Vertex AI naming
  EXPECT_EQ(t.resolve("gemini-2.0-flash-001"), "gemini-2.0-flash");
  EXPECT_EQ(t.resolve("gemini-2.5-flash-lite-preview-06-17"), "gemini-2.5-flash-lite");
  EXPECT_EQ(t.resolve("gemini-2.5-flash-preview-05-20"), "gemini-2.5-flash");
}

TEST(PriceTable, ExactRowBeatsPrefix) {
  PriceTable t = PriceTable::builtin();
  EXPECT_EQ(t.resolve("gpt-4o-2024-05-13"), "gpt-4o-2024-05-13");
  EXPECT_DOUBLE_EQ(t.lookup("gpt-4o-2024-05-13")->input, 5.00);
  EXPECT_DOUBLE_EQ(t.lookup("gpt-4o-2024-11-20")->input, 2.50);
}

TEST(PriceTable, NamesAreNormalized) {
  PriceTable t = PriceTable::builtin();
  EXPECT_EQ(t.resolve("GPT-4o"), "gpt-4o");
  EXPECT_EQ(t.resolve("  gpt-4o\n"), "gpt-4o");
  EXPECT_EQ(t.resolve("models/gemini-2.5-pro"), "gemini-2.5-pro");  // Gemini resource names
  EXPECT_EQ(t.resolve("openai/gpt-4o-mini"), "gpt-4o-mini");          // OpenRouter names
  EXPECT_EQ(t.resolve("anthropic/claude-sonnet-4-5-20250929"), "claude-sonnet-4-5");
}

TEST(PriceTable, UnknownAndNearMisses) {
  PriceTable t = PriceTable::builtin();
  EXPECT_FALSE(t.lookup(""));
  EXPECT_FALSE(t.lookup("my-finetune"));
  EXPECT_FALSE(t.lookup("gpt-4ox"));     // a prefix must end at '-', '@' or ':'
  EXPECT_FALSE(t.lookup("gpt-5.2"));     // '.' is not a boundary: another model, not gpt-5
  EXPECT_FALSE(t.lookup("claude"));
  EXPECT_FALSE(t.lookup("models/"));
  EXPECT_EQ(t.resolve("gpt-5.1-2025-11-13"), "gpt-5.1");
}

TEST(PriceTable, OverrideReplacesAndExtends) {
  PriceTable t = PriceTable::builtin();
  size_t before = t.size();
  t.override_with({{"gpt-4o", P(2.0, 8.0)}, {"My-Model", P(1.0, 2.0, 0.5)}});
  EXPECT_EQ(t.size(), before + 1);
  auto g = t.lookup("gpt-4o-2024-08-06");
  ASSERT_TRUE(g);
  EXPECT_DOUBLE_EQ(g->input, 2.0);
  EXPECT_FALSE(g->cache_read);  // the whole row is replaced
  EXPECT_DOUBLE_EQ(t.lookup("my-model")->input, 1.0);  // keys are case-insensitive
  EXPECT_EQ(t.resolve("my-model:7b"), "my-model");
  // The built-in table itself is untouched.
  EXPECT_DOUBLE_EQ(PriceTable::builtin().lookup("gpt-4o")->input, 2.50);
}

TEST(PriceTable, ForPolicyAppliesThePolicyPrices) {
  auto r = ab::policy::load_text(
      "prices:\n  gpt-4o-mini: {input: 0.10, output: 0.40}\n  qwen2.5-coder: {input: 0, output: 0}\n", "p.yaml");
  ASSERT_TRUE(r.ok());
  PriceTable t = PriceTable::for_policy(*r.policy);
  EXPECT_DOUBLE_EQ(t.lookup("gpt-4o-mini")->input, 0.10);
  EXPECT_DOUBLE_EQ(t.lookup("gpt-4o")->input, 2.50);
  auto q = t.lookup("qwen2.5-coder:32b");
  ASSERT_TRUE(q);
  EXPECT_DOUBLE_EQ(q->output, 0.0);
}

TEST(PriceTable, FromYamlReportsErrorsWithLines) {
  std::vector<std::string> errors;
  PriceTable t = PriceTable::from_yaml("models:\n  a: {input: 1, output: 2}\n  b: {input: x, output: 2}\nextra: 1\n",
                                       "prices.yaml", errors);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0], "prices.yaml:4: unknown key 'extra' in a price file (known: models, as_of, currency)");
  EXPECT_EQ(errors[1], "prices.yaml:3: 'input' in models.b must be a number, got 'x'");
  EXPECT_TRUE(t.lookup("a"));
  EXPECT_FALSE(t.lookup("b"));
}

// alerts/call_metrics.h: bounded provider/model labels, the latency histogram, and their
// rendering in /metrics.
#include <gtest/gtest.h>

#include "alerts/call_metrics.h"
#include "alerts/metrics.h"

using namespace ab::alerts;

TEST(ModelLabels, FirstComeKeepTheirLabelLaterOnesFoldToOther) {
  ModelLabels l(2, 3);
  EXPECT_EQ(l.labels("openai", "gpt-4o"), std::make_pair(std::string("openai"), std::string("gpt-4o")));
  EXPECT_EQ(l.labels("openai", "gpt-4o-mini").second, "gpt-4o-mini");
  EXPECT_EQ(l.labels("openai", "o3").second, "o3");
  EXPECT_EQ(l.labels("openai", "o4").second, "other");      // a fourth model: folded
  EXPECT_EQ(l.labels("openai", "gpt-4o").second, "gpt-4o");  // an early one keeps its series
  EXPECT_EQ(l.labels("anthropic", "claude").first, "anthropic");
  EXPECT_EQ(l.labels("google", "gemini"), std::make_pair(std::string("other"), std::string("other")));  // third provider
  EXPECT_EQ(l.labels("", "").first, "other");  // "unknown" is a value too, past the bound here
  EXPECT_EQ(l.folded(), 3u);
}

TEST(ModelLabels, EmptyBecomesUnknownAndLongIsCut) {
  ModelLabels l;
  EXPECT_EQ(l.labels("", ""), std::make_pair(std::string("unknown"), std::string("unknown")));
  std::string longname(300, 'm');
  EXPECT_EQ(l.labels("openai", longname).second.size(), kMaxLabelBytes);
  // a cut never splits a UTF-8 sequence
  std::string utf(99, 'a');
  utf += "\xC3\xA9\xC3\xA9";
  auto cut = l.labels("openai", utf).second;
  EXPECT_EQ(cut.size(), 99u);
}

TEST(ModelLabels, SeriesCountIsBounded) {
  CallMetrics m;
  for (int p = 0; p < 100; p++)
    for (int k = 0; k < 100; k++) {
      std::string provider = "p" + std::to_string(p), model = "m" + std::to_string(k);
      m.add({provider, model, 1, 1, 0, 0, 0.0, 0.1, false});
    }
  // 16 providers × (16 models + other) + (other, other)
  EXPECT_EQ(m.by_model().size(), kMaxProviders * (kMaxModelsPerProvider + 1) + 1);
  uint64_t calls = 0;
  for (const auto& [k, a] : m.by_model()) calls += a.calls;
  EXPECT_EQ(calls, 10000u);  // nothing lost by folding
}

TEST(CallMetrics, HistogramBucketsAreLessOrEqual) {
  CallMetrics m;
  m.add({"openai", "gpt", 10, 5, 3, 2, 0.5, 0.1, false});   // == a bound: that bucket
  m.add({"openai", "gpt", 1, 1, 0, 0, 0.25, 0.3, true});
  m.add({"openai", "gpt", 1, 1, 0, 0, 0.0, 1000, false});  // past the last bound
  m.add({"openai", "gpt", 1, 1, 0, 0, 0.0, -1, true});     // no response: no latency
  const auto& a = m.by_model().at({"openai", "gpt"});
  EXPECT_EQ(a.calls, 4u);
  EXPECT_EQ(a.errors, 2u);
  EXPECT_EQ(a.input_tokens, 13u);
  EXPECT_EQ(a.cache_read_tokens, 3u);
  EXPECT_EQ(a.latency_count, 3u);
  EXPECT_EQ(a.latency_buckets[1], 1u);  // le=0.1
  EXPECT_EQ(a.latency_buckets[3], 1u);  // le=0.5
  EXPECT_EQ(a.latency_over, 1u);
  EXPECT_DOUBLE_EQ(a.latency_sum_s, 1000.4);
}

TEST(CallMetrics, RenderedWithProviderModelHistogramAndBudgetGauges) {
  CallMetrics m;
  m.add({"openai", "gpt-4o", 100, 20, 10, 0, 0.01, 0.2, false});
  MetricsSnapshot s;
  s.models = m.by_model();
  s.budgets.push_back({"team", "cgroup:/agents/a", "tokens", "1m", 120, 1000});
  const std::string t = render_prometheus(s);
  EXPECT_NE(t.find("agentbrake_model_calls_total{provider=\"openai\",model=\"gpt-4o\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("agentbrake_model_tokens_total{provider=\"openai\",model=\"gpt-4o\",type=\"input\"} 100\n"),
            std::string::npos);
  EXPECT_NE(t.find("agentbrake_model_tokens_total{provider=\"openai\",model=\"gpt-4o\",type=\"cache_read\"} 10\n"),
            std::string::npos);
  EXPECT_NE(t.find("agentbrake_model_cost_usd_total{provider=\"openai\",model=\"gpt-4o\"} 0.01\n"), std::string::npos);
  EXPECT_NE(t.find("# TYPE agentbrake_call_duration_seconds histogram\n"), std::string::npos);
  EXPECT_NE(t.find("agentbrake_call_duration_seconds_bucket{provider=\"openai\",model=\"gpt-4o\",le=\"0.1\"} 0\n"),
            std::string::npos);
  EXPECT_NE(t.find("agentbrake_call_duration_seconds_bucket{provider=\"openai\",model=\"gpt-4o\",le=\"0.25\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("agentbrake_call_duration_seconds_bucket{provider=\"openai\",model=\"gpt-4o\",le=\"+Inf\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("agentbrake_call_duration_seconds_count{provider=\"openai\",model=\"gpt-4o\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("agentbrake_budget_level{budget=\"team\",bucket=\"cgroup:/agents/a\",kind=\"tokens\",window=\"1m\"} 120\n"),
            std::string::npos);
  EXPECT_NE(t.find("agentbrake_budget_limit{budget=\"team\",bucket=\"cgroup:/agents/a\",kind=\"tokens\",window=\"1m\"} 1000\n"),
            std::string::npos);
}

TEST(CallMetrics, BudgetGaugesBoundedFullestFirst) {
  MetricsSnapshot s;
  s.max_budget_series = 2;
  s.budgets.push_back({"b", "k1", "tokens", "1m", 10, 100});
  s.budgets.push_back({"b", "k2", "tokens", "1m", 90, 100});
  s.budgets.push_back({"b", "k3", "tokens", "1m", 50, 100});
  const std::string t = render_prometheus(s);
  EXPECT_EQ(t.find("bucket=\"k1\""), std::string::npos);
  EXPECT_NE(t.find("agentbrake_budget_level{budget=\"b\",bucket=\"k2\""), std::string::npos);
  EXPECT_NE(t.find("agentbrake_budget_level{budget=\"b\",bucket=\"k3\""), std::string::npos);
}

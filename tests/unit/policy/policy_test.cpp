// Compiling valid policies: every implemented key of docs/interface.md, defaults, shorthands, to_json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "policy/policy.h"

namespace fs = std::filesystem;
using namespace ab::policy;
using namespace std::chrono_literals;

namespace {

std::string data(const std::string& rel) { return (fs::path(AB_TEST_DATA) / "policy" / rel).string(); }

std::shared_ptr<const Policy> must_load_text(const std::string& yaml) {
  auto r = load_text(yaml, "test.yaml");
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  return r.policy;
}

}  // namespace

TEST(Policy, InterfaceExampleCompilesEveryKey) {
  auto r = load_path(data("good/interface_example.yaml"), false);
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  ASSERT_TRUE(r.ok());
  const Policy& p = *r.policy;

  EXPECT_EQ(p.mode, Mode::Enforce);
  EXPECT_FALSE(p.dry_run());
  EXPECT_EQ(p.retention, Millis(30LL * 24 * 3600 * 1000));
  ASSERT_TRUE(p.metrics);
  EXPECT_EQ(p.metrics->listen, "127.0.0.1:9464");
  EXPECT_EQ(p.metrics->host, "127.0.0.1");
  EXPECT_EQ(p.metrics->port, 9464);
  EXPECT_EQ(p.max_hold, Millis(5min));
  EXPECT_EQ(p.cooldown, Millis(30s));

  ASSERT_EQ(p.endpoints.size(), 1u);
  EXPECT_EQ(p.endpoints[0].host, "127.0.0.1");
  EXPECT_EQ(p.endpoints[0].port, 8443);
  EXPECT_EQ(p.endpoints[0].api, "openai");
  EXPECT_TRUE(p.endpoints[0].tls);
  EXPECT_EQ(p.endpoints[0].where.line, 9);

  ASSERT_EQ(p.prices.count("gpt-4o-mini"), 1u);
  const ModelPrice& mp = p.prices.at("gpt-4o-mini");
  EXPECT_DOUBLE_EQ(mp.input, 0.15);
  EXPECT_DOUBLE_EQ(mp.output, 0.60);
  ASSERT_TRUE(mp.cache_read);
  EXPECT_DOUBLE_EQ(*mp.cache_read, 0.075);
  EXPECT_FALSE(mp.cache_write);

  ASSERT_EQ(p.budgets.size(), 1u);
  const Budget& b = p.budgets[0];
  EXPECT_EQ(b.name, "research");
  EXPECT_EQ(b.where.line, 18);
  ASSERT_TRUE(b.match.cgroup);
  EXPECT_EQ(*b.match.cgroup, "/agents/*");
  EXPECT_FALSE(b.match.unit || b.match.exe || b.match.comm || b.match.uid);
  EXPECT_EQ(b.per, Per::Cgroup);
  EXPECT_EQ(b.action, Action::Throttle);
  EXPECT_EQ(b.max_inflight, 4);
  // Shorthands first (in their fixed order), then limits: in order.
  ASSERT_EQ(b.limits.size(), 7u);
  auto expect_limit = [&](size_t i, LimitKind k, double amount, Millis w, const std::string& origin) {
    SCOPED_TRACE(i);
    EXPECT_EQ(b.limits[i].kind, k);
    EXPECT_DOUBLE_EQ(b.limits[i].amount, amount);
    EXPECT_EQ(b.limits[i].window, w);
    EXPECT_EQ(b.limits[i].origin, origin);
  };
  expect_limit(0, LimitKind::Tokens, 20000, 60s, "tokens_per_minute");
  expect_limit(1, LimitKind::Requests, 60, 60s, "requests_per_minute");
  expect_limit(2, LimitKind::SpendUsd, 5, 1h, "spend_per_hour_usd");
  expect_limit(3, LimitKind::SpendUsd, 50, 24h, "spend_per_day_usd");
  expect_limit(4, LimitKind::Tokens, 500, 10s, "limits[0]");
  expect_limit(5, LimitKind::SpendUsd, 2, 30min, "limits[1]");
  expect_limit(6, LimitKind::Requests, 10, 20s, "limits[2]");
  EXPECT_EQ(b.limits[0].where.line, 21);
  EXPECT_EQ(b.limits[6].where.line, 29);
  EXPECT_EQ(p.find_budget("research"), &p.budgets[0]);
  EXPECT_EQ(p.find_budget("nope"), nullptr);

  EXPECT_TRUE(p.loops.ping_pong.enabled);
  EXPECT_EQ(p.loops.ping_pong.max_round_trips, 10);
  EXPECT_EQ(p.loops.ping_pong.window, Millis(10min));
  EXPECT_EQ(p.loops.ping_pong.action, Action::Kill);
  EXPECT_EQ(p.loops.ping_pong.per, Per::Tree);
  EXPECT_TRUE(p.loops.ping_pong.match.empty());
  EXPECT_TRUE(p.loops.repetition.enabled);
  EXPECT_EQ(p.loops.repetition.max_repeats, 6);
  EXPECT_EQ(p.loops.repetition.window, Millis(5min));
  EXPECT_EQ(p.loops.repetition.hamming, 3);  // default
  EXPECT_EQ(p.loops.repetition.action, Action::Throttle);
  EXPECT_TRUE(p.loops.fan_out.enabled);
  EXPECT_EQ(p.loops.fan_out.max_concurrent, 16);
  EXPECT_EQ(p.loops.fan_out.action, Action::Throttle);
  EXPECT_TRUE(p.loops.retry_storm.enabled);
  EXPECT_EQ(p.loops.retry_storm.max_errors, 20);
  EXPECT_EQ(p.loops.retry_storm.window, Millis(1min));

  EXPECT_FALSE(p.pacing.enabled);

  ASSERT_EQ(p.alerts.size(), 2u);
  EXPECT_EQ(p.alerts[0].name, "alerts[0]");
  EXPECT_EQ(p.alerts[0].webhook, "https://hooks.example.com/T000/B000");
  EXPECT_TRUE(p.alerts[0].exec.empty());
  EXPECT_EQ(p.alerts[0].on, (std::vector<std::string>{"budget_exceeded", "loop_detected", "killed"}));
  EXPECT_EQ(p.alerts[0].min_interval, Millis(5min));
  EXPECT_EQ(p.alerts[1].exec, "/usr/local/bin/page-oncall");
  EXPECT_EQ(p.alerts[1].on, (std::vector<std::string>{"killed"}));
  EXPECT_EQ(p.alerts[1].min_interval, Millis(1min));  // default

  EXPECT_EQ(p.source, data("good/interface_example.yaml"));
  EXPECT_EQ(p.files, (std::vector<std::string>{data("good/interface_example.yaml")}));
  EXPECT_EQ(p.digest.size(), 16u);
}

TEST(Policy, EmptyDocumentIsEveryDefault) {
  auto p = must_load_text("# nothing but a comment\n");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, Mode::Enforce);
  EXPECT_EQ(p->retention, Millis(30LL * 24 * 3600 * 1000));
  EXPECT_EQ(p->max_hold, Millis(5min));
  EXPECT_EQ(p->cooldown, Millis(30s));
  EXPECT_FALSE(p->metrics);
  EXPECT_TRUE(p->endpoints.empty());
  EXPECT_TRUE(p->budgets.empty());
  EXPECT_FALSE(p->loops.ping_pong.enabled);
  EXPECT_FALSE(p->loops.repetition.enabled);
  EXPECT_FALSE(p->loops.fan_out.enabled);
  EXPECT_FALSE(p->loops.retry_storm.enabled);
  EXPECT_FALSE(p->pacing.enabled);
  EXPECT_TRUE(p->alerts.empty());
}

TEST(Policy, EachShorthandCompilesToTheSameLimitAsTheGeneralForm) {
  struct Case {
    const char* shorthand;
    const char* general;
  };
  const Case cases[] = {
      {"tokens_per_minute: 1200", "{tokens: 1200, window: 1m}"},
      {"requests_per_minute: 30", "{requests: 30, window: 60s}"},
      {"spend_per_hour_usd: 2.5", "{spend_usd: 2.5, window: 1h}"},
      {"spend_per_day_usd: 40", "{spend_usd: 40, window: 24h}"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.shorthand);
    auto a = must_load_text(std::string("budgets:\n  - name: b\n    ") + c.shorthand + "\n");
    auto b = must_load_text(std::string("budgets:\n  - name: b\n    limits: [") + c.general + "]\n");
    ASSERT_TRUE(a && b);
    ASSERT_EQ(a->budgets[0].limits.size(), 1u);
    ASSERT_EQ(b->budgets[0].limits.size(), 1u);
    const Limit& la = a->budgets[0].limits[0];
    const Limit& lb = b->budgets[0].limits[0];
    EXPECT_EQ(la.kind, lb.kind);
    EXPECT_DOUBLE_EQ(la.amount, lb.amount);
    EXPECT_EQ(la.window, lb.window);
    // The compiled policies are the same policy.
    EXPECT_EQ(to_json(*a), to_json(*b));
    EXPECT_EQ(a->digest, b->digest);
  }
}

TEST(Policy, BudgetDefaultsAndMaxInflightAlone) {
  auto p = must_load_text("budgets:\n  - name: conc\n    max_inflight: 2\n");
  ASSERT_TRUE(p);
  const Budget& b = p->budgets[0];
  EXPECT_EQ(b.per, Per::Cgroup);
  EXPECT_EQ(b.action, Action::Throttle);
  EXPECT_TRUE(b.match.empty());
  EXPECT_TRUE(b.limits.empty());
  EXPECT_EQ(b.max_inflight, 2);
}

TEST(Policy, MatchFieldsAndPerAndActions) {
  auto p = must_load_text(R"(
budgets:
  - name: a
    match: {cgroup: "/agents/**", unit: "agent@*.service", exe: "/usr/bin/python3*", comm: "node", uid: 1000}
    per: tree
    action: deny
    tokens_per_minute: 5
  - name: b
    per: process
    action: kill
    tokens_per_minute: 5
  - name: c
    action: alert
    tokens_per_minute: 5
)");
  ASSERT_TRUE(p);
  const Match& m = p->budgets[0].match;
  EXPECT_EQ(*m.cgroup, "/agents/**");
  EXPECT_EQ(*m.unit, "agent@*.service");
  EXPECT_EQ(*m.exe, "/usr/bin/python3*");
  EXPECT_EQ(*m.comm, "node");
  EXPECT_EQ(*m.uid, 1000u);
  EXPECT_EQ(p->budgets[0].per, Per::Tree);
  EXPECT_EQ(p->budgets[0].action, Action::Deny);
  EXPECT_EQ(p->budgets[1].per, Per::Process);
  EXPECT_EQ(p->budgets[1].action, Action::Kill);
  EXPECT_EQ(p->budgets[2].action, Action::Alert);
  EXPECT_FALSE(gates(Action::Alert));
  EXPECT_TRUE(gates(Action::Throttle));
  EXPECT_TRUE(gates(Action::Deny));
  EXPECT_TRUE(gates(Action::Kill));
}

TEST(Policy, LoopsCarryPerMatchEnabledAndDefaults) {
  auto p = must_load_text(R"(
loops:
  ping_pong: {action: throttle}
  repetition: {max_repeats: 4, hamming: 0, per: cgroup, match: {cgroup: "/agents/*"}}
  fan_out: {max_concurrent: 3, enabled: false}
  retry_storm: {max_errors: 5, window: 30s, per: process, action: deny}
)");
  ASSERT_TRUE(p);
  const Loops& l = p->loops;
  EXPECT_TRUE(l.ping_pong.enabled);
  EXPECT_EQ(l.ping_pong.max_round_trips, 10);  // default
  EXPECT_EQ(l.ping_pong.window, Millis(10min));
  EXPECT_EQ(l.ping_pong.action, Action::Throttle);
  EXPECT_EQ(l.repetition.max_repeats, 4);
  EXPECT_EQ(l.repetition.hamming, 0);
  EXPECT_EQ(l.repetition.per, Per::Cgroup);
  EXPECT_EQ(*l.repetition.match.cgroup, "/agents/*");
  EXPECT_EQ(l.repetition.action, Action::Alert);  // default
  EXPECT_FALSE(l.fan_out.enabled);
  EXPECT_EQ(l.fan_out.max_concurrent, 3);
  EXPECT_EQ(l.retry_storm.per, Per::Process);
  EXPECT_EQ(l.retry_storm.window, Millis(30s));
  EXPECT_EQ(l.retry_storm.action, Action::Deny);
}

TEST(Policy, ObserveModePacingMetricsIpv6EndpointsAndAlertDefaults) {
  auto p = must_load_text(R"(
mode: observe
pacing: {enabled: true}
metrics: {listen: "[::1]:9464"}
endpoints:
  - {host: LLM.Internal, port: 8000, api: openai, tls: false}
  - {host: "[fd00::1]", port: 443, api: anthropic}
  - {host: llm.internal, port: 8000, api: openai, tls: false}
alerts:
  - {name: hook, webhook: "http://10.0.0.1:8080/alert", on: budget_exceeded, min_interval: 0s}
  - {exec: /bin/true}
)");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, Mode::Observe);
  EXPECT_TRUE(p->dry_run());
  EXPECT_TRUE(p->pacing.enabled);
  EXPECT_EQ(p->metrics->host, "::1");
  EXPECT_EQ(p->metrics->port, 9464);
  // Host names are case-insensitive; an identical re-declaration is folded into one.
  ASSERT_EQ(p->endpoints.size(), 2u);
  EXPECT_EQ(p->endpoints[0].host, "llm.internal");
  EXPECT_FALSE(p->endpoints[0].tls);
  EXPECT_EQ(p->endpoints[1].host, "fd00::1");
  EXPECT_EQ(p->endpoints[1].api, "anthropic");
  EXPECT_TRUE(p->endpoints[1].tls);  // default
  EXPECT_EQ(p->alerts[0].name, "hook");
  EXPECT_EQ(p->alerts[0].on, (std::vector<std::string>{"budget_exceeded"}));  // a single kind
  EXPECT_EQ(p->alerts[0].min_interval, Millis(0));
  EXPECT_EQ(p->alerts[1].name, "alerts[1]");
  EXPECT_EQ(p->alerts[1].on, (std::vector<std::string>{"budget_exceeded", "loop_detected", "denied", "killed"}));
}

TEST(Policy, ConflictingEndpointRedeclarationIsAnError) {
  auto r = load_text("endpoints:\n  - {host: a, port: 1, api: openai}\n  - {host: a, port: 1, api: anthropic}\n", "e.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], "e.yaml:3: endpoint a:1 is declared again with different settings (first at e.yaml:2)");
}

TEST(Policy, EndpointHostPatterns) {
  auto r = load_text("endpoints:\n  - {host: \"*.LLM.example.com\", port: 443, api: openai}\n"
                     "  - {host: \"gw-*.example.com\", port: 8443, api: anthropic}\n", "e.yaml");
  ASSERT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0]);
  ASSERT_EQ(r.policy->endpoints.size(), 2u);
  EXPECT_EQ(r.policy->endpoints[0].host, "*.llm.example.com");
  EXPECT_EQ(r.policy->endpoints[1].host, "gw-*.example.com");
  // '*' must leave a domain of at least two labels after it, and only name characters.
  for (const char* bad : {"\"*\"", "\"*.com\"", "\"a.*\"", "\"*.example.*\"", "\"**.example.com\"",
                          "\"*_x.example.com\"", "\"[*].example.com\""}) {
    SCOPED_TRACE(bad);
    auto b = load_text(std::string("endpoints:\n  - {host: ") + bad + ", port: 443, api: openai}\n", "b.yaml");
    ASSERT_EQ(b.errors.size(), 1u);
    EXPECT_NE(b.errors[0].find("'*' stands for part of one DNS label"), std::string::npos) << b.errors[0];
  }
}

TEST(Policy, ToJsonIsAPolicyThatLoadsBackToTheSamePolicy) {
  auto r = load_path(data("good/interface_example.yaml"), false);
  ASSERT_TRUE(r.ok());
  nlohmann::json j = to_json(*r.policy);
  EXPECT_EQ(j["mode"], "enforce");
  EXPECT_EQ(j["retention"], "30d");
  EXPECT_EQ(j["max_hold"], "5m");
  EXPECT_EQ(j["metrics"]["listen"], "127.0.0.1:9464");
  EXPECT_EQ(j["budgets"][0]["name"], "research");
  EXPECT_EQ(j["budgets"][0]["limits"][0], (nlohmann::json{{"tokens", 20000}, {"window", "1m"}}));
  EXPECT_EQ(j["budgets"][0]["limits"][2], (nlohmann::json{{"spend_usd", 5.0}, {"window", "1h"}}));
  EXPECT_EQ(j["budgets"][0]["max_inflight"], 4);
  EXPECT_EQ(j["loops"]["ping_pong"]["action"], "kill");
  EXPECT_EQ(j["alerts"][1]["exec"], "/usr/local/bin/page-oncall");

  // JSON is YAML: `policy show` output is itself a valid policy, the same one.
  auto back = load_text(j.dump(2), "shown.json");
  for (const auto& e : back.errors) ADD_FAILURE() << e;
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(to_json(*back.policy), j);
  EXPECT_EQ(back.policy->digest, r.policy->digest);
}

TEST(Policy, DigestChangesWithThePolicy) {
  auto a = must_load_text("budgets: [{name: x, tokens_per_minute: 100}]\n");
  auto b = must_load_text("budgets: [{name: x, tokens_per_minute: 101}]\n");
  auto c = must_load_text("# same policy, other layout\nbudgets:\n  - name: x\n    tokens_per_minute: 100\n");
  ASSERT_TRUE(a && b && c);
  EXPECT_NE(a->digest, b->digest);
  EXPECT_EQ(a->digest, c->digest);
}

TEST(Policy, EnumNamesRoundTrip) {
  for (Action a : {Action::Alert, Action::Throttle, Action::Deny, Action::Kill})
    EXPECT_EQ(parse_action(to_string(a)), a);
  for (Per p : {Per::Cgroup, Per::Tree, Per::Process}) EXPECT_EQ(parse_per(to_string(p)), p);
  for (Mode m : {Mode::Enforce, Mode::Observe}) EXPECT_EQ(parse_mode(to_string(m)), m);
  EXPECT_EQ(to_string(LimitKind::SpendUsd), "spend_usd");
  EXPECT_FALSE(parse_action("Throttle"));
  EXPECT_LT(Action::Alert, Action::Kill);
}

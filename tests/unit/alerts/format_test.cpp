#include <gtest/gtest.h>

#include <algorithm>

#include "alerts/format.h"

using namespace ab::alerts;

TEST(EntityOf, FallsBackFromEntityToCgroupToPid) {
  AlertEvent e;
  e.kind = "killed";
  EXPECT_EQ(entity_of(e), "killed");
  e.pid = 42;
  EXPECT_EQ(entity_of(e), "pid:42");
  e.cgroup = "/agents/a";
  EXPECT_EQ(entity_of(e), "cgroup:/agents/a");
  e.entity = "tree:42";
  EXPECT_EQ(entity_of(e), "tree:42");
}

TEST(Summarize, BudgetExceeded) {
  AlertEvent e{"budget_exceeded", "/agents/a", 4242, "python3", "", nlohmann::json::object(), 0};
  e.detail = {{"budget", "research"}, {"bucket", "cgroup:/agents/a"}, {"limit", 2}, {"level", 2.31},
              {"window", "30m"}, {"action", "throttle"}};
  EXPECT_EQ(summarize(e), "budget 'research' exceeded by cgroup:/agents/a: limit 2 per 30m, level 2.31, action throttle");
}

TEST(Summarize, KilledAndLoopAndFallback) {
  AlertEvent k{"killed", "/agents/a", 4242, "python3", "", {{"reason", "loop"}, {"dry_run", true}}, 0};
  EXPECT_EQ(summarize(k), "killed /agents/a pid 4242 (python3): reason loop (dry run: nothing enforced)");

  AlertEvent l{"loop_detected", "/agents/b", 7, "node", "",
               {{"detector", "ping_pong"}, {"members", nlohmann::json::array({{{"pid", 7}}, {{"pid", 8}}})},
                {"action", "kill"}},
               0};
  EXPECT_EQ(summarize(l), "loop detected (ping_pong) in /agents/b pid 7 (node) and 1 other process(es), action kill");

  AlertEvent p{"probe_failed", "", 9, "curl", "", {{"error", "no symbol"}}, 0};
  EXPECT_EQ(summarize(p), "probe_failed: pid 9 (curl): no symbol");
}

TEST(Summarize, IsOneBoundedLine) {
  AlertEvent e{"killed", "/agents/evil\nname", 1, "x\ty", "", {{"reason", std::string(1000, 'r')}}, 0};
  std::string s = summarize(e);
  EXPECT_EQ(s.find('\n'), std::string::npos);
  EXPECT_EQ(s.find('\t'), std::string::npos);
  EXPECT_LE(s.size(), 400u);
}

TEST(WebhookBody, SlackTextPlusStructuredFields) {
  AlertEvent e{"killed", "/agents/a", 4242, "python3", "cgroup:/agents/a", {{"reason", "budget"}},
               1'700'000'000'250'000'000};
  nlohmann::json b = webhook_body("oncall", e, "box1");
  ASSERT_TRUE(b["text"].is_string());
  EXPECT_EQ(b["text"], "[agentbrake@box1] killed /agents/a pid 4242 (python3): reason budget");
  EXPECT_EQ(b["agentbrake"]["kind"], "killed");
  EXPECT_EQ(b["agentbrake"]["rule"], "oncall");
  EXPECT_EQ(b["agentbrake"]["pid"], 4242);
  EXPECT_EQ(b["agentbrake"]["cgroup"], "/agents/a");
  EXPECT_EQ(b["agentbrake"]["detail"]["reason"], "budget");
  EXPECT_EQ(b["agentbrake"]["ts"], "2023-11-14T22:13:20.250Z");
}

TEST(ExecEnvironment, CarriesTheEventAndNothingElse) {
  AlertEvent e{"killed", "/agents/a", 4242, "python3", "", {{"reason", "budget"}}, 0};
  auto env = exec_environment("page", e, "box1");
  auto has = [&](const std::string& kv) { return std::find(env.begin(), env.end(), kv) != env.end(); };
  EXPECT_TRUE(has("AGENTBRAKE_KIND=killed"));
  EXPECT_TRUE(has("AGENTBRAKE_CGROUP=/agents/a"));
  EXPECT_TRUE(has("AGENTBRAKE_PID=4242"));
  EXPECT_TRUE(has("AGENTBRAKE_COMM=python3"));
  EXPECT_TRUE(has("AGENTBRAKE_RULE=page"));
  EXPECT_TRUE(has(R"(AGENTBRAKE_DETAIL={"reason":"budget"})"));
  EXPECT_TRUE(has("AGENTBRAKE_SUMMARY=killed /agents/a pid 4242 (python3): reason budget"));
  for (const auto& kv : env) EXPECT_TRUE(kv.rfind("AGENTBRAKE_", 0) == 0 || kv.rfind("PATH=", 0) == 0) << kv;
}

#include "cli/format.h"

#include <gtest/gtest.h>

using namespace ab::cli;
using json = nlohmann::json;

namespace {
bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }
}  // namespace

TEST(Format, Numbers) {
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1000), "1,000");
  EXPECT_EQ(format_count(1234567), "1,234,567");
  EXPECT_EQ(format_count(-1234), "-1,234");
  EXPECT_EQ(format_rate(12), "12");
  EXPECT_EQ(format_rate(1520), "1.5k");
  EXPECT_EQ(format_rate(2'500'000), "2.5M");
  EXPECT_EQ(format_scalar(json("a b")), "\"a b\"");
  EXPECT_EQ(format_scalar(json("ab")), "ab");
  EXPECT_EQ(format_scalar(json(nullptr)), "-");
  EXPECT_EQ(format_scalar(json::array({1, 2})), "[1,2]");
}

TEST(Format, TableAlignsColumns) {
  std::string t = render_table({"NAME", "N"}, {{"a", "1"}, {"longer", "123"}}, {1}, {{"TOTAL", "124"}});
  EXPECT_EQ(t,
            "NAME      N\n"
            "a         1\n"
            "longer  123\n"
            "-----------\n"
            "TOTAL   124\n");
  // UTF-8 counts as one column per code point
  std::string u = render_table({"K", "V"}, {{"é", "1"}, {"ab", "2"}});
  EXPECT_EQ(u, "K   V\né   1\nab  2\n");
}

TEST(Format, StatusShowsEveryCounter) {
  json s = {{"version", "0.1.0"},
            {"uptime_s", 3725},
            {"policy", {{"source", "/etc/agentbrake/policy.d"}, {"mode", "enforce"}}},
            {"probes_attached", 12},
            {"watched_processes", 5},
            {"held", json::array({{{"target", "/agents/a"}}})},
            {"denied", 0},
            {"something_new", "x"},
            {"counters",
             {{"ringbuf_lost", 7}, {"truncated_captures", 3}, {"unparsed_responses", 1}, {"alerts_dropped", 2},
              {"per_probe", {{"tls", 4}}}}}};
  std::string out = format_status(s);
  EXPECT_TRUE(contains(out, "agentbraked 0.1.0, up 1h 2m")) << out;
  EXPECT_TRUE(contains(out, "/etc/agentbrake/policy.d (mode=enforce)")) << out;
  EXPECT_TRUE(contains(out, "probes attached:   12")) << out;
  EXPECT_TRUE(contains(out, "watched processes: 5")) << out;
  EXPECT_TRUE(contains(out, "held now:          1 (/agents/a)")) << out;
  EXPECT_TRUE(contains(out, "something_new")) << out;  // unknown fields are not hidden
  for (const char* c : {"ringbuf_lost", "truncated_captures", "unparsed_responses", "alerts_dropped", "per_probe.tls"})
    EXPECT_TRUE(contains(out, c)) << c << "\n" << out;
  EXPECT_TRUE(contains(out, "ringbuf_lost        7")) << out;
}

TEST(Format, AgentsTable) {
  EXPECT_EQ(format_agents(json::array()), "no agents tracked\n");
  json a = json::array({{{"cgroup", "/agents/a"},
                         {"tree_root_pid", 4242},
                         {"pids", {4242, 4243, 4244, 4245, 4246}},
                         {"comm", "python3"},
                         {"provider", "openai"},
                         {"model", "gpt-4o-mini"},
                         {"calls", 12},
                         {"input_tokens", 5400},
                         {"output_tokens", 880},
                         {"cost_usd", 0.0123},
                         {"tokens_per_min", 1520},
                         {"state", "held"},
                         {"reason", "budget"}}});
  std::string out = format_agents(a);
  EXPECT_TRUE(contains(out, "CGROUP")) << out;
  EXPECT_TRUE(contains(out, "/agents/a")) << out;
  EXPECT_TRUE(contains(out, "4242,4243,4244,+2")) << out;
  EXPECT_TRUE(contains(out, "5,400")) << out;
  EXPECT_TRUE(contains(out, "$0.0123")) << out;
  EXPECT_TRUE(contains(out, "held (budget)")) << out;
}

TEST(Format, UsageTableWithTotals) {
  json u = {{"by", "model"},
            {"since", "2026-11-29T10:00:00Z"},
            {"until", "2026-11-29T11:00:00Z"},
            {"rows",
             {{{"key", "gpt-4o"}, {"calls", 2}, {"input_tokens", 1000}, {"output_tokens", 10}, {"cache_read_tokens", 5},
               {"cache_write_tokens", 0}, {"cost_usd", 1.5}, {"estimated_calls", 1}},
              {{"key", ""}, {"calls", 1}, {"input_tokens", 1}, {"output_tokens", 1}, {"cache_read_tokens", 0},
               {"cache_write_tokens", 0}, {"cost_usd", 0}, {"estimated_calls", 0}}}}};
  std::string out = format_usage(u);
  EXPECT_TRUE(contains(out, "by model from 2026-11-29T10:00:00Z to 2026-11-29T11:00:00Z")) << out;
  EXPECT_TRUE(contains(out, "MODEL")) << out;
  EXPECT_TRUE(contains(out, "(unknown)")) << out;
  EXPECT_TRUE(contains(out, "TOTAL")) << out;
  EXPECT_TRUE(contains(out, "1,001")) << out;  // total input
  EXPECT_TRUE(contains(out, "$1.50")) << out;
  u["rows"] = json::array();
  EXPECT_TRUE(contains(format_usage(u), "no LLM calls")) << format_usage(u);
}

TEST(Format, EventLines) {
  json e = {{"ts", "2026-11-29T10:00:01.250Z"},
            {"kind", "llm_call"},
            {"cgroup", "/agents/a"},
            {"pid", 4242},
            {"comm", "python3"},
            {"detail",
             {{"provider", "openai"}, {"model", "gpt-4o-mini"}, {"status", 429}, {"input_tokens", 10},
              {"output_tokens", 0}, {"cost_usd", 0.0}, {"latency_ms", 12.4}, {"complete", true},
              {"estimated", false}, {"error_type", "rate_limit_error"}, {"retry_after_s", 2}}}};
  std::string line = format_event(e);
  EXPECT_EQ(line.rfind("2026-11-29T10:00:01.250Z  llm_call", 0), 0u) << line;
  EXPECT_TRUE(contains(line, "/agents/a  4242 python3")) << line;
  EXPECT_TRUE(contains(line, "openai gpt-4o-mini 429 in=10 out=0")) << line;
  EXPECT_TRUE(contains(line, "error=rate_limit_error retry_after=2s")) << line;
  EXPECT_FALSE(contains(line, "\n"));
  json k = {{"ts", "2026-11-29T10:00:02.000Z"}, {"kind", "killed"}, {"cgroup", "/agents/b"}, {"pid", 7},
            {"comm", "node"}, {"detail", {{"target", "/agents/b"}, {"reason", "loop"}, {"dry_run", true}}}};
  std::string kl = format_event(k);
  EXPECT_TRUE(contains(kl, "target=/agents/b")) << kl;
  EXPECT_TRUE(contains(kl, "reason=loop")) << kl;
  EXPECT_TRUE(contains(kl, "dry_run=true")) << kl;
}

TEST(Format, Action) {
  EXPECT_EQ(format_action("pause", "/agents/a", json::object()), "paused /agents/a\n");
  EXPECT_EQ(format_action("kill", "42", {{"pids", {42}}}), "killed 42 (1 process)\n");
  EXPECT_EQ(format_action("resume", "/a", {{"dry_run", true}}), "resumed /a (dry run: recorded, not enforced)\n");
  EXPECT_EQ(format_action("pause", "/a", {{"message", "already held"}}), "already held\n");
}

TEST(Target, AcceptsAndNormalizes) {
  std::string e;
  EXPECT_EQ(normalize_target("/agents/research", e), "/agents/research");
  EXPECT_EQ(normalize_target("/agents//research/", e), "/agents/research");
  EXPECT_EQ(normalize_target("/system.slice/agent@1.service", e), "/system.slice/agent@1.service");
  EXPECT_EQ(normalize_target("4242", e), "4242");
  EXPECT_EQ(normalize_target("004242", e), "4242");
}

TEST(Target, RejectsBadInput) {
  for (const char* bad : {"", "/", "//", "abc", "agents/a", "-1", "0", "1", "99999999999", "4194305", "/a/../b",
                          "/a/./b", "12a", "/a\nb", " 42"}) {
    std::string e;
    EXPECT_FALSE(normalize_target(bad, e).has_value()) << bad;
    EXPECT_FALSE(e.empty()) << bad;
  }
  std::string e;
  normalize_target("abc", e);
  EXPECT_TRUE(contains(e, "'abc'")) << e;
}

TEST(Top, SortsByMeasuredCostRate) {
  TopModel m;
  auto agents = [](double cost_a, double cost_b) {
    return json::array({{{"cgroup", "/a"}, {"tree_root_pid", 1}, {"cost_usd", cost_a}, {"tokens_per_min", 100}},
                        {{"cgroup", "/b"}, {"tree_root_pid", 2}, {"cost_usd", cost_b}, {"tokens_per_min", 5}}});
  };
  m.update(agents(10, 1), 100.0);
  ASSERT_EQ(m.rows().size(), 2u);
  EXPECT_EQ(m.rows()[0].cgroup, "/a");  // no rate yet: token rate decides
  m.update(agents(10, 2), 101.0);       // /b spends $1 in a second
  EXPECT_EQ(m.rows()[0].cgroup, "/b");
  EXPECT_NEAR(m.rows()[0].cost_per_hour, 3600, 1e-6);
  EXPECT_EQ(m.rows()[1].cost_per_hour, 0);
  // an agent that disappears is dropped; the daemon's own rate wins when given
  json one = json::array({{{"cgroup", "/c"}, {"cost_usd", 1}, {"cost_per_hour", 7.5}}});
  m.update(one, 102.0);
  ASSERT_EQ(m.rows().size(), 1u);
  EXPECT_EQ(m.rows()[0].cost_per_hour, 7.5);
}

TEST(Top, RenderFitsTheScreen) {
  std::vector<TopRow> rows(50);
  for (size_t i = 0; i < rows.size(); ++i) rows[i].cgroup = "/agents/agent-with-a-long-name-" + std::to_string(i);
  std::string s = render_top(rows, "agentbrake top", 60, 10);
  size_t lines = 0, start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    std::string line = s.substr(start, nl - start);
    size_t w = 0;
    for (unsigned char c : line)
      if ((c & 0xC0) != 0x80) ++w;
    EXPECT_LE(w, 60u) << line;
    ++lines;
    start = nl + 1;
  }
  EXPECT_LE(lines, 10u);
  EXPECT_TRUE(contains(s, "more")) << s;
  EXPECT_TRUE(contains(render_top({}, "t", 80, 24), "no agents")) << render_top({}, "t", 80, 24);
}

TEST(Top, TrendShowsEachAgentsRecentSpendRate) {
  TopModel m;
  double cost = 0;
  for (int i = 0; i < 20; ++i) {
    cost += i < 10 ? 0.0 : 1.0;  // idle, then spending $1 per refresh
    m.update(json::array({{{"cgroup", "/a"}, {"tree_root_pid", 1}, {"cost_usd", cost}}}), 100.0 + i);
  }
  ASSERT_EQ(m.rows().size(), 1u);
  const std::string& t = m.rows()[0].trend;
  ASSERT_EQ(t.size(), kTrendLen);          // only the last kTrendLen refreshes are kept
  EXPECT_EQ(t.substr(0, 5), "     ");       // the idle refreshes
  EXPECT_EQ(t.substr(t.size() - 3), "@@@"); // the steady runaway at the top level
  EXPECT_TRUE(contains(render_top(m.rows(), "t", 200, 10), "[" + t + "]"));
  EXPECT_EQ(spark({0, 1, 2, 4}), " -+@");
  EXPECT_EQ(spark({}), "");
}

// Harden L1: names an agent chooses cannot drive the terminal (ESC, CSI, BEL, newline).
TEST(Format, ControlCharactersInNamesAreEscaped) {
  json a = json::array({{{"cgroup", "/evil\x1b]0;owned\x07"}, {"comm", "x\x1b[2J\ry"}, {"model", "gpt\xc2\x9b" "31m"},
                         {"calls", 1}, {"pids", json::array({1})}}});
  for (const std::string& out : {format_agents(a),
                                 format_event({{"ts", "t"}, {"kind", "llm_call"}, {"cgroup", "/a\x1b[1m"}, {"pid", 5},
                                               {"comm", "c\nd"}, {"detail", {{"model", "m\x1b"}}}})}) {
    EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
    EXPECT_EQ(out.find('\x07'), std::string::npos) << out;
    EXPECT_EQ(out.find('\r'), std::string::npos) << out;
    EXPECT_EQ(out.find("\xc2\x9b"), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), out.rfind('\n') == std::string::npos ? 0 : std::count(out.begin(), out.end(), '\n'));
  }
  EXPECT_NE(format_agents(a).find("x\\x1b[2J\\x0dy"), std::string::npos) << format_agents(a);
  EXPECT_EQ(terminal_safe("plain /a/b é"), "plain /a/b é");
  EXPECT_EQ(terminal_safe("a\nb"), "a\\x0ab");
  // event lines stay one line
  std::string ev = format_event({{"ts", "t"}, {"kind", "x"}, {"cgroup", "/a"}, {"pid", 5}, {"comm", "c\nd"}});
  EXPECT_EQ(ev.find('\n'), std::string::npos) << ev;
}

// Black-box tests of `agentbrake report --html FILE [--since DUR]` against a database written
// by the real Store: the page is self-contained, well-formed enough, shows one chart series
// per cgroup, the agents and the brake events, and escapes everything that came from the DB.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "../control/cli_runner.h"
#include "store/store.h"
#include "store/timefmt.h"

using namespace ab::store;
using ab::testing::run_cli;
namespace fs = std::filesystem;

namespace {

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Checks that the tags of the page nest properly (void elements and self-closing SVG elements
// aside). Returns "" when they do, otherwise a description of the first problem.
std::string check_nesting(const std::string& html) {
  static const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link"};
  std::vector<std::string> stack;
  std::regex tag(R"(<(/?)([a-zA-Z][a-zA-Z0-9]*)([^<>]*?)(/?)>)");
  size_t body_start = html.find("<html");
  if (body_start == std::string::npos) return "no <html>";
  std::string s = html.substr(body_start);
  // the stylesheet holds no tags, but skip it anyway
  size_t st = s.find("<style>"), se = s.find("</style>");
  if (st != std::string::npos && se != std::string::npos) s.erase(st + 7, se - st - 7);
  for (auto it = std::sregex_iterator(s.begin(), s.end(), tag); it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    std::string name = m[2];
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    if (m[1] == "/") {
      if (stack.empty() || stack.back() != name)
        return "unexpected </" + name + "> (open: " + (stack.empty() ? "none" : stack.back()) + ")";
      stack.pop_back();
    } else if (m[4] != "/" && !kVoid.count(name)) {
      stack.push_back(name);
    }
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  return "";
}

class ReportHtml : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP() << "agentbrake binary not built";
    char tmpl[] = "/tmp/ab-report-XXXXXX";
    dir = mkdtemp(tmpl);
    db = (dir / "agentbrake.db").string();
    out = (dir / "report.html").string();
    auto store = Store::open(db, OpenMode::ReadWrite);
    now = now_unix_ns();
    auto call = [&](int64_t ago_s, const std::string& cg, uint32_t pid, const std::string& comm,
                    const char* model, double cost) {
      ab::LlmCall c;
      c.end_unix_ns = now - ago_s * kNsPerSec;
      c.start_unix_ns = c.end_unix_ns - 200'000'000;
      c.who.pid = pid;
      c.who.comm = comm;
      c.who.cgroup = cg;
      c.who.tree_root_pid = pid;
      c.model = model;
      c.provider = "openai";
      c.api = "openai";
      c.input_tokens = 1000;
      c.output_tokens = 100;
      c.cost_usd = cost;
      c.status = 200;
      c.complete = true;
      store->add_call(c);
    };
    // three cgroups within the last 2 hours, one of them with a name that needs escaping
    for (int i = 0; i < 6; ++i) call(7000 - i * 1000, "/agents/research", 100, "python3", "gpt-4o-mini", 0.3);
    for (int i = 0; i < 3; ++i) call(5000 - i * 1200, "/agents/coder", 200, "node", "claude-3-5-haiku", 0.5);
    call(600, "/agents/<evil>&\"x'", 300, "<script>alert(1)</script>", "m<1>", 0.125);
    call(3 * 86400, "/agents/ancient", 400, "old", "gpt-4o", 9.0);  // outside the default 24h
    auto ev = [&](int64_t ago_s, const char* kind, const std::string& cg, uint32_t pid, nlohmann::json detail) {
      store->add_event(Event{now - ago_s * kNsPerSec, kind, cg, pid, "python3", std::move(detail)});
    };
    ev(3000, "budget_exceeded", "/agents/research", 100,
       {{"budget", "research"}, {"bucket", "/agents/research"}, {"limit", "spend 1 USD / 1h"}, {"action", "throttle"}});
    ev(2900, "paused", "/agents/research", 100, {{"target", "/agents/research"}, {"reason", "budget"}, {"dry_run", false}});
    ev(2000, "resumed", "/agents/research", 100, {{"target", "/agents/research"}, {"reason", "budget"}});
    ev(1500, "loop_detected", "/agents/coder", 200,
       {{"detector", "ping_pong"}, {"action", "kill"}, {"members", {{{"pid", 200}}, {{"pid", 201}}}}});
    ev(1400, "killed", "/agents/coder", 200, {{"target", "/agents/coder"}, {"reason", "loop"}});
    ev(1300, "denied", "/agents/coder", 200, {{"target", "/agents/coder"}, {"reason", "manual"}});
    ev(1200, "alert_failed", "", 0, {{"rule", "0"}, {"channel", "hooks.example.com"}, {"error", "timeout <5s>"}});
    ev(1100, "policy_loaded", "", 0, {{"source", "/etc/agentbrake/policy.d"}});  // not a brake event
    store->flush();
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
  ab::testing::CliResult report(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--db", db, "report", "--html", out};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  }
  fs::path dir;
  std::string db, out;
  int64_t now = 0;
};

}  // namespace

TEST_F(ReportHtml, WritesASelfContainedPage) {
  auto r = report();
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + out), std::string::npos) << r.out;
  std::string html = slurp(out);
  ASSERT_FALSE(html.empty());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<meta charset=\"utf-8\">"), std::string::npos);
  EXPECT_EQ(check_nesting(html), "");
  EXPECT_EQ(count_of(html, "<svg"), 1u);
  EXPECT_EQ(count_of(html, "</svg>"), 1u);
  // nothing is fetched from anywhere
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
}

TEST_F(ReportHtml, OneSeriesPerCgroupWithLegendAndAxes) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(count_of(html, "<polyline class=\"series\""), 3u) << "3 cgroups in the last 24h";
  for (const char* cg : {"/agents/research", "/agents/coder", "/agents/&lt;evil&gt;&amp;&quot;x&#39;"})
    EXPECT_NE(html.find(std::string("data-series=\"") + cg + "\""), std::string::npos) << cg;
  EXPECT_EQ(html.find("/agents/ancient"), std::string::npos) << "3 days old: outside --since 24h";
  // the most expensive series first; each line ends at its total
  EXPECT_LT(html.find("data-series=\"/agents/research\""), html.find("data-series=\"/agents/coder\""));
  EXPECT_NE(html.find("class=\"legend\""), std::string::npos);
  EXPECT_NE(html.find("/agents/research <span class=\"num\">$1.800</span>"), std::string::npos);
  EXPECT_NE(html.find("cumulative spend (USD)"), std::string::npos);
  EXPECT_NE(html.find("time (UTC)"), std::string::npos);
  EXPECT_NE(html.find("15m buckets"), std::string::npos) << "24h span: 15 minute buckets";
  // totals: 10 calls, $3.425
  EXPECT_NE(html.find("$3.425"), std::string::npos);
  EXPECT_NE(html.find(">10<"), std::string::npos);
}

TEST_F(ReportHtml, EscapesEverythingFromTheDatabase) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(html.find("<evil>"), std::string::npos);
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  EXPECT_EQ(html.find("m<1>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("m&lt;1&gt;"), std::string::npos);
  EXPECT_NE(html.find("timeout &lt;5s&gt;"), std::string::npos);
}

TEST_F(ReportHtml, TopAgentsTable) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  size_t top = html.find("<h2>Top agents</h2>");
  ASSERT_NE(top, std::string::npos);
  size_t end = html.find("</table>", top);
  std::string table = html.substr(top, end - top);
  // research ($1.80) before coder ($1.50) before the escaped one ($0.125)
  size_t a = table.find("/agents/research"), b = table.find("/agents/coder"), c = table.find("/agents/&lt;evil");
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(c, std::string::npos);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_NE(table.find("python3"), std::string::npos);
  EXPECT_NE(table.find("gpt-4o-mini"), std::string::npos);
  EXPECT_NE(table.find("6,000"), std::string::npos) << "input tokens of research";
}

TEST_F(ReportHtml, BrakeEventTimeline) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  std::map<std::string, size_t> rows;
  std::regex ev("<tr class=\"ev\" data-kind=\"([a-z_]+)\">");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), ev); it != std::sregex_iterator(); ++it)
    rows[(*it)[1]] += 1;
  for (const char* k : {"budget_exceeded", "paused", "resumed", "loop_detected", "killed", "denied", "alert_failed"})
    EXPECT_EQ(rows[k], 1u) << k;
  EXPECT_EQ(rows.count("policy_loaded"), 0u);
  EXPECT_EQ(rows.count("llm_call"), 0u);
  // oldest first, with time, cgroup, pid and a short detail
  EXPECT_LT(html.find("data-kind=\"budget_exceeded\""), html.find("data-kind=\"killed\""));
  EXPECT_NE(html.find(format_rfc3339(now - 1400 * kNsPerSec)), std::string::npos);
  EXPECT_NE(html.find("budget=research"), std::string::npos);
  EXPECT_NE(html.find("detector=ping_pong, action=kill, 2 members"), std::string::npos);
  EXPECT_NE(html.find("target=/agents/coder, reason=loop"), std::string::npos);
  // and marked on the chart
  EXPECT_EQ(count_of(html, "class=\"event-mark\""), 7u);
}

TEST_F(ReportHtml, SinceNarrowsThePeriod) {
  ASSERT_EQ(report({"--since", "15m"}).rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(count_of(html, "<polyline class=\"series\""), 1u) << "only the escaped cgroup called in the last 15m";
  EXPECT_NE(html.find("1m buckets"), std::string::npos);
  EXPECT_EQ(html.find("data-kind=\"killed\""), std::string::npos);
  ASSERT_EQ(report({"--since", "7d"}).rc, 0);
  html = slurp(out);
  EXPECT_EQ(count_of(html, "<polyline class=\"series\""), 4u);
  EXPECT_NE(html.find("data-series=\"/agents/ancient\""), std::string::npos);
}

TEST_F(ReportHtml, EmptyPeriodStillAPage) {
  ASSERT_EQ(report({"--since", "10s"}).rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(check_nesting(html), "");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("no LLM calls in this period"), std::string::npos);
  EXPECT_NE(html.find("no brake events in this period"), std::string::npos);
}

TEST_F(ReportHtml, Errors) {
  auto bad = report({"--since", "5x"});
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("invalid duration '5x'"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(out)) << "nothing written on bad usage";

  auto missing = run_cli({"--db", (dir / "nope.db").string(), "report", "--html", out});
  EXPECT_EQ(missing.rc, 1);
  EXPECT_NE(missing.err.find("nope.db"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(out));

  auto unwritable = run_cli({"--db", db, "report", "--html", (dir / "no-such-dir" / "r.html").string()});
  EXPECT_EQ(unwritable.rc, 1);
  EXPECT_NE(unwritable.err.find("cannot write"), std::string::npos) << unwritable.err;

  auto no_html = run_cli({"--db", db, "report"});
  EXPECT_EQ(no_html.rc, 2);
}

TEST_F(ReportHtml, DashWritesToStdout) {
  auto r = run_cli({"--db", db, "report", "--html", "-", "--since", "2h"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(check_nesting(r.out), "");
}

// Black-box tests of the `agentbrake` binary's database commands (usage, events) against a
// database written by the real Store.
#include <signal.h>

#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "../control/cli_runner.h"
#include "store/store.h"
#include "util/timefmt.h"

using namespace ab::store;
using ab::util::format_rfc3339;
using ab::util::kNsPerSec;
using ab::util::now_unix_ns;
using ab::testing::CliProcess;
using ab::testing::run_cli;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream is(text);
  std::string line;
  while (std::getline(is, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

class CliDb : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP() << "agentbrake binary not built";
    char tmpl[] = "/tmp/ab-clidb-XXXXXX";
    dir = mkdtemp(tmpl);
    db = (dir / "agentbrake.db").string();
    store = Store::open(db, OpenMode::ReadWrite);
    now = now_unix_ns();
    auto call = [&](int64_t ago_s, const char* cg, uint32_t pid, const char* comm, const char* model,
                    const char* prov, int64_t in, int64_t out, double cost, bool est) {
      ab::LlmCall c;
      c.end_unix_ns = now - ago_s * kNsPerSec;
      c.start_unix_ns = c.end_unix_ns - 100'000'000;
      c.who.pid = pid;
      c.who.comm = comm;
      c.who.cgroup = cg;
      c.model = model;
      c.provider = prov;
      c.input_tokens = in;
      c.output_tokens = out;
      c.cost_usd = cost;
      c.estimated = est;
      c.status = 200;
      c.complete = true;
      store->add_call(c);
    };
    call(3 * 86400, "/agents/old", 1, "old", "gpt-4o", "openai", 999, 999, 9.0, false);  // outside 24h
    call(3600, "/agents/a", 10, "python3", "gpt-4o-mini", "openai", 1000, 100, 0.01, false);
    call(1800, "/agents/a", 10, "python3", "gpt-4o-mini", "openai", 2000, 200, 0.02, true);
    call(600, "/agents/b", 20, "node", "claude-3-5-haiku", "anthropic", 300, 30, 0.5, false);
    store->add_event(Event{now - 300 * kNsPerSec, "paused", "/agents/b", 20, "node",
                           {{"target", "/agents/b"}, {"reason", "budget"}, {"dry_run", false}}});
    store->flush();
  }
  void TearDown() override {
    store.reset();
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
  ab::testing::CliResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--db", db});
    return run_cli(args);
  }
  fs::path dir;
  std::string db;
  std::unique_ptr<Store> store;
  int64_t now = 0;
};

}  // namespace

TEST_F(CliDb, UsageJsonDefaultsToCgroupAnd24h) {
  auto r = cli({"usage", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = json::parse(r.out);
  EXPECT_EQ(j["by"], "cgroup");
  std::regex ts(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)");
  EXPECT_TRUE(std::regex_match(j["since"].get<std::string>(), ts)) << j["since"];
  EXPECT_TRUE(std::regex_match(j["until"].get<std::string>(), ts)) << j["until"];
  ASSERT_EQ(j["rows"].size(), 2u);  // /agents/old is 3 days old
  EXPECT_EQ(j["rows"][0]["key"], "/agents/b");
  EXPECT_EQ(j["rows"][1]["key"], "/agents/a");
  EXPECT_EQ(j["rows"][1]["calls"], 2);
  EXPECT_EQ(j["rows"][1]["input_tokens"], 3000);
  EXPECT_EQ(j["rows"][1]["output_tokens"], 300);
  EXPECT_EQ(j["rows"][1]["estimated_calls"], 1);
  EXPECT_NEAR(j["rows"][1]["cost_usd"].get<double>(), 0.03, 1e-9);
}

TEST_F(CliDb, UsageByEachKeyAndSince) {
  auto p = json::parse(cli({"usage", "--by", "process", "--json"}).out);
  EXPECT_EQ(p["by"], "process");
  EXPECT_EQ(p["rows"][0]["key"], "20 node");
  EXPECT_EQ(p["rows"][1]["key"], "10 python3");
  auto m = json::parse(cli({"usage", "--by", "model", "--since", "20m", "--json"}).out);
  ASSERT_EQ(m["rows"].size(), 1u);
  EXPECT_EQ(m["rows"][0]["key"], "claude-3-5-haiku");
  auto pr = json::parse(cli({"usage", "--by", "provider", "--since", "7d", "--json"}).out);
  ASSERT_EQ(pr["rows"].size(), 2u);
  EXPECT_EQ(pr["rows"][0]["key"], "openai");  // $9.03 including the old call
  EXPECT_EQ(pr["rows"][0]["calls"], 3);
  auto human = cli({"usage", "--by", "model"});
  EXPECT_EQ(human.rc, 0);
  EXPECT_NE(human.out.find("TOTAL"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("gpt-4o-mini"), std::string::npos) << human.out;
}

TEST_F(CliDb, EventsJsonOldestFirst) {
  auto r = cli({"events", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 4u);  // 3 llm_call within 24h + paused
  std::regex ts(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& e = lines[i];
    EXPECT_TRUE(std::regex_match(e["ts"].get<std::string>(), ts)) << e.dump();
    for (const char* k : {"kind", "cgroup", "pid", "comm", "detail"}) EXPECT_TRUE(e.contains(k)) << k;
    if (i) {
      EXPECT_GE(e["ts"].get<std::string>(), lines[i - 1]["ts"].get<std::string>());
    }
  }
  EXPECT_EQ(lines[0]["kind"], "llm_call");
  EXPECT_EQ(lines[0]["detail"]["model"], "gpt-4o-mini");
  EXPECT_EQ(lines[0]["detail"]["input_tokens"], 1000);
  EXPECT_EQ(lines[3]["kind"], "paused");
  EXPECT_EQ(lines[3]["detail"]["target"], "/agents/b");
  EXPECT_EQ(lines[3]["ts"], format_rfc3339(now - 300 * kNsPerSec));

  auto k = json_lines(cli({"events", "--json", "--kind", "paused", "--kind", "killed"}).out);
  ASSERT_EQ(k.size(), 1u);
  EXPECT_EQ(k[0]["kind"], "paused");
  EXPECT_EQ(json_lines(cli({"events", "--json", "--since", "7d"}).out).size(), 5u);
  auto human = cli({"events", "--since", "15m"});
  EXPECT_EQ(human.rc, 0);
  EXPECT_NE(human.out.find("paused"), std::string::npos) << human.out;
}

TEST_F(CliDb, FollowSeesNewRowsUntilSigint) {
  CliProcess p({"--db", db, "events", "--json", "--follow", "--since", "1m"});
  p.pump(500);
  EXPECT_TRUE(p.out().empty()) << p.out();  // nothing in the last minute yet
  store->add_event(Event{0, "killed", "/agents/b", 20, "node", {{"target", "/agents/b"}}});
  store->add_event(Event{0, "resumed", "/agents/a", 10, "python3", {{"target", "/agents/a"}}});
  store->flush();
  auto t0 = std::chrono::steady_clock::now();
  while (json_lines(p.out()).size() < 2 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3)) p.pump(50);
  auto lines = json_lines(p.out());
  ASSERT_EQ(lines.size(), 2u) << p.out();
  EXPECT_EQ(lines[0]["kind"], "killed");
  EXPECT_EQ(lines[1]["kind"], "resumed");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  p.signal(SIGINT);
  auto r = p.wait(3000);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(json_lines(r.out).size(), 2u);  // nothing repeated
}

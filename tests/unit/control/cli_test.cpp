// Black-box tests of the `agentbrake` binary's live commands against a real control Server.
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "cli_runner.h"
#include "control/control.h"

using namespace ab::control;
using ab::testing::CliProcess;
using ab::testing::run_cli;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

class CliLive : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP() << "agentbrake binary not built";
    char tmpl[] = "/tmp/ab-cli-XXXXXX";
    dir = mkdtemp(tmpl);
    sock = (dir / "control.sock").string();
    server = std::make_unique<Server>(sock);
    server->add_command("status", Access::ReadOnly, [](const json&, const Peer&) {
      return json{{"version", "9.9.9"},
                  {"uptime_s", 61},
                  {"policy", {{"source", "/etc/agentbrake/policy.d"}}},
                  {"probes_attached", 3},
                  {"watched_processes", 2},
                  {"held", 1},
                  {"denied", 0},
                  {"counters", {{"ringbuf_lost", 5}, {"truncated_captures", 0}, {"unparsed_responses", 2},
                                {"alerts_dropped", 1}}}};
    });
    server->add_command("agents", Access::ReadOnly, [](const json&, const Peer&) {
      return json::array({{{"cgroup", "/agents/a"}, {"tree_root_pid", 4242}, {"pids", {4242, 4243}},
                           {"comm", "python3"}, {"provider", "openai"}, {"model", "gpt-4o-mini"},
                           {"calls", 12}, {"input_tokens", 5400}, {"output_tokens", 880},
                           {"cost_usd", 0.0123}, {"tokens_per_min", 900}, {"state", "ok"}, {"reason", ""}}});
    });
    for (const char* cmd : {"pause", "resume"})
      server->add_command(cmd, Access::Mutating, [this, cmd](const json& args, const Peer&) {
        std::lock_guard lk(mu);
        seen.push_back(std::string(cmd) + " " + args.dump());
        return json{{"target", args.at("target")}};
      });
    server->add_command("kill", Access::Mutating, [](const json& args, const Peer&) -> json {
      throw ControlError(codes::kNotFound, "no such process " + args.at("target").get<std::string>());
    });
    server->add_command("policy_reload", Access::Mutating, [](const json&, const Peer&) -> json {
      throw std::invalid_argument("policy rejected:\n/etc/agentbrake/policy.d/a.yaml:3: unknown key 'x'");
    });
    server->add_command("policy_show", Access::ReadOnly,
                        [](const json&, const Peer&) { return json{{"mode", "enforce"}}; });
    loop = std::thread([this] {
      while (!stop) server->poll_once(10);
    });
  }
  void TearDown() override {
    stop = true;
    if (loop.joinable()) loop.join();
    server.reset();
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
  ab::testing::CliResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--socket", sock});
    return run_cli(args);
  }

  fs::path dir;
  std::string sock;
  std::unique_ptr<Server> server;
  std::atomic<bool> stop{false};
  std::thread loop;
  std::mutex mu;
  std::vector<std::string> seen;
};

}  // namespace

TEST_F(CliLive, StatusHumanAndJson) {
  auto r = cli({"status"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has(r.out, "agentbraked 9.9.9, up 1m 1s")) << r.out;
  for (const char* c : {"ringbuf_lost", "truncated_captures", "unparsed_responses", "alerts_dropped"})
    EXPECT_TRUE(has(r.out, c)) << r.out;
  auto j = cli({"status", "--json"});
  EXPECT_EQ(j.rc, 0);
  auto parsed = json::parse(j.out);
  EXPECT_EQ(parsed["version"], "9.9.9");
  EXPECT_EQ(parsed["counters"]["ringbuf_lost"], 5);
  // the global flag may also come after the command
  auto after = run_cli({"status", "--json", "--socket", sock});
  EXPECT_EQ(after.rc, 0) << after.err;
  // and from the environment
  auto env = run_cli({"status", "--json"}, {"AGENTBRAKE_SOCKET=" + sock});
  EXPECT_EQ(env.rc, 0) << env.err;
}

TEST_F(CliLive, Agents) {
  auto r = cli({"agents"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has(r.out, "/agents/a")) << r.out;
  EXPECT_TRUE(has(r.out, "gpt-4o-mini")) << r.out;
  auto j = cli({"agents", "--json"});
  auto arr = json::parse(j.out);
  ASSERT_TRUE(arr.is_array());
  EXPECT_EQ(arr[0]["tree_root_pid"], 4242);
  auto top = cli({"top", "--once"});
  EXPECT_EQ(top.rc, 0) << top.err;
  EXPECT_TRUE(has(top.out, "/agents/a")) << top.out;
}

TEST_F(CliLive, BrakeCommandsSendTheTarget) {
  auto r = cli({"pause", "/agents//a/"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has(r.out, "paused /agents/a")) << r.out;
  r = cli({"resume", "4242"});
  EXPECT_EQ(r.rc, 0) << r.err;
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0], "pause {\"target\":\"/agents/a\"}");
    EXPECT_EQ(seen[1], "resume {\"target\":\"4242\"}");
  }
  // invalid targets never reach the daemon
  for (const char* bad : {"/", "abc", "0", "1", "/a/../b"}) {
    auto b = cli({"pause", bad});
    EXPECT_EQ(b.rc, 2) << bad;
    EXPECT_TRUE(has(b.err, "TARGET")) << b.err;
  }
  EXPECT_EQ(cli({"pause"}).rc, 2);  // missing TARGET
  std::lock_guard lk(mu);
  EXPECT_EQ(seen.size(), 2u);
}

TEST_F(CliLive, DaemonErrorsMapToExitCodes) {
  auto k = cli({"kill", "31337"});
  EXPECT_EQ(k.rc, 1);
  EXPECT_EQ(k.err, "agentbrake: no such process 31337\n");
  auto p = cli({"policy", "reload"});
  EXPECT_EQ(p.rc, 2);  // the daemon said: invalid input
  EXPECT_TRUE(has(p.err, "a.yaml:3")) << p.err;
  auto s = cli({"policy", "show", "--json"});
  EXPECT_EQ(s.rc, 0);
  EXPECT_EQ(json::parse(s.out)["mode"], "enforce");
}

TEST(CliOffline, UnreachableDaemon) {
  if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP();
  std::string path = "/tmp/ab-no-such-dir/control.sock";
  for (std::vector<std::string> cmd : {std::vector<std::string>{"status"}, {"agents", "--json"}, {"pause", "/a"},
                                       {"policy", "show"}, {"top", "--once"}}) {
    cmd.insert(cmd.begin(), {"--socket", path});
    auto r = run_cli(cmd);
    EXPECT_EQ(r.rc, 1) << cmd[2];
    EXPECT_EQ(r.err.rfind("agentbrake: cannot reach agentbraked at " + path + ": ", 0), 0u) << r.err;
  }
}

TEST(CliOffline, UsageErrorsExit2) {
  if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP();
  EXPECT_EQ(run_cli({}).rc, 2);
  EXPECT_EQ(run_cli({"frobnicate"}).rc, 2);
  EXPECT_EQ(run_cli({"status", "--bogus"}).rc, 2);
  auto d = run_cli({"usage", "--since", "5x", "--db", "/nonexistent.db"});
  EXPECT_EQ(d.rc, 2);
  EXPECT_TRUE(has(d.err, "'5x'")) << d.err;
  EXPECT_EQ(run_cli({"events", "--since", "yesterday", "--db", "/nonexistent.db"}).rc, 2);
  EXPECT_EQ(run_cli({"usage", "--by", "color", "--db", "/nonexistent.db"}).rc, 2);
  EXPECT_EQ(run_cli({"top", "--interval", "0s"}).rc, 2);
  EXPECT_EQ(run_cli({"policy"}).rc, 2);
}

TEST(CliOffline, HelpAndVersion) {
  if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP();
  auto v = run_cli({"--version"});
  EXPECT_EQ(v.rc, 0);
  EXPECT_TRUE(has(v.out, "agentbrake ")) << v.out;
  auto h = run_cli({"--help"});
  EXPECT_EQ(h.rc, 0);
  EXPECT_TRUE(has(h.out, "Examples:")) << h.out;
  EXPECT_TRUE(has(h.out, "usage")) << h.out;
  auto sub = run_cli({"events", "--help"});
  EXPECT_EQ(sub.rc, 0);
  EXPECT_TRUE(has(sub.out, "--follow")) << sub.out;
}

TEST(CliOffline, MissingDatabaseNamesThePath) {
  if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP();
  for (const char* cmd : {"usage", "events"}) {
    auto r = run_cli({cmd, "--db", "/tmp/ab-no-such/agentbrake.db"});
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_TRUE(has(r.err, "/tmp/ab-no-such/agentbrake.db")) << r.err;
  }
}

TEST(CliOffline, PolicyValidate) {
  if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP();
  char tmpl[] = "/tmp/ab-pol-XXXXXX";
  fs::path dir = mkdtemp(tmpl);
  std::string good = (dir / "good.yaml").string(), bad = (dir / "bad.yaml").string();
  std::ofstream(good) << "mode: enforce\n";
  std::ofstream(bad) << "mode: enforce\nnot_a_key: 1\n";
  chmod(good.c_str(), 0644);
  chmod(bad.c_str(), 0644);
  auto g = run_cli({"policy", "validate", good});
  EXPECT_EQ(g.rc, 0) << g.out << g.err;
  EXPECT_TRUE(has(g.out, "policy OK")) << g.out;
  auto b = run_cli({"policy", "validate", bad});
  EXPECT_EQ(b.rc, 2);
  EXPECT_TRUE(has(b.out, bad + ":2:")) << b.out;  // file:line
  auto m = run_cli({"policy", "validate", (dir / "missing.yaml").string()});
  EXPECT_EQ(m.rc, 2);
  fs::remove_all(dir);
}

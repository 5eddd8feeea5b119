// The operator-facing files of systemd/: the unit passes `systemd-analyze verify` (through
// systemd/verify-unit.sh, which points its program paths at this build), keeps the lifecycle
// and capability decisions documented in systemd/README.md, and the bash completion parses.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace fs = std::filesystem;

namespace {

const std::string kSystemd = std::string(AB_SOURCE_DIR) + "/systemd";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs a shell command; returns its exit status and stdout+stderr.
int sh(const std::string& cmd, std::string& output) {
  output.clear();
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool have(const char* program) {
  std::string out;
  return sh(std::string("command -v ") + program, out) == 0;
}

// [Service] key -> values (a key may repeat), comments dropped.
std::multimap<std::string, std::string> service_keys() {
  std::multimap<std::string, std::string> keys;
  std::istringstream is(slurp(kSystemd + "/agentbraked.service"));
  std::string line, section;
  while (std::getline(is, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line;
      continue;
    }
    auto eq = line.find('=');
    if (section == "[Service]" && eq != std::string::npos) keys.emplace(line.substr(0, eq), line.substr(eq + 1));
  }
  return keys;
}

std::string one(const std::multimap<std::string, std::string>& k, const std::string& key) {
  auto [a, b] = k.equal_range(key);
  if (a == b) return "<absent>";
  if (std::next(a) != b) return "<repeated>";
  return a->second;
}

std::set<std::string> words(const std::string& s) {
  std::set<std::string> out;
  std::istringstream is(s);
  std::string w;
  while (is >> w) out.insert(w);
  return out;
}

}  // namespace

TEST(SystemdFiles, UnitVerifies) {
  if (!have("systemd-analyze")) GTEST_SKIP() << "systemd-analyze not installed";
  // the build directory is the test binary's parent's parent (build/tests/unit_control)
  std::error_code ec;
  auto build = fs::read_symlink("/proc/self/exe", ec).parent_path().parent_path();
  std::string out;
  int rc = sh(kSystemd + "/verify-unit.sh '" + build.string() + "'", out);
  EXPECT_EQ(rc, 0) << out;
}

TEST(SystemdFiles, LifecycleDirectives) {
  auto k = service_keys();
  EXPECT_EQ(one(k, "Type"), "notify");
  EXPECT_EQ(one(k, "NotifyAccess"), "main");
  EXPECT_EQ(one(k, "WatchdogSec"), "30");
  EXPECT_EQ(one(k, "ExecStart"), "/usr/sbin/agentbraked");
  EXPECT_EQ(one(k, "ExecReload"), "/bin/kill -HUP $MAINPID");
  EXPECT_EQ(one(k, "ExecStopPost"), "/usr/sbin/agentbraked --release-all");
  EXPECT_EQ(one(k, "ExecStartPre").rfind("+/usr/libexec/agentbrake/", 0), 0u) << one(k, "ExecStartPre");
  // a clean exit (stray SIGINT/SIGTERM) must restart too; only `systemctl stop` ends it
  EXPECT_EQ(one(k, "Restart"), "always");
  EXPECT_EQ(one(k, "RestartPreventExitStatus"), "2");
  EXPECT_FALSE(one(k, "MemoryMax").empty());
  EXPECT_FALSE(one(k, "MemoryHigh").empty());
  EXPECT_EQ(one(k, "StateDirectory"), "agentbrake");
  EXPECT_EQ(one(k, "RuntimeDirectory"), "agentbrake");
  EXPECT_EQ(one(k, "RuntimeDirectoryPreserve"), "no");
  EXPECT_EQ(one(k, "ProtectSystem"), "strict");
  EXPECT_EQ(one(k, "NoNewPrivileges"), "yes");
  EXPECT_LT(std::stoi(one(k, "OOMScoreAdjust")), 0);
}

TEST(SystemdFiles, CapabilitiesAreTheDocumentedSet) {
  auto k = service_keys();
  const std::set<std::string> expected = {"CAP_BPF",  "CAP_PERFMON",    "CAP_SYS_ADMIN",    "CAP_NET_ADMIN",
                                          "CAP_KILL", "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_CHOWN"};
  EXPECT_EQ(words(one(k, "CapabilityBoundingSet")), expected);
  EXPECT_EQ(words(one(k, "AmbientCapabilities")), expected);
  // every capability is justified in the unit's comments
  std::string unit = slurp(kSystemd + "/agentbraked.service");
  for (const auto& cap : expected) EXPECT_NE(unit.find("#   " + cap), std::string::npos) << cap;
}

TEST(SystemdFiles, SandboxKeepsWhatTheDaemonNeeds) {
  auto k = service_keys();
  // these would hide agents' binaries or processes, or break webhooks/metrics, freeze or pins
  for (const char* forbidden : {"PrivateNetwork", "IPAddressDeny", "ProtectHome", "PrivateTmp", "ProtectProc",
                                "ProcSubset", "ProtectControlGroups", "ProtectKernelTunables", "MemoryDenyWriteExecute"})
    EXPECT_EQ(k.count(forbidden), 0u) << forbidden;
  auto filter = words(one(k, "SystemCallFilter"));
  for (const char* sc : {"@system-service", "bpf", "perf_event_open"}) EXPECT_TRUE(filter.count(sc)) << sc;
  auto families = words(one(k, "RestrictAddressFamilies"));
  for (const char* af : {"AF_UNIX", "AF_INET", "AF_INET6"}) EXPECT_TRUE(families.count(af)) << af;
  EXPECT_NE(one(k, "ReadWritePaths").find("/sys/fs/bpf"), std::string::npos);
}

TEST(SystemdFiles, SysusersAndTmpfiles) {
  std::string su = slurp(kSystemd + "/agentbrake.sysusers");
  EXPECT_NE(su.find("\ng agentbrake -\n"), std::string::npos) << su;
  std::string tf = slurp(kSystemd + "/agentbrake.tmpfiles");
  EXPECT_NE(tf.find("d /etc/agentbrake/policy.d   0755 root root -"), std::string::npos) << tf;
  EXPECT_NE(tf.find("d /var/lib/agentbrake        0750 root agentbrake -"), std::string::npos) << tf;
}

TEST(SystemdFiles, BashCompletionParsesAndCompletes) {
  if (!have("bash")) GTEST_SKIP() << "bash not installed";
  std::string file = kSystemd + "/agentbrake.bash-completion";
  std::string out;
  ASSERT_EQ(sh("bash -n '" + file + "'", out), 0) << out;
  // drive the completion function the way bash does: COMP_WORDS/COMP_CWORD in, COMPREPLY out
  auto complete = [&](const std::string& line_words) {
    char path[] = "/tmp/ab-complete-XXXXXX";
    int fd = mkstemp(path);
    std::string script = "source '" + file + "'\nCOMP_WORDS=(" + line_words +
                         ")\nCOMP_CWORD=$((${#COMP_WORDS[@]} - 1))\nCOMPREPLY=()\n_agentbrake\n"
                         "printf '%s\\n' \"${COMPREPLY[@]}\"\n";
    if (fd >= 0) {
      (void)!write(fd, script.data(), script.size());
      close(fd);
    }
    std::string o;
    sh(std::string("bash ") + path, o);
    unlink(path);
    return words(o);
  };
  EXPECT_EQ(complete("agentbrake ''"),
            (std::set<std::string>{"status", "agents", "top", "usage", "events", "report", "pause", "resume", "kill",
                                   "policy", "fleet"}));
  EXPECT_EQ(complete("agentbrake fleet ''"), (std::set<std::string>{"status"}));
  EXPECT_EQ(complete("agentbrake usage --by ''"), (std::set<std::string>{"cgroup", "process", "model", "provider"}));
  auto kinds = complete("agentbrake events --kind ''");
  for (const char* k : {"llm_call", "budget_exceeded", "loop_detected", "paused", "resumed", "denied", "killed",
                        "alert_sent", "alert_failed", "policy_loaded", "policy_rejected", "events_lost",
                        "probe_attached", "probe_failed"})
    EXPECT_TRUE(kinds.count(k)) << k;
  EXPECT_EQ(complete("agentbrake policy ''"), (std::set<std::string>{"validate", "show", "reload"}));
  auto report = complete("agentbrake report --");
  EXPECT_TRUE(report.count("--html") && report.count("--since")) << testing::PrintToString(report);
  auto global = complete("agentbrake --");
  EXPECT_TRUE(global.count("--db") && global.count("--socket")) << testing::PrintToString(global);
  // --html and policy validate complete file names
  auto files = complete("agentbrake report --html '" + kSystemd + "/agentbrake.bash-'");
  EXPECT_TRUE(files.count(kSystemd + "/agentbrake.bash-completion")) << testing::PrintToString(files);
}

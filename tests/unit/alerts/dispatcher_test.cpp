#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "alerts/dispatcher.h"
#include "alerts/httplib_config.h"

using namespace ab::alerts;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// A webhook receiver on 127.0.0.1: records every POST and answers with `status_for(n)` (n =
// 1-based request number).
class Receiver {
 public:
  struct Hit {
    std::string path, body, authorization, content_type;
  };
  std::function<int(int)> status_for = [](int) { return 200; };
  std::chrono::milliseconds delay{0};

  Receiver() {
    server_.Post(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      int n;
      {
        std::lock_guard lk(mu_);
        hits_.push_back({req.path, req.body, req.get_header_value("Authorization"),
                         req.get_header_value("Content-Type")});
        n = static_cast<int>(hits_.size());
      }
      if (delay.count() > 0) std::this_thread::sleep_for(delay);
      res.status = status_for(n);
      res.set_content("ok", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(1ms);
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  std::string url(const std::string& path = "/hook/T000/SECRET") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  std::string origin() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<Hit> hits() {
    std::lock_guard lk(mu_);
    return hits_;
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return hits_.size();
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<Hit> hits_;
};

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5000ms) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// Collects results until `n` arrived (or the timeout).
std::vector<AlertResult> collect(AlertDispatcher& d, size_t n, std::chrono::milliseconds timeout = 5000ms) {
  std::vector<AlertResult> all;
  eventually(
      [&] {
        for (auto& r : d.take_results()) all.push_back(std::move(r));
        return all.size() >= n;
      },
      timeout);
  return all;
}

// A TCP port on 127.0.0.1 where nobody listens.
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

ab::policy::AlertRule webhook_rule(std::string name, std::string url, std::vector<std::string> on,
                                   std::chrono::milliseconds min_interval) {
  ab::policy::AlertRule r;
  r.name = std::move(name);
  r.webhook = std::move(url);
  r.on = std::move(on);
  r.min_interval = min_interval;
  return r;
}

ab::policy::AlertRule exec_rule(std::string name, std::string path, std::vector<std::string> on) {
  ab::policy::AlertRule r;
  r.name = std::move(name);
  r.exec = std::move(path);
  r.on = std::move(on);
  r.min_interval = 0ms;
  return r;
}

AlertEvent killed(const std::string& cgroup, uint32_t pid = 4242) {
  AlertEvent e;
  e.kind = "killed";
  e.cgroup = cgroup;
  e.pid = pid;
  e.comm = "python3";
  e.detail = {{"reason", "budget"}, {"target", cgroup}};
  return e;
}

// A controllable clock for the rate limiter.
struct FakeClock {
  std::shared_ptr<std::atomic<int64_t>> ms = std::make_shared<std::atomic<int64_t>>(1'000'000);
  std::function<Clock::time_point()> fn() const {
    auto p = ms;
    return [p] { return Clock::time_point(std::chrono::milliseconds(p->load())); };
  }
  void advance(std::chrono::milliseconds d) { ms->fetch_add(d.count()); }
};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ab_alerts_test_XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string script(const std::string& name, const std::string& body) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
    ::chmod(p.c_str(), 0755);
    return p;
  }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

DispatcherOptions fast_options() {
  DispatcherOptions o;
  o.first_retry_delay = 20ms;
  o.connect_timeout = 1000ms;
  o.request_timeout = 2000ms;
  o.hostname = "testhost";
  return o;
}

}  // namespace

TEST(AlertDispatcher, OneAlertPerRuleAndEntityPerInterval) {
  Receiver rx;
  FakeClock clock;
  DispatcherOptions o = fast_options();
  o.now = clock.fn();
  AlertDispatcher d({webhook_rule("slack", rx.url(), {"killed", "budget_exceeded"}, 5min)}, o);

  EXPECT_EQ(d.offer(killed("/agents/a")), 1u);
  EXPECT_EQ(d.offer(killed("/agents/a")), 0u);  // same entity within 5 min
  EXPECT_EQ(d.offer(killed("/agents/a")), 0u);
  EXPECT_EQ(d.offer(killed("/agents/b")), 1u);  // another entity
  clock.advance(4min);
  EXPECT_EQ(d.offer(killed("/agents/a")), 0u);
  clock.advance(1min);
  EXPECT_EQ(d.offer(killed("/agents/a")), 1u);  // interval over
  AlertEvent call = killed("/agents/c");
  call.kind = "llm_call";
  EXPECT_EQ(d.offer(call), 0u);  // not in `on`

  auto results = collect(d, 3);
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.rule, "slack");
    EXPECT_EQ(r.channel, rx.origin());
    EXPECT_EQ(r.attempts, 1);
    EXPECT_EQ(r.to_detail().dump().find("SECRET"), std::string::npos);
  }
  EXPECT_EQ(rx.count(), 3u);
  auto c = d.counters();
  EXPECT_EQ(c.sent, 3u);
  EXPECT_EQ(c.suppressed, 3u);
  EXPECT_EQ(c.failed, 0u);
  EXPECT_EQ(c.dropped, 0u);

  // Two workers deliver concurrently: find the alert about /agents/a.
  auto hits = rx.hits();
  auto hit = *std::find_if(hits.begin(), hits.end(), [](const Receiver::Hit& h) {
    return nlohmann::json::parse(h.body)["agentbrake"]["cgroup"] == "/agents/a";
  });
  for (const auto& h : hits) {
    EXPECT_EQ(h.path, "/hook/T000/SECRET");
    EXPECT_EQ(h.content_type, "application/json");
    EXPECT_TRUE(h.authorization.empty());
  }
  auto body = nlohmann::json::parse(hit.body);
  EXPECT_EQ(body["text"], "[agentbrake@testhost] killed /agents/a [pid 4242 python3]: reason budget");
  EXPECT_EQ(body["agentbrake"]["kind"], "killed");
  EXPECT_EQ(body["agentbrake"]["cgroup"], "/agents/a");
  EXPECT_EQ(body["agentbrake"]["pid"], 4242);
  EXPECT_EQ(body["agentbrake"]["detail"]["reason"], "budget");
}

TEST(AlertDispatcher, EntityKeyOverridesCgroupForRateLimiting) {
  Receiver rx;
  AlertDispatcher d({webhook_rule("r", rx.url(), {"killed"}, 1h)}, fast_options());
  AlertEvent a = killed("/agents/a", 1);
  a.entity = "tree:1";
  AlertEvent b = killed("/agents/a", 2);
  b.entity = "tree:2";
  EXPECT_EQ(d.offer(a), 1u);
  EXPECT_EQ(d.offer(b), 1u);  // same cgroup, other tree
  EXPECT_EQ(d.offer(a), 0u);
  EXPECT_EQ(collect(d, 2).size(), 2u);
}

TEST(AlertDispatcher, NotifyFdBecomesReadableWithResults) {
  Receiver rx;
  AlertDispatcher d({webhook_rule("r", rx.url(), {"killed"}, 0ms)}, fast_options());
  pollfd p{d.notify_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  d.offer(killed("/agents/a"));
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  auto results = d.take_results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok);
  p.revents = 0;
  EXPECT_EQ(::poll(&p, 1, 0), 0);  // drained
}

TEST(AlertDispatcher, RetriesWithBackoffThenSucceeds) {
  Receiver rx;
  rx.status_for = [](int n) { return n <= 2 ? 503 : 200; };
  AlertDispatcher d({webhook_rule("r", rx.url(), {"killed"}, 0ms)}, fast_options());
  auto t0 = Clock::now();
  d.offer(killed("/agents/a"));
  auto results = collect(d, 1);
  auto took = Clock::now() - t0;
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok) << results[0].error;
  EXPECT_EQ(results[0].attempts, 3);
  EXPECT_EQ(rx.count(), 3u);
  EXPECT_GE(took, 60ms);  // 20 ms + 40 ms of backoff
  EXPECT_EQ(d.counters().sent, 1u);
}

TEST(AlertDispatcher, ClientErrorIsNotRetried) {
  Receiver rx;
  rx.status_for = [](int) { return 404; };
  AlertDispatcher d({webhook_rule("r", rx.url(), {"killed"}, 0ms)}, fast_options());
  d.offer(killed("/agents/a"));
  auto results = collect(d, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_FALSE(results[0].ok);
  EXPECT_EQ(results[0].attempts, 1);
  EXPECT_EQ(results[0].error, "HTTP 404");
  EXPECT_EQ(d.counters().failed, 1u);
}

TEST(AlertDispatcher, ReceiverDownFailsAfterAllAttemptsWithoutBlockingOffer) {
  std::string url = "http://127.0.0.1:" + std::to_string(closed_port()) + "/hook/SECRET?token=SECRET";
  DispatcherOptions o = fast_options();
  o.webhook_max_attempts = 3;
  AlertDispatcher d({webhook_rule("down", url, {"killed"}, 0ms)}, o);

  // offer() is called from the event loop: it must return at once, whatever the network does.
  auto worst = Clock::duration::zero();
  for (int i = 0; i < 50; ++i) {
    auto t0 = Clock::now();
    d.offer(killed("/agents/a" + std::to_string(i)));
    worst = std::max(worst, Clock::now() - t0);
  }
  EXPECT_LT(worst, 50ms);  // a loaded CI box may preempt; a blocked offer would take seconds

  auto results = collect(d, 50, 10s);
  ASSERT_EQ(results.size(), 50u);
  for (const auto& r : results) {
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.attempts, 3);
    EXPECT_FALSE(r.error.empty());
    EXPECT_EQ(r.error.find("SECRET"), std::string::npos) << r.error;
    EXPECT_EQ(r.channel.find("SECRET"), std::string::npos);
  }
  EXPECT_EQ(d.counters().failed, 50u);
  EXPECT_EQ(d.pending(), 0u);
}

TEST(AlertDispatcher, FullQueueDropsAndCounts) {
  Receiver rx;
  rx.delay = 300ms;
  DispatcherOptions o = fast_options();
  o.queue_capacity = 2;
  o.worker_threads = 1;
  AlertDispatcher d({webhook_rule("r", rx.url(), {"killed"}, 0ms)}, o);
  size_t queued = 0;
  for (int i = 0; i < 5; ++i) queued += d.offer(killed("/agents/" + std::to_string(i)));
  EXPECT_EQ(queued, 2u);
  EXPECT_EQ(d.counters().dropped, 3u);
  EXPECT_EQ(collect(d, 2).size(), 2u);
  EXPECT_EQ(d.offer(killed("/agents/0")), 1u);  // a dropped alert did not charge the rate limit
  EXPECT_EQ(collect(d, 1).size(), 1u);
}

TEST(AlertDispatcher, DestructorAbandonsRetriesAndAbortsTransfersQuickly) {
  Receiver slow;
  slow.delay = 1500ms;
  std::string down = "http://127.0.0.1:" + std::to_string(closed_port()) + "/x";
  DispatcherOptions o = fast_options();
  o.first_retry_delay = 10s;
  o.request_timeout = 10s;
  auto d = std::make_unique<AlertDispatcher>(
      std::vector{webhook_rule("slow", slow.url(), {"killed"}, 0ms), webhook_rule("down", down, {"killed"}, 0ms)}, o);
  d->offer(killed("/agents/a"));
  ASSERT_TRUE(eventually([&] { return slow.count() == 1; }));  // a transfer in flight, a retry waiting
  std::this_thread::sleep_for(50ms);
  auto t0 = Clock::now();
  d.reset();
  EXPECT_LT(Clock::now() - t0, 500ms);
}

TEST(AlertDispatcher, RuleNeverAlertsAboutItsOwnFailure) {
  Receiver rx;
  AlertDispatcher d({webhook_rule("meta", rx.url(), {"alert_failed"}, 0ms)}, fast_options());
  AlertEvent own;
  own.kind = "alert_failed";
  own.detail = {{"rule", "meta"}, {"channel", "x"}};
  EXPECT_EQ(d.offer(own), 0u);
  AlertEvent other = own;
  other.detail["rule"] = "pager";
  EXPECT_EQ(d.offer(other), 1u);
  EXPECT_EQ(collect(d, 1).size(), 1u);
}

TEST(AlertDispatcher, ReloadKeepsRateLimitOfRulesThatStay) {
  Receiver rx;
  AlertDispatcher d({webhook_rule("keep", rx.url(), {"killed"}, 1h), webhook_rule("gone", rx.url(), {"killed"}, 1h)},
                    fast_options());
  EXPECT_EQ(d.offer(killed("/agents/a")), 2u);
  d.set_rules({webhook_rule("keep", rx.url(), {"killed"}, 1h), webhook_rule("new", rx.url(), {"killed"}, 1h)});
  EXPECT_EQ(d.offer(killed("/agents/a")), 1u);  // only "new" fires
  EXPECT_EQ(collect(d, 3).size(), 3u);
  EXPECT_EQ(d.counters().suppressed, 1u);
}

TEST(AlertDispatcher, ExecRunsTheProgramWithTheEventInItsEnvironment) {
  TempDir dir;
  std::string out = dir.path() + "/env.txt";
  std::string script = dir.script("page.sh", "env > '" + out + "'");
  AlertDispatcher d({exec_rule("pager", script, {"killed"})}, fast_options());
  AlertEvent e = killed("/agents/a");
  e.detail = {{"reason", "loop"}, {"path", "/v1/x?key=SECRET"}};
  EXPECT_EQ(d.offer(e), 1u);
  auto results = collect(d, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok) << results[0].error;
  EXPECT_EQ(results[0].channel, "exec:" + script);
  EXPECT_EQ(results[0].attempts, 1);

  std::string env = slurp(out);
  EXPECT_NE(env.find("AGENTBRAKE_KIND=killed\n"), std::string::npos) << env;
  EXPECT_NE(env.find("AGENTBRAKE_CGROUP=/agents/a\n"), std::string::npos);
  EXPECT_NE(env.find("AGENTBRAKE_PID=4242\n"), std::string::npos);
  EXPECT_NE(env.find("AGENTBRAKE_COMM=python3\n"), std::string::npos);
  EXPECT_NE(env.find("AGENTBRAKE_RULE=pager\n"), std::string::npos);
  EXPECT_NE(env.find(R"(AGENTBRAKE_DETAIL={"path":"/v1/x","reason":"loop"})"), std::string::npos) << env;
  EXPECT_NE(env.find("AGENTBRAKE_SUMMARY=killed /agents/a pid 4242 (python3): reason loop\n"), std::string::npos)
      << env;
  EXPECT_EQ(env.find("SECRET"), std::string::npos);
  EXPECT_EQ(env.find("HOME="), std::string::npos);  // the daemon's environment is not passed on
}

TEST(AlertDispatcher, ExecFailuresAreReported) {
  TempDir dir;
  DispatcherOptions o = fast_options();
  o.exec_timeout = 200ms;
  AlertDispatcher d({exec_rule("exit3", dir.script("exit3.sh", "exit 3"), {"killed"}),
                     exec_rule("hang", dir.script("hang.sh", "sleep 30"), {"killed"}),
                     exec_rule("missing", dir.path() + "/no-such-program", {"killed"})},
                    o);
  auto t0 = Clock::now();
  d.offer(killed("/agents/a"));
  auto results = collect(d, 3);
  EXPECT_LT(Clock::now() - t0, 3s);
  ASSERT_EQ(results.size(), 3u);
  std::map<std::string, AlertResult> by_rule;
  for (auto& r : results) by_rule[r.rule] = r;
  EXPECT_FALSE(by_rule["exit3"].ok);
  EXPECT_EQ(by_rule["exit3"].error, "exit status 3");
  EXPECT_FALSE(by_rule["hang"].ok);
  EXPECT_NE(by_rule["hang"].error.find("timed out"), std::string::npos) << by_rule["hang"].error;
  EXPECT_FALSE(by_rule["missing"].ok);
  EXPECT_NE(by_rule["missing"].error.find("cannot run"), std::string::npos) << by_rule["missing"].error;
  EXPECT_EQ(d.counters().failed, 3u);
}

// Harden L2: `exec` runs as root, so a program someone else could have written is refused, at
// every run, with the reason; the refusal is an ordinary failed delivery.
TEST(AlertDispatcher, ExecProgramOthersCouldWriteIsRefused) {
  TempDir dir;
  const uid_t me = ::geteuid();
  std::string ok = dir.script("ok.sh", "exit 0");
  EXPECT_EQ(exec_program_refusal(ok, me), std::nullopt);

  std::string gw = dir.script("gw.sh", "exit 0");
  ::chmod(gw.c_str(), 0775);
  auto why = exec_program_refusal(gw, me);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("writable by group"), std::string::npos) << *why;

  std::string noexec = dir.script("noexec.sh", "exit 0");
  ::chmod(noexec.c_str(), 0644);
  EXPECT_TRUE(exec_program_refusal(noexec, me));
  EXPECT_TRUE(exec_program_refusal(dir.path(), me));  // a directory

  // a directory others may write (not sticky) above the program
  std::string open_dir = dir.path() + "/open";
  ::mkdir(open_dir.c_str(), 0755);
  ::chmod(open_dir.c_str(), 0777);
  std::string inside = open_dir + "/p.sh";
  std::ofstream(inside) << "#!/bin/sh\nexit 0\n";
  ::chmod(inside.c_str(), 0755);
  why = exec_program_refusal(inside, me);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("directory " + open_dir), std::string::npos) << *why;
  // sticky (like /tmp): others cannot replace what it holds, so it is accepted
  ::chmod(open_dir.c_str(), 01777);
  EXPECT_EQ(exec_program_refusal(inside, me), std::nullopt);

  // a symlink is judged by what it points at
  std::string link = dir.path() + "/link";
  ::symlink(gw.c_str(), link.c_str());
  EXPECT_TRUE(exec_program_refusal(link, me));

  if (me == 0) {  // owned by someone else (needs root to chown)
    std::string theirs = dir.script("theirs.sh", "exit 0");
    ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
    why = exec_program_refusal(theirs, 0);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("owned by uid 65534"), std::string::npos) << *why;
  }

  // through the dispatcher: a failed delivery naming the reason, and the program never ran
  std::string marker = dir.path() + "/ran";
  std::string bad = dir.script("bad.sh", "touch '" + marker + "'");
  ::chmod(bad.c_str(), 0777);
  AlertDispatcher d({exec_rule("bad", bad, {"killed"})}, fast_options());
  d.offer(killed("/agents/a"));
  auto results = collect(d, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_FALSE(results[0].ok);
  EXPECT_NE(results[0].error.find("refused to run"), std::string::npos) << results[0].error;
  EXPECT_FALSE(std::filesystem::exists(marker));
}

// Harden L2: names chosen by whoever runs the agent reach an exec program with their control
// bytes escaped (a newline in comm must not forge a second line in a script's log).
TEST(AlertDispatcher, ExecEnvironmentEscapesAgentChosenNames) {
  AlertEvent e = killed("/agents/evil\nAGENTBRAKE_KIND=x");
  e.comm = "py\x1b]0;pwned\x07";
  auto env = exec_environment("r", e, "host");
  for (const auto& kv : env) {
    EXPECT_EQ(kv.find('\n'), std::string::npos) << kv;
    EXPECT_EQ(kv.find('\x1b'), std::string::npos) << kv;
  }
  EXPECT_NE(std::find(env.begin(), env.end(), "AGENTBRAKE_COMM=py\\x1b]0;pwned\\x07"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "AGENTBRAKE_CGROUP=/agents/evil\\x0aAGENTBRAKE_KIND=x"), env.end());
}

TEST(AlertDispatcher, ExecChildIgnoresTheDaemonsBlockedSignals) {
  // The daemon blocks SIGTERM etc. for its signalfd; an exec alert must not inherit that.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  TempDir dir;
  std::string out = dir.path() + "/mask.txt";
  std::string script = dir.script("mask.sh", "exec grep SigBlk /proc/self/status > '" + out + "'");
  {
    AlertDispatcher d({exec_rule("m", script, {"killed"})}, fast_options());  // workers inherit the mask
    d.offer(killed("/agents/a"));
    ASSERT_EQ(collect(d, 1).size(), 1u);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_NE(slurp(out).find("0000000000000000"), std::string::npos) << slurp(out);
}

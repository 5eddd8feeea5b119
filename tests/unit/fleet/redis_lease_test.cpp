// The lease script and the worker against a real redis-server (the Debian package) that the
// test starts on a free loopback port, without persistence, in its own directory, and stops
// by its pid. Skipped when redis-server is not installed.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <poll.h>
#include <thread>

#include <hiredis/hiredis.h>

#include "fleet/fleet_worker.h"
#include "fleet/lease_script.h"

using namespace ab::fleet;

namespace {

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

class RedisServer {
 public:
  bool start() {
    if (::access("/usr/bin/redis-server", X_OK) != 0) return false;
    dir_ = std::filesystem::temp_directory_path() / ("ab-redis-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    port_ = free_port();
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string port = std::to_string(port_);
      std::string log = (dir_ / "redis.log").string();
      ::execl("/usr/bin/redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--dir", dir_.c_str(), "--logfile", log.c_str(), nullptr);
      ::_exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      timeval tv{0, 200'000};
      if (redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv); c && !c->err) {
        redisFree(c);
        return true;
      } else if (c) {
        redisFree(c);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  ~RedisServer() {
    stop();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::filesystem::path dir_;
};

std::string fmt_num(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

struct Lease {
  double granted, mine, used, seen, usage;
};

// One EVAL of the lease script, as the worker does it.
Lease eval(redisContext* c, const std::string& key, const std::string& host, double limit, double want,
           double report = 0, double give_back = 0, int64_t window_ms = 10'000, int64_t ttl_ms = 3000) {
  std::string k1 = usage_key(key), k2 = leases_key(key), k3 = hosts_key();
  std::string args[] = {fmt_num(limit), std::to_string(window_ms), std::to_string(window_ms / 20), fmt_num(want),
                        fmt_num(report), fmt_num(give_back), std::to_string(ttl_ms)};
  auto* r = static_cast<redisReply*>(redisCommand(c, "EVAL %b 3 %s %s %s %s %s %s %s %s %s %s %s",
                                                   kLeaseScript.data(), kLeaseScript.size(), k1.c_str(), k2.c_str(),
                                                   k3.c_str(), host.c_str(), args[0].c_str(), args[1].c_str(),
                                                   args[2].c_str(), args[3].c_str(), args[4].c_str(),
                                                   args[5].c_str(), args[6].c_str()));
  EXPECT_TRUE(r && r->type == REDIS_REPLY_ARRAY) << (r && r->str ? r->str : "no reply");
  Lease l{};
  if (r && r->type == REDIS_REPLY_ARRAY) {
    l = {std::stod(r->element[0]->str), std::stod(r->element[1]->str), std::stod(r->element[2]->str),
         std::stod(r->element[3]->str), std::stod(r->element[4]->str)};
  }
  if (r) freeReplyObject(r);
  return l;
}

}  // namespace

class RedisLease : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!server_.start()) GTEST_SKIP() << "redis-server not available";
    timeval tv{1, 0};
    c_ = redisConnectWithTimeout("127.0.0.1", server_.port(), tv);
    ASSERT_TRUE(c_ && !c_->err);
  }
  void TearDown() override {
    if (c_) redisFree(c_);
  }
  RedisServer server_;
  redisContext* c_ = nullptr;
};

TEST_F(RedisLease, GrantsNeverPassTheLimitAcrossHosts) {
  const std::string key = "b|cgroup:/a|requests|10000";
  Lease a = eval(c_, key, "h1", 10, 4);
  EXPECT_EQ(a.granted, 4);
  Lease b = eval(c_, key, "h2", 10, 4);
  EXPECT_EQ(b.granted, 4);
  Lease c = eval(c_, key, "h1", 10, 4);
  EXPECT_EQ(c.granted, 2);  // only 2 left
  EXPECT_EQ(c.mine, 6);
  EXPECT_EQ(c.used, 10);
  EXPECT_EQ(c.seen, 2);
  EXPECT_EQ(eval(c_, key, "h2", 10, 4).granted, 0);
}

TEST_F(RedisLease, ReportedUsageStaysInTheWindowAndUnusedCreditReturns) {
  const std::string key = "b|cgroup:/a|tokens|10000";
  eval(c_, key, "h1", 100, 60);
  // h1 used 30 and gives back the other 30: the window holds 30, no lease.
  Lease r = eval(c_, key, "h1", 100, 0, 30, 30);
  EXPECT_EQ(r.mine, 0);
  EXPECT_EQ(r.usage, 30);
  EXPECT_EQ(r.used, 30);
  EXPECT_EQ(eval(c_, key, "h2", 100, 100).granted, 70);
}

TEST_F(RedisLease, AnEmptyWindowAdmitsOneOversizeCall) {
  const std::string key = "b|cgroup:/a|tokens|10000";
  EXPECT_EQ(eval(c_, key, "h1", 100, 150).granted, 150);
  EXPECT_EQ(eval(c_, key, "h2", 100, 1).granted, 0);
}

TEST_F(RedisLease, ALeaseNotRenewedExpiresAndUsageLeavesAfterTheWindow) {
  const std::string key = "b|cgroup:/a|requests|1000";
  Lease a = eval(c_, key, "h1", 10, 10, 0, 0, 1000, 300);  // 1 s window, 300 ms lease TTL
  EXPECT_EQ(a.granted, 10);
  EXPECT_EQ(eval(c_, key, "h2", 10, 5, 0, 0, 1000, 300).granted, 0);
  // Wait (with a deadline) until h1's lease has expired in the store.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  double got = 0;
  while (got == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    got = eval(c_, key, "h2", 10, 5, 0, 0, 1000, 300).granted;
  }
  EXPECT_EQ(got, 5);
  // Usage reported now counts for a whole window, then leaves.
  Lease u = eval(c_, key, "h2", 10, 0, 5, 0, 1000, 300);
  EXPECT_EQ(u.usage, 5);
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto reported_at = std::chrono::steady_clock::now();
  double usage = 5;
  while (usage > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    usage = eval(c_, key, "h3", 10, 0, 0, 0, 1000, 300).usage;
  }
  EXPECT_EQ(usage, 0);
  EXPECT_GE(std::chrono::steady_clock::now() - reported_at, std::chrono::milliseconds(1000));
}

TEST_F(RedisLease, TheWorkerLeasesAndSignalsItsEventfd) {
  ab::policy::Fleet f;
  f.host = "127.0.0.1";
  f.port = static_cast<uint16_t>(server_.port());
  f.host_id = "w1";
  FleetWorker w(f, 10'000);
  Request q;
  q.seq = 7;
  q.key = "b|cgroup:/a|requests|10000";
  q.limit = 10;
  q.window_ms = 10'000;
  q.sub_ms = 500;
  q.want = 3;
  q.lease_ttl_ms = 3000;
  w.submit({q});
  std::vector<Reply> replies;
  std::vector<HeartbeatResult> beats;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((replies.empty() || beats.empty()) && std::chrono::steady_clock::now() < deadline) {
    pollfd p{w.event_fd(), POLLIN, 0};
    ::poll(&p, 1, 200);
    auto d = w.drain();
    for (auto& r : d.replies) replies.push_back(r);
    for (auto& b : d.heartbeats) beats.push_back(b);
  }
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_TRUE(replies[0].ok) << replies[0].error;
  EXPECT_EQ(replies[0].seq, 7u);
  EXPECT_EQ(replies[0].granted, 3);
  ASSERT_FALSE(beats.empty());
  EXPECT_TRUE(beats[0].ok) << beats[0].error;
  EXPECT_GE(beats[0].hosts_seen, 1);

  // The store goes away: the next request fails quickly, with a reason.
  server_.stop();
  q.seq = 8;
  w.submit({q});
  replies.clear();
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (replies.empty() && std::chrono::steady_clock::now() < deadline) {
    pollfd p{w.event_fd(), POLLIN, 0};
    ::poll(&p, 1, 200);
    for (auto& r : w.drain().replies) replies.push_back(r);
  }
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_FALSE(replies[0].ok);
  EXPECT_FALSE(replies[0].error.empty());
}

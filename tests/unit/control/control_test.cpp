#include "control/control.h"

#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

using namespace ab::control;
using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct TempDir {
  fs::path dir;
  TempDir() {
    char tmpl[] = "/tmp/ab-ctl-XXXXXX";
    dir = mkdtemp(tmpl);
    chmod(dir.c_str(), 0755);  // let an unprivileged child reach the socket
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string sock(const std::string& name = "control.sock") const { return (dir / name).string(); }
};

// A server running its loop in a thread, the way the daemon runs it in its event loop.
struct RunningServer {
  std::unique_ptr<Server> server;
  std::atomic<bool> stop{false};
  std::thread thread;

  RunningServer(const std::string& path, ServerOptions opts = {}, bool add_defaults = true) {
    server = std::make_unique<Server>(path, opts);
    if (add_defaults) {
      server->add_command("status", Access::ReadOnly, [](const json&, const Peer& p) {
        return json{{"version", "test"}, {"peer_uid", p.uid}, {"peer_pid", p.pid}};
      });
      server->add_command("echo", Access::ReadOnly, [](const json& args, const Peer&) { return args; });
      server->add_command("pause", Access::Mutating, [](const json& args, const Peer&) {
        return json{{"paused", args.at("target").get<std::string>()}};
      });
      server->add_command("boom", Access::ReadOnly, [](const json&, const Peer&) -> json {
        throw std::runtime_error("handler exploded");
      });
      server->add_command("bad", Access::ReadOnly, [](const json&, const Peer&) -> json {
        throw std::invalid_argument("target must be a cgroup path or a pid");
      });
      server->add_command("nosuch", Access::ReadOnly, [](const json&, const Peer&) -> json {
        throw ControlError(codes::kNotFound, "no such process 99999");
      });
      server->add_command("big", Access::ReadOnly, [](const json& args, const Peer&) {
        return json{{"blob", std::string(args.value("n", 0), 'x')}};
      });
    }
  }
  void start() {
    thread = std::thread([this] {
      while (!stop) server->poll_once(20);
    });
  }
  ~RunningServer() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
};

int raw_connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads one line (or until EOF/timeout). Returns "" on EOF with nothing read.
std::string read_line(int fd, int timeout_ms = 3000) {
  std::string out;
  char ch;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    ssize_t n = recv(fd, &ch, 1, 0);
    if (n <= 0) break;
    if (ch == '\n') return out;
    out += ch;
  }
  return out;
}

void send_all(int fd, const std::string& s) {
  ASSERT_EQ(send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
}

// Runs `fn` in a child that dropped root to uid/gid (and these supplementary groups); returns
// the child's exit code.
int as_user(uid_t uid, gid_t gid, std::vector<gid_t> groups, const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(99);
    int rc = 98;
    try {
      rc = fn();
    } catch (...) {
      rc = 97;
    }
    _exit(rc);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 96;
}

// Calls cmd and returns 0 on ok, else the error code (or 200 + n for unexpected failures).
int call_code(const std::string& path, const std::string& cmd, const json& args = json::object()) {
  try {
    auto c = Client::connect(path);
    c.call(cmd, args);
    return 0;
  } catch (const ControlError& e) {
    return e.code;
  } catch (const UnreachableError& e) {
    return 201;
  }
}

}  // namespace

TEST(Control, StatusRoundTripAndPeerCreds) {
  TempDir t;
  RunningServer rs(t.sock());
  rs.start();
  auto c = Client::connect(t.sock());
  json r = c.call("status");
  EXPECT_EQ(r["version"], "test");
  EXPECT_EQ(r["peer_uid"], getuid());
  EXPECT_EQ(r["peer_pid"], getpid());
  // several requests on one connection
  EXPECT_EQ(c.call("echo", {{"a", 1}})["a"], 1);
  EXPECT_EQ(c.call("pause", {{"target", "/agents/a"}})["paused"], "/agents/a");
}

TEST(Control, SocketModeAndCleanup) {
  TempDir t;
  std::string path = (t.dir / "sub" / "control.sock").string();
  {
    Server s(path);
    struct stat sb {};
    ASSERT_EQ(lstat(path.c_str(), &sb), 0);
    EXPECT_TRUE(S_ISSOCK(sb.st_mode));
    EXPECT_EQ(sb.st_mode & 0777, 0660u);
    ASSERT_EQ(stat((t.dir / "sub").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0755u);
  }
  EXPECT_FALSE(fs::exists(path));  // unlinked on destruction
}

TEST(Control, ErrorsBecomeOkFalse) {
  TempDir t;
  RunningServer rs(t.sock());
  rs.start();
  auto c = Client::connect(t.sock());
  try {
    c.call("boom");
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kInternal);
    EXPECT_STREQ(e.what(), "handler exploded");
  }
  try {
    c.call("bad");
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kBadRequest);
  }
  try {
    c.call("nosuch");
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kNotFound);
  }
  try {
    c.call("pause", json::object());  // handler reads a missing arg: json exception
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kBadRequest);
  }
  try {
    c.call("frobnicate");
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kUnknownCommand);
    EXPECT_NE(std::string(e.what()).find("frobnicate"), std::string::npos);
  }
  // the connection survives all of that
  EXPECT_EQ(c.call("status")["version"], "test");
}

TEST(Control, MalformedJsonIsAnErrorNotACrash) {
  TempDir t;
  RunningServer rs(t.sock());
  rs.start();
  int fd = raw_connect(t.sock());
  ASSERT_GE(fd, 0);
  for (const char* bad : {"this is not json", "[1,2,3]", "{\"cmd\":42}", "{\"cmd\":\"status\",\"args\":[1]}",
                          "{\"cmd\":\"status\"", "\"status\""}) {
    send_all(fd, std::string(bad) + "\n");
    auto resp = json::parse(read_line(fd));
    EXPECT_EQ(resp["ok"], false) << bad;
    EXPECT_EQ(resp["code"], codes::kBadRequest) << bad;
    EXPECT_TRUE(resp["error"].is_string());
  }
  // wire shape of a good answer, and CRLF and blank lines tolerated
  send_all(fd, "\n{\"cmd\":\"echo\",\"args\":{\"x\":\"y\"}}\r\n");
  EXPECT_EQ(read_line(fd), "{\"ok\":true,\"result\":{\"x\":\"y\"}}");
  send_all(fd, "{\"cmd\":\"nope\"}\n");
  EXPECT_EQ(read_line(fd), "{\"ok\":false,\"error\":\"unknown command 'nope'\",\"code\":38}");
  // binary garbage
  send_all(fd, std::string("\xff\xfe\x00\x01\n", 5));
  EXPECT_EQ(json::parse(read_line(fd))["ok"], false);
  close(fd);
  EXPECT_EQ(Client::connect(t.sock()).call("status")["version"], "test");
}

TEST(Control, PipelinedRequestsAnsweredInOrder) {
  TempDir t;
  RunningServer rs(t.sock());
  rs.start();
  int fd = raw_connect(t.sock());
  std::string batch;
  for (int i = 0; i < 50; ++i) batch += "{\"cmd\":\"echo\",\"args\":{\"i\":" + std::to_string(i) + "}}\n";
  send_all(fd, batch);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(json::parse(read_line(fd))["result"]["i"], i);
  // a client that sends and half-closes still gets its answer
  int fd2 = raw_connect(t.sock());
  send_all(fd2, "{\"cmd\":\"echo\",\"args\":{\"z\":1}}\n");
  shutdown(fd2, SHUT_WR);
  EXPECT_EQ(json::parse(read_line(fd2))["result"]["z"], 1);
  EXPECT_EQ(read_line(fd2, 1000), "");  // then EOF
  close(fd);
  close(fd2);
}

TEST(Control, LargeResponseToASlowReader) {
  TempDir t;
  RunningServer rs(t.sock());
  rs.start();
  auto c = Client::connect(t.sock());
  auto r = c.call("big", {{"n", 8 << 20}}, 10000);
  EXPECT_EQ(r["blob"].get<std::string>().size(), 8u << 20);
}

TEST(Control, SlowClientDoesNotBlockOthersAndIsDropped) {
  TempDir t;
  ServerOptions o;
  o.read_timeout = 300ms;
  RunningServer rs(t.sock(), o);
  rs.start();
  int slow = raw_connect(t.sock());
  ASSERT_GE(slow, 0);
  send_all(slow, "{\"cmd\":\"sta");  // and never finishes
  int silent = raw_connect(t.sock());  // connects and says nothing
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) EXPECT_EQ(Client::connect(t.sock()).call("status")["version"], "test");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  // the slow one is told and closed after its read deadline
  std::string line = read_line(slow, 3000);
  EXPECT_NE(line.find("not completed in time"), std::string::npos) << line;
  EXPECT_EQ(read_line(slow, 1000), "");
  close(slow);
  close(silent);
}

TEST(Control, OversizedRequestRefused) {
  TempDir t;
  ServerOptions o;
  o.max_request_bytes = 1024;
  RunningServer rs(t.sock(), o);
  rs.start();
  int fd = raw_connect(t.sock());
  std::string huge = "{\"cmd\":\"echo\",\"args\":{\"x\":\"" + std::string(4096, 'a') + "\"}}\n";
  send(fd, huge.data(), huge.size(), MSG_NOSIGNAL);
  auto resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["code"], codes::kTooLarge);
  close(fd);
}

TEST(Control, TooManyClients) {
  TempDir t;
  ServerOptions o;
  o.max_clients = 2;
  RunningServer rs(t.sock(), o);
  rs.start();
  auto a = Client::connect(t.sock());
  auto b = Client::connect(t.sock());
  a.call("status");
  b.call("status");
  auto c = Client::connect(t.sock());
  try {
    c.call("status");
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kBusy);
  }
}

TEST(Control, MutatingRefusedToNobody) {
  TempDir t;
  ServerOptions o;
  o.socket_mode = 0666;  // let the unprivileged child connect at all
  o.reader_gid = 54321;  // a group the child is not in
  RunningServer rs(t.sock(), o);
  rs.start();
  std::string path = t.sock();
  int rc = as_user(65534, 65534, {}, [&] {
    try {
      Client::connect(path).call("pause", {{"target", "/agents/a"}});
      return 1;
    } catch (const ControlError& e) {
      if (e.code != 13) return 2;
      if (std::string(e.what()) != "permission denied: 'pause' requires root") return 3;
      return 0;
    }
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(as_user(65534, 65534, {}, [&] { return call_code(path, "status"); }), 13);
  // root is allowed both
  EXPECT_EQ(call_code(path, "status"), 0);
  EXPECT_EQ(call_code(path, "pause", {{"target", "/x"}}), 0);
}

TEST(Control, ReadOnlyAllowedToGroupMembers) {
  TempDir t;
  ServerOptions o;
  o.socket_mode = 0666;
  o.reader_gid = 4242;
  RunningServer rs(t.sock(), o);
  rs.start();
  std::string path = t.sock();
  // primary group
  EXPECT_EQ(as_user(65534, 4242, {}, [&] { return call_code(path, "status"); }), 0);
  // supplementary group
  EXPECT_EQ(as_user(65534, 65534, {4242}, [&] { return call_code(path, "status"); }), 0);
  // but a member still cannot mutate
  EXPECT_EQ(as_user(65534, 65534, {4242}, [&] { return call_code(path, "pause", {{"target", "/a"}}); }), 13);
  // and a non-member cannot read
  EXPECT_EQ(as_user(65534, 65534, {1234}, [&] { return call_code(path, "status"); }), 13);
}

TEST(Control, DefaultModeKeepsOthersOut) {
  TempDir t;
  RunningServer rs(t.sock());  // 0660
  rs.start();
  std::string path = t.sock();
  // nobody cannot even connect: a clear "cannot reach" error
  EXPECT_EQ(as_user(65534, 65534, {}, [&] {
              try {
                Client::connect(path);
                return 1;
              } catch (const UnreachableError& e) {
                return std::string(e.what()).find("Permission denied") != std::string::npos ? 0 : 2;
              }
            }),
            0);
}

TEST(Control, PeerOfReportsGroups) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Peer p = peer_of(sv[0]);
  EXPECT_EQ(p.pid, getpid());
  EXPECT_EQ(p.uid, getuid());
  EXPECT_EQ(p.gid, getgid());
  EXPECT_TRUE(p.in_group(getgid()));
  close(sv[0]);
  close(sv[1]);
}

// Harden L8: without SO_PEERGROUPS, groups are read through a pidfd of the peer and count
// only while that process lives: once it has exited, its pid (maybe reused) lends nothing.
TEST(Control, GroupsOfAPeerThatExitedAreNotTrusted) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
  ASSERT_GE(pidfd, 0) << strerror(errno);
  auto alive = groups_of_live_process(pidfd, child);
  ASSERT_TRUE(alive);
  std::vector<gid_t> mine(64);
  int n = getgroups(static_cast<int>(mine.size()), mine.data());
  ASSERT_GE(n, 0);
  mine.resize(static_cast<size_t>(n));
  EXPECT_EQ(*alive, mine) << "a forked child has its parent's groups";
  kill(child, SIGKILL);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  EXPECT_FALSE(groups_of_live_process(pidfd, child)) << "exited: its pid may name another process now";
  close(pidfd);
}

TEST(Control, StaleSocketReplacedLiveOneRefused) {
  TempDir t;
  std::string path = t.sock();
  {
    // a socket file left behind by a crashed daemon
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    close(fd);
    ASSERT_TRUE(fs::exists(path));
  }
  RunningServer rs(path);
  rs.start();
  EXPECT_EQ(Client::connect(path).call("status")["version"], "test");
  // a second daemon on the same path must not steal it
  EXPECT_THROW(Server second(path), std::runtime_error);
  EXPECT_EQ(Client::connect(path).call("status")["version"], "test");
  // never replaces something that is not a socket
  std::string file = t.sock("regular");
  std::ofstream(file) << "x";
  EXPECT_THROW(Server s(file), std::runtime_error);
  EXPECT_TRUE(fs::exists(file));
}

TEST(Control, UnreachableNamesPathAndReason) {
  TempDir t;
  std::string path = t.sock("absent.sock");
  try {
    Client::connect(path);
    FAIL();
  } catch (const UnreachableError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("cannot reach agentbraked at " + path + ": ", 0), 0u) << e.what();
    EXPECT_NE(e.reason.find("No such file"), std::string::npos);
  }
}

TEST(Control, ClientTimesOut) {
  TempDir t;
  Server s(t.sock());  // nobody runs its loop: connect succeeds (backlog), no answer comes
  s.add_command("status", Access::ReadOnly, [](const json&, const Peer&) { return json::object(); });
  auto c = Client::connect(t.sock());
  auto t0 = std::chrono::steady_clock::now();
  try {
    c.call("status", {}, 200);
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kTimeout);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(Control, ServerClosedConnection) {
  TempDir t;
  std::string path = t.sock();
  auto rs = std::make_unique<RunningServer>(path);
  rs->start();
  auto c = Client::connect(path);
  c.call("status");
  rs.reset();  // daemon goes away
  try {
    c.call("status", {}, 1000);
    FAIL();
  } catch (const ControlError& e) {
    EXPECT_EQ(e.code, codes::kClosed);
  }
}

TEST(Control, IdleConnectionsAreReaped) {
  TempDir t;
  ServerOptions o;
  o.idle_timeout = 200ms;
  RunningServer rs(t.sock(), o);
  rs.start();
  int fd = raw_connect(t.sock());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(read_line(fd, 2000), "");  // EOF: closed by the server
  close(fd);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(rs.server->client_count(), 0u);
}

// Harden M2: a read-only member that pipelines requests and reads no answers makes the daemon
// answer a bounded number of them (its writes block), and every request is still answered,
// in order, once it reads. Before: every request read was answered at once (up to 1 MiB of
// input per wakeup), past 16 MiB of answers the connection was dropped.
TEST(Control, PipelinedFloodIsBoundedPerConnection) {
  TempDir t;
  ServerOptions o;
  o.socket_mode = 0666;
  o.reader_gid = 4242;
  RunningServer rs(t.sock(), o);
  std::atomic<long> handled{0};
  rs.server->add_command("dump", Access::ReadOnly, [&](const json&, const Peer&) {
    handled++;
    return json{{"blob", std::string(1000, 'x')}};
  });
  rs.start();
  int pfd[2];
  ASSERT_EQ(pipe(pfd), 0);
  std::string path = t.sock();
  std::atomic<long> handled_when_sent{-1};
  std::thread watcher([&] {  // the server's work when the member has sent all it could
    long n = 0;
    if (read(pfd[0], &n, sizeof n) == sizeof n) handled_when_sent = handled.load();
  });
  int rc = as_user(65534, 65534, {4242}, [&]() -> int {
    int fd = raw_connect(path);
    if (fd < 0) return 10;
    const std::string req = "{\"cmd\":\"dump\"}\n";
    long sent = 0;
    size_t off = 0;
    auto end = std::chrono::steady_clock::now() + 1s;
    while (std::chrono::steady_clock::now() < end) {  // flood for 1 s, never reading
      ssize_t n = send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno != EAGAIN) return 11;
        pollfd p{fd, POLLOUT, 0};
        poll(&p, 1, 10);
        continue;
      }
      off += (size_t)n;
      if (off == req.size()) off = 0, sent++;
    }
    while (off) {  // finish the last request
      ssize_t n = send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return 12;
      off = (off + (size_t)n) % req.size();
      if (!off) sent++;
    }
    (void)!write(pfd[1], &sent, sizeof sent);
    usleep(200 * 1000);
    for (long i = 0; i < sent; i++) {
      std::string line = read_line(fd, 5000);
      if (line.find("\"ok\":true") == std::string::npos) return 13;
    }
    close(fd);
    return 0;
  });
  close(pfd[1]);
  watcher.join();
  close(pfd[0]);
  EXPECT_EQ(rc, 0) << "not every request of the flood was answered (13) or the flood failed";
  EXPECT_GE(handled_when_sent.load(), 0);
  // 1 MiB of answers waiting plus what the socket buffers hold: ~1,000-2,000 answers of 1 KB
  EXPECT_LT(handled_when_sent.load(), 4000) << "answered while the client read nothing";
}

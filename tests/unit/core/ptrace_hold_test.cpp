// PtraceHolder on real processes: the test process traces its grandchild G, whose parent C
// plays the shell (waitpid WUNTRACED, as bash does for its foreground job). No root needed:
// a process may trace its descendants (Yama ptrace_scope 1).
#include "core/ptrace_hold.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace ab::core {
namespace {

using namespace std::chrono_literals;

struct Shared {
  std::atomic<uint64_t> ticks{0};   // G's three threads count up every ms
  std::atomic<int> usr1{0};         // SIGUSR1s G handled
  std::atomic<int> gpid{0};
  std::atomic<int> stops{0};        // WIFSTOPPED reports C's waitpid(WUNTRACED) saw
  std::atomic<int> done{0};         // C saw G end
  std::atomic<int> status{0};
};

Shared* g_shared = nullptr;

void on_usr1(int) { g_shared->usr1++; }

[[noreturn]] void run_g() {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGUSR1, on_usr1);
  auto spin = [] {
    for (;;) {
      g_shared->ticks++;
      usleep(1000);
    }
  };
  std::thread(spin).detach();
  std::thread(spin).detach();
  spin();
  _exit(0);
}

// C: forks G; if `trace`, traces it itself (a debugger); then waits on it as a shell does.
[[noreturn]] void run_c(bool trace) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pid_t g = fork();
  if (g == 0) run_g();
  if (trace) ptrace(PTRACE_SEIZE, g, nullptr, nullptr);
  g_shared->gpid = g;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(g, &st, WUNTRACED | WCONTINUED | (trace ? __WALL : 0));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) _exit(2);
    if (WIFSTOPPED(st)) {
      g_shared->stops++;
      if (trace) ptrace(PTRACE_CONT, g, nullptr, nullptr);
      continue;
    }
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
      g_shared->status = st;
      g_shared->done = 1;
      _exit(0);
    }
  }
}

template <class F>
bool wait_until(F f, std::chrono::milliseconds limit, PtraceHolder* h = nullptr) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (h) h->poll();
    if (f()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return f();
}

std::string states(int pid) {  // the state letter of every thread
  std::string out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream in(e.path() / "stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto p = s.rfind(')');
    if (p != std::string::npos && p + 2 < s.size()) out += s[p + 2];
  }
  return out;
}

class PtraceHoldTest : public ::testing::Test {
 protected:
  void SetUp() override {
    void* m = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(m, MAP_FAILED);
    g_shared = new (m) Shared();
  }
  void start(bool trace = false) {
    c_ = fork();
    ASSERT_GE(c_, 0);
    if (c_ == 0) run_c(trace);
    ASSERT_TRUE(wait_until([] { return g_shared->gpid.load() > 0 && g_shared->ticks.load() > 30; }, 5s));
    g_ = g_shared->gpid;
  }
  void TearDown() override {
    if (g_ > 0) kill(g_, SIGKILL);
    holder_.reset();  // detaches (and reaps) what is left
    if (c_ > 0) {
      int st;
      waitpid(c_, &st, 0);
    }
    munmap(g_shared, sizeof(Shared));
  }
  // G's threads make no progress for `d`
  bool still(std::chrono::milliseconds d) {
    const uint64_t t0 = g_shared->ticks;
    std::this_thread::sleep_for(d);
    return g_shared->ticks == t0;
  }
  int hold(PtraceHold* h) {
    int rc = holder_->hold(static_cast<uint32_t>(g_), 0, h);
    if (rc == -EPERM) skip_ = true;
    return rc;
  }

  pid_t c_ = -1, g_ = -1;
  bool skip_ = false;
  std::unique_ptr<PtraceHolder> holder_ = std::make_unique<PtraceHolder>();
};

TEST_F(PtraceHoldTest, HoldsEveryThreadUnseenByTheParentAndLetsGo) {
  start();
  PtraceHold h;
  int rc = hold(&h);
  if (skip_) GTEST_SKIP() << "ptrace not permitted here";
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(wait_until([&] { return states(g_) == "ttt"; }, 2s, holder_.get())) << states(g_);
  EXPECT_TRUE(still(200ms)) << "a held thread ran";
  EXPECT_TRUE(holder_->held(static_cast<uint32_t>(g_)));
  // a signal sent while held waits, and is delivered once let go
  kill(g_, SIGUSR1);
  EXPECT_TRUE(still(100ms));
  EXPECT_EQ(g_shared->usr1.load(), 0);
  h.reset();
  EXPECT_EQ(holder_->holding(), 0u);
  ASSERT_TRUE(wait_until([] { return g_shared->usr1.load() == 1; }, 2s, holder_.get()));
  EXPECT_FALSE(still(100ms)) << "not running again after the release";
  EXPECT_EQ(g_shared->stops.load(), 0) << "the parent's waitpid(WUNTRACED) saw a stop";
  EXPECT_EQ(holder_->pending(), 0u);
}

TEST_F(PtraceHoldTest, TwoHandlesOneHold) {
  start();
  PtraceHold a, b;
  int rc = hold(&a);
  if (skip_) GTEST_SKIP() << "ptrace not permitted here";
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(hold(&b), 0);
  ASSERT_TRUE(wait_until([&] { return states(g_) == "ttt"; }, 2s, holder_.get()));
  a.reset();
  EXPECT_TRUE(still(100ms)) << "let go while another hold is in force";
  PtraceHold moved = std::move(b);
  EXPECT_FALSE(b);
  moved.reset();
  EXPECT_FALSE(still(100ms));
  EXPECT_EQ(g_shared->stops.load(), 0);
}

TEST_F(PtraceHoldTest, AKilledHeldProcessDiesAndItsParentSeesIt) {
  start();
  PtraceHold h;
  int rc = hold(&h);
  if (skip_) GTEST_SKIP() << "ptrace not permitted here";
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(wait_until([&] { return states(g_) == "ttt"; }, 2s, holder_.get()));
  kill(g_, SIGKILL);
  // the tracer reaps the traced threads (poll); only then does the parent see the exit
  ASSERT_TRUE(wait_until([] { return g_shared->done.load() == 1; }, 3s, holder_.get()))
      << "the parent never saw its killed child end";
  EXPECT_TRUE(WIFSIGNALED(g_shared->status.load()) && WTERMSIG(g_shared->status.load()) == SIGKILL);
  EXPECT_EQ(g_shared->stops.load(), 0);
  EXPECT_GE(holder_->counters().threads_reaped, 1u);
  h.reset();  // of a dead process: nothing to do
  EXPECT_EQ(holder_->pending(), 0u);
  g_ = -1;
}

TEST_F(PtraceHoldTest, AProcessTracedAlreadyIsNotHeld) {
  start(/*trace=*/true);
  PtraceHold h;
  int rc = hold(&h);
  EXPECT_EQ(rc, -EBUSY);
  EXPECT_FALSE(h);
  EXPECT_FALSE(still(100ms)) << "refused, yet it stopped";
  EXPECT_EQ(holder_->counters().refused_traced, 1u);
}

TEST_F(PtraceHoldTest, AnotherProcessAtThePidIsNotHeld) {
  start();
  PtraceHold h;
  // a start time that is not G's: a reused pid
  EXPECT_EQ(holder_->hold(static_cast<uint32_t>(g_), 12345, &h), -ESRCH);
  EXPECT_FALSE(h);
  EXPECT_FALSE(still(100ms));
}

TEST_F(PtraceHoldTest, OnlyTheTracerThreadHolds) {
  start();
  int rc = 0;
  PtraceHold h;
  std::thread([&] { rc = holder_->hold(static_cast<uint32_t>(g_), 0, &h); }).join();
  EXPECT_EQ(rc, -EINVAL);
  EXPECT_FALSE(h);
}

TEST_F(PtraceHoldTest, TheHoldersEndLetsEverythingGo) {
  start();
  PtraceHold h;
  int rc = hold(&h);
  if (skip_) GTEST_SKIP() << "ptrace not permitted here";
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(wait_until([&] { return states(g_) == "ttt"; }, 2s, holder_.get()));
  h = PtraceHold();  // (handles end before their holder)
  holder_.reset();
  EXPECT_FALSE(still(100ms));
}

}  // namespace
}  // namespace ab::core

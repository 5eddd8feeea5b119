#include "core/resolver.h"

#include <netdb.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

namespace ab::core {

namespace {

// Test hook (tests/e2e): with AGENTBRAKE_TEST_RESOLVE_GATE=<path> in the daemon's environment,
// every look-up first waits until <path> exists (60 s at most), so that a test can keep one
// pending for as long as it needs; how long a real one takes depends on the resolver (CI has
// no DNS: quick or slow failures).
void wait_for_test_gate() {
  static const char* gate = std::getenv("AGENTBRAKE_TEST_RESOLVE_GATE");
  if (!gate || !*gate) return;
  for (int i = 0; i < 6000 && ::access(gate, F_OK) != 0; i++) ::usleep(10'000);
}

}  // namespace

std::vector<ab_endpoint_key> resolve_host_name(const std::string& host, std::string* error) {
  std::vector<ab_endpoint_key> out;
  wait_for_test_gate();
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    *error = host + ": " + gai_strerror(rc);
    return out;
  }
  for (auto* ai = res; ai; ai = ai->ai_next) {
    ab_endpoint_key e{};
    if (ai->ai_family == AF_INET) {
      e.family = AF_INET;
      std::memcpy(e.addr, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, 4);
    } else if (ai->ai_family == AF_INET6) {
      e.family = AF_INET6;
      std::memcpy(e.addr, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, 16);
    } else {
      continue;
    }
    if (std::none_of(out.begin(), out.end(), [&](const ab_endpoint_key& x) {
          return x.family == e.family && std::memcmp(x.addr, e.addr, sizeof e.addr) == 0;
        }))
      out.push_back(e);
  }
  ::freeaddrinfo(res);
  return out;
}

struct Resolver::State {
  ResolveFn fn;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> queue;
  std::set<std::string> queued;  // in `queue` or being resolved
  std::vector<Result> done;
  bool busy = false;  // the worker is inside fn()
  bool stop = false;
  int efd = -1;

  ~State() {
    if (efd >= 0) ::close(efd);
  }

  void run() {
    std::unique_lock lk(mu);
    for (;;) {
      cv.wait(lk, [this] { return stop || !queue.empty(); });
      if (stop) return;
      std::string name = std::move(queue.front());
      queue.pop_front();
      busy = true;
      lk.unlock();
      Result r;
      r.name = name;
      try {
        r.addrs = fn(name, &r.error);
      } catch (const std::exception& e) {
        r.error = name + ": " + e.what();
      }
      lk.lock();
      busy = false;
      queued.erase(name);
      done.push_back(std::move(r));
      const uint64_t one = 1;
      if (efd >= 0 && ::write(efd, &one, sizeof one) < 0) {
        // the counter is full only if nobody reads: the results stay queued all the same
      }
    }
  }
};

Resolver::Resolver(ResolveFn fn) : st_(std::make_shared<State>()) {
  st_->fn = fn ? std::move(fn) : ResolveFn(resolve_host_name);
  st_->efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (st_->efd < 0) spdlog::error("resolver: eventfd failed");
}

Resolver::~Resolver() {
  std::unique_lock lk(st_->mu);
  st_->stop = true;
  st_->cv.notify_all();
  lk.unlock();
  // The worker is started detached (see submit): it holds its own reference to the state.
}

void Resolver::submit(const std::vector<std::string>& names) {
  std::lock_guard lk(st_->mu);
  bool any = false;
  for (const auto& n : names) {
    if (n.empty() || !st_->queued.insert(n).second) continue;
    st_->queue.push_back(n);
    any = true;
  }
  if (!any) return;
  if (!started_) {
    // Detached: a look-up in progress at shutdown must not hold the daemon's exit up (a
    // getaddrinfo cannot be interrupted); the thread keeps the state alive until it returns.
    std::thread([st = st_] { st->run(); }).detach();
    started_ = true;
  }
  st_->cv.notify_one();
}

std::vector<Resolver::Result> Resolver::take_results() {
  uint64_t n = 0;
  if (st_->efd >= 0) (void)!::read(st_->efd, &n, sizeof n);
  std::lock_guard lk(st_->mu);
  std::vector<Result> out;
  out.swap(st_->done);
  return out;
}

int Resolver::notify_fd() const { return st_->efd; }

size_t Resolver::pending() const {
  std::lock_guard lk(st_->mu);
  return st_->queued.size();
}

}  // namespace ab::core

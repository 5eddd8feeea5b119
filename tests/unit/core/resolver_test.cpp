// Endpoint names are resolved off the event loop: the loop only queues names (never blocks)
// and takes results when the resolver's eventfd is readable.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "core/endpoints.h"
#include "core/resolver.h"

using namespace ab::core;

namespace {

// A look-up that blocks until the test lets it go (shared: the worker may outlive the test).
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int calls = 0;
};

ab_endpoint_key v4(const char* a, uint16_t port = 0) {
  ab_endpoint_key k{};
  EXPECT_TRUE(endpoint_key_for(a, port, &k)) << a;
  return k;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

ab::policy::Endpoint ep(const char* host, uint16_t port) {
  ab::policy::Endpoint e;
  e.host = host;
  e.port = port;
  e.api = "openai";
  e.tls = true;
  return e;
}

}  // namespace

TEST(Resolver, SubmitReturnsWhileTheLookUpIsPendingAndTheResultArrivesOnTheEventfd) {
  auto gate = std::make_shared<Gate>();
  Resolver r([gate](const std::string& host, std::string* error) -> std::vector<ab_endpoint_key> {
    std::unique_lock lk(gate->mu);
    gate->calls++;
    gate->cv.wait(lk, [&] { return gate->open; });
    if (host == "nowhere.invalid") {
      *error = host + ": Name or service not known";
      return {};
    }
    return {v4("192.0.2.7")};
  });
  ASSERT_GE(r.notify_fd(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  r.submit({"llm.internal", "nowhere.invalid", "llm.internal"});  // the duplicate is merged
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500)) << "submit blocked";
  EXPECT_EQ(r.pending(), 2u);
  EXPECT_FALSE(readable(r.notify_fd(), 50)) << "a result before the look-up could end";
  EXPECT_TRUE(r.take_results().empty());
  r.submit({"llm.internal"});  // being resolved: not queued again
  EXPECT_EQ(r.pending(), 2u);
  {
    std::lock_guard lk(gate->mu);
    gate->open = true;
  }
  gate->cv.notify_all();
  std::vector<Resolver::Result> got;
  for (int i = 0; i < 100 && got.size() < 2; i++)
    if (readable(r.notify_fd(), 100))
      for (auto& x : r.take_results()) got.push_back(std::move(x));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].name, "llm.internal");
  EXPECT_TRUE(got[0].error.empty());
  ASSERT_EQ(got[0].addrs.size(), 1u);
  EXPECT_EQ(got[1].name, "nowhere.invalid");
  EXPECT_FALSE(got[1].error.empty());
  EXPECT_EQ(r.pending(), 0u);
  EXPECT_EQ(gate->calls, 2);
  EXPECT_FALSE(readable(r.notify_fd(), 0)) << "take_results drains the eventfd";
}

TEST(Resolver, DestroyedWhileALookUpHangs) {
  auto gate = std::make_shared<Gate>();
  auto r = std::make_unique<Resolver>([gate](const std::string&, std::string*) -> std::vector<ab_endpoint_key> {
    std::unique_lock lk(gate->mu);
    gate->calls++;
    gate->cv.notify_all();
    gate->cv.wait(lk, [&] { return gate->open; });
    return {};
  });
  r->submit({"hangs.invalid"});
  {
    std::unique_lock lk(gate->mu);
    ASSERT_TRUE(gate->cv.wait_for(lk, std::chrono::seconds(10), [&] { return gate->calls > 0; }));
  }
  const auto t0 = std::chrono::steady_clock::now();
  r.reset();  // must not wait for the look-up
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  {
    std::lock_guard lk(gate->mu);
    gate->open = true;  // lets the orphaned worker end
  }
  gate->cv.notify_all();
}

TEST(EndpointSet, NamesAreLeftToTheResolverAndItsResultsAddKeysWithTheirPorts) {
  EndpointSet s;
  auto names = s.set_policy({ep("127.0.0.1", 8443), ep("localhost", 8080), ep("LLM.internal", 443),
                             ep("llm.internal", 8443)});
  EXPECT_EQ(names, std::vector<std::string>{"llm.internal"});  // numeric and localhost need no look-up
  EXPECT_NE(s.find(v4("127.0.0.1", 8443)), nullptr);
  EXPECT_NE(s.find(v4("127.0.0.1", 8080)), nullptr);
  EXPECT_EQ(s.find(v4("192.0.2.7", 443)), nullptr);
  auto added = s.on_resolved("llm.internal", {v4("192.0.2.7")}).added;
  EXPECT_EQ(added.size(), 2u);  // one key per endpoint of that name
  ASSERT_NE(s.find(v4("192.0.2.7", 443)), nullptr);
  EXPECT_EQ(s.find(v4("192.0.2.7", 443))->host, "llm.internal");
  EXPECT_NE(s.find(v4("192.0.2.7", 8443)), nullptr);
  EXPECT_TRUE(s.on_resolved("llm.internal", {v4("192.0.2.7")}).added.empty()) << "known already";
  // a reload that keeps the name keeps what was resolved; one that drops it drops it, and a
  // late result for it adds nothing
  EXPECT_EQ(s.set_policy({ep("llm.internal", 443)}), std::vector<std::string>{"llm.internal"});
  EXPECT_NE(s.find(v4("192.0.2.7", 443)), nullptr);
  EXPECT_TRUE(s.set_policy({ep("10.0.0.1", 443)}).empty());
  EXPECT_EQ(s.find(v4("192.0.2.7", 443)), nullptr);
  EXPECT_TRUE(s.on_resolved("llm.internal", {v4("192.0.2.8")}).added.empty());
  EXPECT_EQ(s.find(v4("192.0.2.8", 443)), nullptr);
}

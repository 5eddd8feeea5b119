// telemetry/otlp_exporter.h: the bounded queue drops (counted) instead of blocking, a refused
// POST is retried with backoff and then accepted, the headers go with every POST, disable()
// drops what is queued.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "alerts/httplib_config.h"
#include "telemetry/otlp_exporter.h"

using namespace ab::telemetry;
using namespace std::chrono_literals;

namespace {

template <class Pred>
bool wait_until(Pred p, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return p();
}

struct Collector {
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::atomic<int> refuse_first{0};
  std::mutex mu;
  std::vector<std::string> bodies, auth;

  Collector() {
    server.Post("/v1/traces", [this](const httplib::Request& req, httplib::Response& res) {
      if (refuse_first.fetch_sub(1) > 0) {
        res.status = 503;
        return;
      }
      std::lock_guard lk(mu);
      bodies.push_back(req.body);
      auth.push_back(req.get_header_value("Authorization"));
      res.set_content("{}", "application/json");
    });
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    wait_until([this] { return server.is_running(); });
  }
  ~Collector() {
    server.stop();
    thread.join();
  }
  size_t accepted() {
    std::lock_guard lk(mu);
    return bodies.size();
  }
};

nlohmann::json span(int i) { return {{"name", "s" + std::to_string(i)}}; }

}  // namespace

TEST(OtlpExporter, FullQueueDropsAndCounts) {
  ExporterOptions o;
  o.queue_capacity = 2;
  o.flush_interval = 1h;  // nothing leaves the queue during the test
  OtlpExporter e({"http://127.0.0.1:1", {}, {}}, o);
  int accepted = 0;
  for (int i = 0; i < 5; i++) accepted += e.offer_span(span(i)) ? 1 : 0;
  EXPECT_EQ(accepted, 2);
  EXPECT_EQ(e.counters().spans_dropped, 3u);
  EXPECT_EQ(e.queued(), 2u);
  e.disable();  // what is queued is dropped too, and later offers
  EXPECT_EQ(e.counters().spans_dropped, 5u);
  EXPECT_FALSE(e.offer_span(span(9)));
  EXPECT_EQ(e.counters().spans_dropped, 6u);
}

TEST(OtlpExporter, RefusedPostIsRetriedThenAcceptedOnce) {
  Collector c;
  c.refuse_first = 2;
  ExporterOptions o;
  o.flush_interval = 20ms;
  o.first_retry_delay = 10ms;
  OtlpExporter e({"http://127.0.0.1:" + std::to_string(c.port), {{"Authorization", "Bearer t0ken"}}, {}}, o);
  e.offer_span(span(1));
  e.offer_span(span(2));
  ASSERT_TRUE(wait_until([&] { return e.counters().spans_exported == 2; })) << e.last_error();
  EXPECT_EQ(e.counters().retries, 2u);
  EXPECT_EQ(e.counters().export_failures, 2u);
  EXPECT_EQ(e.counters().spans_dropped, 0u);
  EXPECT_EQ(c.accepted(), 1u);  // one batch, accepted once
  EXPECT_EQ(c.auth[0], "Bearer t0ken");
  auto body = nlohmann::json::parse(c.bodies[0]);
  EXPECT_EQ(body["resourceSpans"][0]["scopeSpans"][0]["spans"].size(), 2u);
  EXPECT_TRUE(e.last_error().empty());
}

TEST(OtlpExporter, GivesUpAfterMaxAttemptsAndCountsTheDrop) {
  ExporterOptions o;
  o.flush_interval = 10ms;
  o.first_retry_delay = 5ms;
  o.max_attempts = 3;
  o.connect_timeout = 500ms;
  OtlpExporter e({"http://127.0.0.1:1", {}, {}}, o);  // nothing listens on port 1
  e.offer_span(span(1));
  ASSERT_TRUE(wait_until([&] { return e.counters().spans_dropped == 1; }));
  EXPECT_EQ(e.counters().export_failures, 3u);
  EXPECT_EQ(e.counters().retries, 2u);
  EXPECT_FALSE(e.last_error().empty());
}

TEST(OtlpExporter, StopsPromptlyWhileRetrying) {
  ExporterOptions o;
  o.flush_interval = 10ms;
  o.first_retry_delay = 1h;
  auto e = std::make_unique<OtlpExporter>(ExporterConfig{"http://127.0.0.1:1", {}, {}}, o);
  e->offer_span(span(1));
  ASSERT_TRUE(wait_until([&] { return e->counters().export_failures >= 1; }));
  auto t0 = std::chrono::steady_clock::now();
  e.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

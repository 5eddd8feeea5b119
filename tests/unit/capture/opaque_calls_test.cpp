#include "capture/opaque_calls.h"

#include <gtest/gtest.h>

namespace ab::capture {
namespace {

TEST(OpaqueEstimate, QuarterOfTheBytesPastTheOverhead) {
  auto e = estimate_tokens(kOpaqueRequestOverhead + 400, kOpaqueResponseOverhead + 4001);
  EXPECT_EQ(e.input_tokens, 100);
  EXPECT_EQ(e.output_tokens, 1001);  // rounded up
  auto z = estimate_tokens(10, 10);  // smaller than the overhead: nothing, never negative
  EXPECT_EQ(z.input_tokens, 0);
  EXPECT_EQ(z.output_tokens, 0);
}

TEST(OpaqueCallFill, EstimatedOpaqueTls) {
  OpaqueCall c;
  c.request_bytes = 1512;
  c.response_bytes = 784;
  c.complete = true;
  LlmCall call;
  fill_opaque_call(c, "anthropic", "api.anthropic.com", &call);
  EXPECT_TRUE(call.estimated);
  EXPECT_EQ(call.estimate_reason, "opaque_tls");
  EXPECT_EQ(call.provider, "anthropic");
  EXPECT_EQ(call.method, "POST");
  EXPECT_EQ(call.input_tokens, 250);
  EXPECT_EQ(call.output_tokens, 100);
  EXPECT_TRUE(call.complete);
  LlmCall g;
  fill_opaque_call(c, "gemini", "generativelanguage.googleapis.com", &g);
  EXPECT_EQ(g.provider, "google");
}

TEST(OpaqueTracker, NextRequestEndsThePreviousOne) {
  OpaqueTracker t;
  EXPECT_FALSE(t.on_request(7, 1, 300, 1000, 10).has_value());  // after the handshake
  EXPECT_EQ(t.open_requests(7), 1u);
  auto c = t.on_request(7, 1, 900, 2600, 50);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->request_bytes, 600u);
  EXPECT_EQ(c->response_bytes, 1600u);
  EXPECT_EQ(c->start_ns, 10u);
  EXPECT_EQ(c->end_ns, 50u);
  EXPECT_TRUE(c->complete);
  auto last = t.on_close(7, 1, 1500, 4000, 90);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->request_bytes, 600u);
  EXPECT_EQ(last->response_bytes, 1400u);
  EXPECT_EQ(t.open_requests(7), 0u);
  EXPECT_FALSE(t.on_close(7, 1, 1500, 4000, 95).has_value());  // reported once
}

TEST(OpaqueTracker, ConnectionsAndProcessesAreSeparate) {
  OpaqueTracker t;
  t.on_request(7, 1, 0, 0, 1);
  t.on_request(7, 2, 0, 0, 2);
  t.on_request(8, 1, 0, 0, 3);  // same cookie value, another process: another key
  EXPECT_EQ(t.open_requests(7), 2u);
  EXPECT_EQ(t.open_requests(8), 1u);
  auto ended = t.on_exit(7, 100);
  EXPECT_EQ(ended.size(), 2u);
  for (const auto& c : ended) EXPECT_FALSE(c.complete);
  EXPECT_EQ(t.open_requests(7), 0u);
  EXPECT_EQ(t.open_requests(8), 1u);
}

TEST(OpaqueTracker, QuietRequestsExpire) {
  OpaqueTracker t;
  t.on_request(7, 1, 0, 0, 100);
  t.on_request(7, 2, 0, 0, 500);
  auto ended = t.expire(600, 200);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].conn, 1u);
  EXPECT_EQ(t.open_requests(), 1u);
  // counters going backwards (bad input) never underflow
  auto c = t.on_request(7, 2, 0, 0, 700);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->request_bytes, 0u);
}

}  // namespace
}  // namespace ab::capture

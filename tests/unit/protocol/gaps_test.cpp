// Lost bytes (gap) anywhere in recorded exchanges: never a crash, exactly one exchange, marked
// capture_truncated; usage that arrives after the gap is still read; framing is kept.
#include <gtest/gtest.h>

#include <vector>

#include "protocol_test_util.h"

using namespace ab::protocol;
using namespace ab::protocol::test;

namespace {

size_t head_end(const std::string& s) { return s.find("\r\n\r\n") + 4; }

// Raw offset of the start of the SSE event that holds `marker`, looked up in the de-chunked
// body (a chunk-size line may split the marker in the raw bytes).
size_t event_start(const std::string& s, const std::string& marker) {
  size_t body = head_end(s);
  std::string decoded;
  std::vector<size_t> raw_at;
  if (s.find("Transfer-Encoding: chunked") == std::string::npos) {
    decoded = s.substr(body);
    for (size_t i = body; i < s.size(); ++i) raw_at.push_back(i);
  } else {
    size_t i = body;
    for (;;) {
      size_t eol = s.find("\r\n", i);
      size_t n = std::stoul(s.substr(i, eol - i), nullptr, 16);  // stops at ';'
      if (n == 0) break;
      for (size_t k = 0; k < n; ++k) {
        decoded += s[eol + 2 + k];
        raw_at.push_back(eol + 2 + k);
      }
      i = eol + 2 + n + 2;
    }
  }
  size_t m = decoded.find(marker);
  if (m == std::string::npos) return std::string::npos;
  size_t d = decoded.rfind("data:", m);
  size_t e = decoded.rfind("event:", m);
  if (e != std::string::npos && (d == std::string::npos || e > decoded.rfind("\n\n", m))) d = std::min(d, e);
  return raw_at[d];
}

struct GapCase {
  const char* name;
  const char* usage_marker;  // text inside the event that carries the final usage
  int64_t output_tokens;
};

class ResponseGaps : public ::testing::TestWithParam<GapCase> {};

TEST_P(ResponseGaps, AnywhereInTheBody) {
  const GapCase& g = GetParam();
  std::string rq = fixture(std::string(g.name) + ".req"), rs = fixture(std::string(g.name) + ".resp");
  const size_t body = head_end(rs);
  const size_t usage_at = event_start(rs, g.usage_marker);
  ASSERT_NE(usage_at, std::string::npos);
  for (size_t len : {1u, 5u, 40u, 200u}) {
    for (size_t i = body; i + len < rs.size(); ++i) {
      SCOPED_TRACE("gap of " + std::to_string(len) + " at " + std::to_string(i));
      Connection c;
      c.feed(Dir::Request, rq, 1);
      c.feed(Dir::Response, rs.substr(0, i), 2);
      c.gap(Dir::Response, len, 3);
      c.feed(Dir::Response, rs.substr(i + len), 4);
      c.close(5);
      auto xs = c.take_exchanges();
      ASSERT_EQ(xs.size(), 1u);
      const auto& call = xs[0].call;
      EXPECT_TRUE(call.capture_truncated);
      EXPECT_EQ(call.status, 200);
      EXPECT_EQ(call.response_bytes, rs.size());
      EXPECT_GT(call.input_tokens, 0);
      EXPECT_GT(call.output_tokens + call.input_tokens, 0);
      // a gap that ends well before the usage event (room for a chunk-size line and the blank
      // line that ends the damaged event) leaves the usage readable
      if (i + len + 12 < usage_at) {
        EXPECT_TRUE(call.usage_present);
        EXPECT_EQ(call.output_tokens, g.output_tokens);
        // only Anthropic splits usage over two events: losing message_start loses the input
        if (call.estimated) {
          EXPECT_EQ(call.estimate_reason, "partial_usage");
        }
      }
      EXPECT_EQ(c.stats().lost_bytes, len);
      if (HasFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Recorded, ResponseGaps,
                         ::testing::Values(GapCase{"openai_chat_sse", "\"choices\":[],\"usage\"", 10},
                                           GapCase{"anthropic_sse", "\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"", 15},
                                           GapCase{"gemini_sse", "\"candidatesTokenCount\":27", 39},
                                           GapCase{"openai_responses_sse", "\"type\":\"response.completed\"", 87}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace

TEST(Gaps, NdjsonStreamKeepsFinalLine) {
  std::string rq = fixture("ollama_chat_ndjson.req"), rs = fixture("ollama_chat_ndjson.resp");
  size_t at = rs.find("\" sky\"");
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.feed(Dir::Response, rs.substr(0, at), 2);
  c.gap(Dir::Response, 3, 3);
  c.feed(Dir::Response, rs.substr(at + 3), 4);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].call.complete);
  EXPECT_TRUE(xs[0].call.capture_truncated);
  EXPECT_EQ(xs[0].call.output_tokens, 282);
  EXPECT_EQ(xs[0].call.input_tokens, 26);
}

TEST(Gaps, JsonBodyUsageRescuedFromTheTail) {
  for (const char* n : {"openai_chat_json", "anthropic_json", "openai_responses_json", "gemini_json"}) {
    SCOPED_TRACE(n);
    std::string rq = fixture(std::string(n) + ".req"), rs = fixture(std::string(n) + ".resp");
    size_t at = head_end(rs) + 40;  // early in the body
    Connection c;
    c.feed(Dir::Request, rq, 1);
    c.feed(Dir::Response, rs.substr(0, at), 2);
    c.gap(Dir::Response, 30, 3);
    c.feed(Dir::Response, rs.substr(at + 30), 4);
    c.close(5);
    auto xs = c.take_exchanges();
    ASSERT_EQ(xs.size(), 1u);
    EXPECT_TRUE(xs[0].call.capture_truncated);
    EXPECT_TRUE(xs[0].call.usage_present);
    EXPECT_FALSE(xs[0].call.estimated);
    EXPECT_GT(xs[0].call.output_tokens, 0);
  }
}

TEST(Gaps, InsideRequestBodyKeepsFramingAndFindsModel) {
  // the model sits after the messages (Python SDK order): after a gap inside the messages the
  // scanner is lost, the tail fallback still finds it
  std::string body = R"({"messages":[{"role":"user","content":")" + std::string(20000, 'q') +
                     R"("}],"model":"gpt-4.1","stream":false})";
  std::string rq = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body;
  size_t at = rq.size() / 2;
  Connection c;
  c.feed(Dir::Request, rq.substr(0, at), 1);
  c.gap(Dir::Request, 5000, 2);
  c.feed(Dir::Request, rq.substr(at + 5000), 3);
  EXPECT_FALSE(c.request_in_progress());
  auto ri = c.take_requests();
  ASSERT_EQ(ri.size(), 1u);
  EXPECT_EQ(ri[0].model, "gpt-4.1");
  std::string resp_body = R"({"model":"gpt-4.1","usage":{"prompt_tokens":5003,"completion_tokens":2}})";
  c.feed(Dir::Response, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(resp_body.size()) + "\r\n\r\n" + resp_body, 4);
  // and the next request on the stream parses normally
  c.feed(Dir::Request, "GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n", 5);
  c.feed(Dir::Response, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 6);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_TRUE(xs[0].call.capture_truncated);
  EXPECT_EQ(xs[0].call.model, "gpt-4.1");
  EXPECT_EQ(xs[0].call.input_tokens, 5003);
  EXPECT_EQ(xs[0].call.request_bytes, rq.size());
  EXPECT_FALSE(xs[1].call.capture_truncated);
  EXPECT_EQ(c.stats().resyncs, 0u);
}

TEST(Gaps, LongerThanTheBodyResyncsAtTheNextRequest) {
  std::string body = R"({"messages":[],"model":"m"})";
  std::string rq = "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body;
  Connection c;
  c.feed(Dir::Request, rq.substr(0, rq.size() - 10), 1);
  c.gap(Dir::Request, 10 + 17, 2);  // the body's end and the start of a request we never see
  c.feed(Dir::Request, "Host: h\r\nContent-Length: 0\r\n\r\n", 3);  // its remainder: garbage
  c.feed(Dir::Request, "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body, 4);
  auto ri = c.take_requests();
  ASSERT_EQ(ri.size(), 2u);
  EXPECT_EQ(ri[1].model, "m");
  EXPECT_EQ(c.stats().resyncs, 1u);
}

TEST(Gaps, InResponseHeadersResyncs) {
  std::string rq = fixture("openai_chat_json.req"), rs = fixture("openai_chat_json.resp");
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.feed(Dir::Response, rs.substr(0, 20), 2);
  c.gap(Dir::Response, 30, 3);
  c.feed(Dir::Response, rs.substr(50), 4);
  // next exchange is intact
  c.feed(Dir::Request, rq, 5);
  c.feed(Dir::Response, rs, 6);
  c.close(7);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_TRUE(xs[0].call.capture_truncated);
  EXPECT_FALSE(xs[0].call.complete);
  EXPECT_TRUE(xs[0].call.estimated);
  EXPECT_GT(xs[0].call.input_tokens, 0);
  EXPECT_EQ(xs[1].call.input_tokens, 19);
  EXPECT_TRUE(xs[1].call.complete);
  EXPECT_FALSE(xs[1].call.capture_truncated);
}

TEST(Gaps, CompressedBodyAfterGapIsUnparsed) {
  std::string rq = fixture("openai_chat_gzip.req"), rs = fixture("openai_chat_gzip.resp");
  size_t at = head_end(rs) + 30;
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.feed(Dir::Response, rs.substr(0, at), 2);
  c.gap(Dir::Response, 20, 3);
  c.feed(Dir::Response, rs.substr(at + 20), 4);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].call.complete);  // framing held: the body ended where Content-Length said
  EXPECT_TRUE(xs[0].call.estimated);
  EXPECT_EQ(xs[0].call.estimate_reason, "unparsed_body");
  EXPECT_GT(xs[0].call.input_tokens, 0);
}

TEST(Gaps, LostStatusLineNeverShiftsResponses) {
  std::string rq = fixture("openai_chat_json.req"), rs = fixture("openai_chat_json.resp");
  std::string rq2 = fixture("anthropic_json.req"), rs2 = fixture("anthropic_json.resp");
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.gap(Dir::Response, 17, 2);  // "HTTP/1.1 200 OK\r\n" lost
  c.feed(Dir::Response, rs.substr(17), 3);
  c.feed(Dir::Request, rq2, 4);
  c.feed(Dir::Response, rs2, 5);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_EQ(xs[0].call.api, "openai");
  EXPECT_TRUE(xs[0].call.capture_truncated);
  EXPECT_FALSE(xs[0].call.complete);
  EXPECT_TRUE(xs[0].call.estimated);
  EXPECT_EQ(xs[1].call.api, "anthropic");
  EXPECT_EQ(xs[1].call.input_tokens, 40);  // the second response went to the second request
  EXPECT_FALSE(xs[1].call.capture_truncated);
}

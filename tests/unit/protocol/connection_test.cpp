// HTTP/1.1 behaviour of Connection: keep-alive, pipelining, 100-continue, chunked framing,
// bodiless responses, close-delimited bodies, HTTP/2, garbage and resync, gaps, limits.
#include <gtest/gtest.h>

#include <random>

#include "protocol_test_util.h"

using namespace ab::protocol;
using namespace ab::protocol::test;

namespace {

std::string http_req(const std::string& method, const std::string& path, const std::string& body,
                     const std::string& extra = "", const std::string& host = "api.openai.com") {
  std::string s = method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + extra;
  if (!body.empty() || method == "POST") s += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return s + "\r\n" + body;
}

std::string http_resp(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\n" + extra +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

const std::string kChatBody = R"({"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"})";
std::string chat_resp_body(int in, int out) {
  return R"({"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"}}],"usage":{"prompt_tokens":)" +
         std::to_string(in) + R"(,"completion_tokens":)" + std::to_string(out) + "}}";
}

struct Feeder {
  Connection c;
  uint64_t t = 1000;
  Feeder() = default;
  explicit Feeder(Connection::Options o) : c(std::move(o)) {}
  void req(std::string_view s) { c.feed(Dir::Request, s, t += 10); }
  void resp(std::string_view s) { c.feed(Dir::Response, s, t += 10); }
};

}  // namespace

TEST(Connection, KeepAliveManyExchanges) {
  Feeder f;
  for (int i = 0; i < 5; ++i) {
    f.req(http_req("POST", "/v1/chat/completions", kChatBody));
    f.resp(http_resp(200, chat_resp_body(10 + i, 20 + i)));
  }
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(xs[i].call.input_tokens, 10 + i);
    EXPECT_EQ(xs[i].call.output_tokens, 20 + i);
    EXPECT_TRUE(xs[i].call.complete);
    EXPECT_LT(xs[i].request_start_ns, xs[i].response_end_ns);
    EXPECT_GT(xs[i].call.latency_ms, 0);
  }
  EXPECT_EQ(f.c.stats().exchanges, 5u);
  EXPECT_EQ(f.c.stats().resyncs, 0u);
  EXPECT_EQ(f.c.stats().garbage_bytes, 0u);
}

TEST(Connection, KeepAliveRecordedMix) {
  // three recorded exchanges of different kinds on one stream, all at once then byte by byte
  std::string rq, rs;
  Feeder f;
  for (const char* n : {"openai_chat_sse", "anthropic_json", "openai_chat_gzip"}) {
    f.req(fixture(std::string(n) + ".req"));
    f.resp(fixture(std::string(n) + ".resp"));
  }
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 3u);
  EXPECT_EQ(xs[0].call.output_tokens, 10);
  EXPECT_TRUE(xs[0].call.stream);
  EXPECT_EQ(xs[1].call.input_tokens, 40);
  EXPECT_EQ(xs[2].call.model, "gpt-4o-mini");
  EXPECT_EQ(xs[2].call.input_tokens, 19);
}

TEST(Connection, PipelinedRequestsMatchedFifo) {
  Feeder f;
  f.req(http_req("POST", "/v1/chat/completions", kChatBody) + http_req("GET", "/v1/models", "") +
        http_req("POST", "/v1/chat/completions", kChatBody));
  EXPECT_EQ(f.c.awaiting_response(), 3u);
  f.resp(http_resp(200, chat_resp_body(1, 2)) + http_resp(200, R"({"data":[]})") +
         http_resp(200, chat_resp_body(3, 4)));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 3u);
  EXPECT_EQ(xs[0].call.input_tokens, 1);
  EXPECT_FALSE(xs[1].is_llm);
  EXPECT_EQ(xs[1].call.method, "GET");
  EXPECT_EQ(xs[2].call.input_tokens, 3);
  EXPECT_EQ(f.c.stats().non_llm_exchanges, 1u);
  EXPECT_EQ(f.c.awaiting_response(), 0u);
}

TEST(Connection, ExpectContinue) {
  Feeder f;
  std::string body = kChatBody;
  std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nExpect: 100-continue\r\n"
                     "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  f.req(head);
  EXPECT_TRUE(f.c.request_in_progress());
  f.resp("HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_TRUE(f.c.take_exchanges().empty());
  f.req(body);
  EXPECT_FALSE(f.c.request_in_progress());
  f.resp(http_resp(200, chat_resp_body(7, 8)));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.status, 200);
  EXPECT_EQ(xs[0].call.input_tokens, 7);
  EXPECT_EQ(xs[0].call.model, "gpt-4o-mini");
  EXPECT_GT(xs[0].call.response_bytes, 25u + 100u);  // the 100 Continue counts as response bytes
}

TEST(Connection, ChunkedRequestWithExtensionsAndTrailers) {
  Feeder f;
  std::string body = kChatBody;
  std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t i = 0; i < body.size(); i += 7) {
    std::string part = body.substr(i, 7);
    char hex[16];
    snprintf(hex, sizeof hex, "%zX", part.size());
    req += std::string(hex) + ";ext=\"x\"\r\n" + part + "\r\n";
  }
  req += "0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
  f.req(req);
  EXPECT_FALSE(f.c.request_in_progress());
  auto ri = f.c.take_requests();
  ASSERT_EQ(ri.size(), 1u);
  EXPECT_EQ(ri[0].model, "gpt-4o-mini");
  EXPECT_EQ(ri[0].message_count, 1);
  EXPECT_TRUE(ri[0].is_llm);
  f.resp(http_resp(200, chat_resp_body(5, 6)));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.request_bytes, req.size());
  EXPECT_EQ(xs[0].call.output_tokens, 6);
}

TEST(Connection, BodilessResponses) {
  Feeder f;
  f.req(http_req("HEAD", "/v1/models", ""));
  f.resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");  // HEAD: no body despite the length
  f.req(http_req("GET", "/x", ""));
  f.resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n");
  f.req(http_req("POST", "/v1/chat/completions", kChatBody));
  f.resp("HTTP/1.1 204 No Content\r\n\r\n");
  f.req(http_req("POST", "/v1/chat/completions", kChatBody));
  f.resp(http_resp(200, chat_resp_body(1, 1)));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 4u);
  EXPECT_EQ(xs[0].call.status, 200);
  EXPECT_EQ(xs[1].call.status, 304);
  EXPECT_EQ(xs[2].call.status, 204);
  EXPECT_TRUE(xs[2].call.complete);
  EXPECT_EQ(xs[3].call.input_tokens, 1);
  EXPECT_EQ(f.c.stats().garbage_bytes, 0u);
}

TEST(Connection, ResponseEndsAtClose) {
  Feeder f;
  f.req(http_req("POST", "/v1/chat/completions", kChatBody));
  f.resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n");
  f.resp(chat_resp_body(11, 12));
  EXPECT_TRUE(f.c.take_exchanges().empty());
  f.c.close(f.t += 10);
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].call.complete);
  EXPECT_EQ(xs[0].call.input_tokens, 11);
  EXPECT_FALSE(xs[0].call.estimated);
}

TEST(Connection, Http2PrefaceSwitchesToFrames) {
  // After the client preface the stream is read as HTTP/2 frames (h2_test.cpp): HTTP/1 text
  // that follows is not a request, and what cannot be a frame is counted, never parsed as one.
  Feeder f;
  f.req(std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string("\0\0\0\x04\0\0\0\0\0", 9));
  f.resp(std::string("\0\0\0\x04\0\0\0\0\0", 9));
  EXPECT_TRUE(f.c.http2());
  EXPECT_EQ(f.c.stats().h2_hpack_desync, 0u);
  f.req(http_req("POST", "/v1/chat/completions", kChatBody));  // not a frame
  f.c.close(f.t += 10);
  EXPECT_EQ(f.c.stats().http2_detected, 1u);
  EXPECT_TRUE(f.c.take_exchanges().empty());
  EXPECT_TRUE(f.c.take_requests().empty());
}

TEST(Connection, UpgradeStopsParsing) {
  Feeder f;
  f.req(http_req("GET", "/ws", "", "Upgrade: websocket\r\nConnection: Upgrade\r\n"));
  f.resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
  f.req("\x81\x85garbage frames POST /v1/chat/completions HTTP/1.1\r\n");
  EXPECT_EQ(f.c.stats().upgraded, 1u);
  EXPECT_GT(f.c.stats().unparsed_bytes, 0u);
}

TEST(Connection, GarbageThenResync) {
  Feeder f;
  std::mt19937 rng(42);
  std::string junk;
  for (int i = 0; i < 5000; ++i) junk += char(rng() % 256);
  f.req(junk + "\r\n");
  f.resp("leftover response bytes of an exchange we never saw\r\n");
  f.req(http_req("POST", "/v1/chat/completions", kChatBody));
  f.resp(http_resp(200, chat_resp_body(3, 4)));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.input_tokens, 3);
  EXPECT_GE(f.c.stats().garbage_bytes, 5000u);
  EXPECT_GE(f.c.stats().resyncs, 1u);
}

TEST(Connection, AttachMidConnection) {
  // The daemon starts while a request body is being written and its response streams back.
  std::string rq = fixture("openai_chat_sse.req"), rs = fixture("openai_chat_sse.resp");
  Feeder f;
  f.req(rq.substr(rq.size() / 2));
  f.resp(rs.substr(rs.size() / 3));
  EXPECT_TRUE(f.c.take_exchanges().empty());
  f.req(rq);
  f.resp(rs);
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.output_tokens, 10);
  EXPECT_TRUE(xs[0].call.complete);
  EXPECT_EQ(f.c.stats().resyncs, 2u);  // one per direction
}

TEST(Connection, OversizedHeaderBlockResyncs) {
  Connection::Options o;
  o.max_header_bytes = 4096;
  Feeder f(o);
  std::string big = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 200; ++i) big += "X-Filler-" + std::to_string(i) + ": " + std::string(40, 'x') + "\r\n";
  f.req(big + "\r\n");
  f.req(http_req("POST", "/v1/chat/completions", kChatBody));
  f.resp(http_resp(200, chat_resp_body(9, 9)));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.input_tokens, 9);
  EXPECT_EQ(f.c.stats().parse_errors, 1u);
  EXPECT_GE(f.c.stats().resyncs, 1u);
}

TEST(Connection, NoResponseIsEstimated) {
  Feeder f;
  f.req(http_req("POST", "/v1/messages", R"({"messages":[{"role":"user","content":")" + std::string(4000, 'a') +
                                              R"("}],"model":"claude-sonnet-4-5","max_tokens":64})"));
  EXPECT_EQ(f.c.awaiting_response(), 1u);
  f.c.close(f.t += 10);
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  const auto& c = xs[0].call;
  EXPECT_EQ(c.status, 0);
  EXPECT_FALSE(c.complete);
  EXPECT_TRUE(c.estimated);
  EXPECT_EQ(c.estimate_reason, "no_response");
  // 4000 chars of text + a few short strings: ≈ 1000 tokens
  EXPECT_GE(c.input_tokens, 1000);
  EXPECT_LE(c.input_tokens, 1020);
  EXPECT_EQ(c.output_tokens, 0);
  EXPECT_EQ(c.max_tokens, 64);
  EXPECT_EQ(c.provider, "openai");  // Host was api.openai.com in this synthetic request
}

TEST(Connection, ApiHintForUnknownPath) {
  Connection::Options o;
  o.api_hint = ApiKind::OpenAIChat;
  Feeder f(o);
  f.req(http_req("POST", "/generate", kChatBody, "", "10.0.0.5:9000"));
  f.resp(http_resp(200, chat_resp_body(2, 3)));
  f.req(http_req("GET", "/health", ""));
  f.resp(http_resp(200, "ok"));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_TRUE(xs[0].is_llm);
  EXPECT_EQ(xs[0].call.provider, "10.0.0.5:9000");
  EXPECT_EQ(xs[0].call.output_tokens, 3);
  EXPECT_FALSE(xs[1].is_llm);
  // management and embedding endpoints are never calls, even with a hint
  f.req(http_req("POST", "/api/pull", R"({"model":"llama3.2"})"));
  f.resp(http_resp(200, R"({"status":"success"})"));
  f.req(http_req("POST", "/v1/embeddings", R"({"model":"e","input":"x"})"));
  f.resp(http_resp(200, "{}"));
  xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_FALSE(xs[0].is_llm);
  EXPECT_FALSE(xs[1].is_llm);
}

TEST(Connection, RequestInProgressTracksTheStartLine) {
  Feeder f;
  EXPECT_FALSE(f.c.request_in_progress());
  f.req("PO");
  EXPECT_TRUE(f.c.request_in_progress());
  f.req("ST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{");
  EXPECT_TRUE(f.c.request_in_progress());
  f.req("}");
  EXPECT_FALSE(f.c.request_in_progress());
  f.req("xyz garbage");
  EXPECT_FALSE(f.c.request_in_progress());
}

TEST(Connection, RetryAfterAndRateLimitHeaders) {
  auto xs = run_split(fixture("anthropic_429.req"), fixture("anthropic_429.resp"));
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_DOUBLE_EQ(xs[0].call.retry_after_s, 17);
  EXPECT_EQ(xs[0].call.ratelimit.at("anthropic-ratelimit-tokens-remaining"), "399000");
  EXPECT_EQ(xs[0].call.ratelimit.count("request-id"), 0u);
  xs = run_split(fixture("openai_429.req"), fixture("openai_429.resp"));
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_DOUBLE_EQ(xs[0].call.retry_after_s, 20);  // HTTP-date, relative to the Date header
  EXPECT_EQ(xs[0].call.ratelimit.at("x-ratelimit-remaining-requests"), "0");
  Feeder f;
  f.req(http_req("POST", "/v1/chat/completions", kChatBody));
  f.resp(http_resp(429, R"({"error":{"type":"tokens","code":"rate_limit_exceeded"}})", "retry-after-ms: 250\r\n"));
  xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_DOUBLE_EQ(xs[0].call.retry_after_s, 0.25);
  EXPECT_EQ(xs[0].call.error_type, "tokens");
  EXPECT_FALSE(xs[0].call.estimated);
  EXPECT_EQ(xs[0].call.input_tokens, 0);
}

TEST(Connection, RequestInfoBeforeResponse) {
  Feeder f;
  std::string rq = fixture("anthropic_sse.req");
  f.req(rq.substr(0, rq.size() - 10));
  EXPECT_TRUE(f.c.take_requests().empty());
  EXPECT_TRUE(f.c.request_in_progress());
  f.req(rq.substr(rq.size() - 10));
  auto ri = f.c.take_requests();
  ASSERT_EQ(ri.size(), 1u);
  EXPECT_EQ(ri[0].model, "claude-sonnet-4-5");
  EXPECT_EQ(ri[0].max_tokens, 1024);
  EXPECT_TRUE(ri[0].stream);
  EXPECT_EQ(ri[0].provider, "anthropic");
  EXPECT_EQ(ri[0].request_bytes, rq.size());
  EXPECT_NE(ri[0].last_message_hash, 0u);
  EXPECT_FALSE(f.c.request_in_progress());
  EXPECT_EQ(f.c.awaiting_response(), 1u);
}

TEST(Connection, LastMessageHashIsAFingerprint) {
  auto hash_of = [](const std::string& body) {
    Feeder f;
    f.req(http_req("POST", "/v1/chat/completions", body));
    auto ri = f.c.take_requests();
    return ri.at(0).last_message_hash;
  };
  uint64_t a = hash_of(R"({"messages":[{"role":"user","content":"x"},{"role":"user","content":"same"}],"model":"m"})");
  uint64_t b = hash_of(R"({"model":"m2","messages":[{"role":"system","content":"y"},{"role":"user","content":"same"}]})");
  uint64_t c = hash_of(R"({"messages":[{"role":"user","content":"other"}],"model":"m"})");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Connection, SecretsNeverKept) {
  Feeder f;
  f.req(http_req("POST", "/v1beta/models/gemini-2.5-flash:generateContent?key=AIzaSECRET1&alt=json",
                 R"({"contents":[]})",
                 "Authorization: Bearer SECRET2\r\nX-Api-Key: SECRET3\r\napi-key: SECRET4\r\n"
                 "X-Goog-Api-Key: SECRET5\r\nCookie: a=SECRET6\r\nProxy-Authorization: Basic SECRET7\r\n",
                 "generativelanguage.googleapis.com"));
  f.resp(http_resp(200, R"({"usageMetadata":{"promptTokenCount":1}})", "Set-Cookie: s=SECRET8\r\n"));
  auto xs = f.c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  std::string all = xs[0].call.path;
  for (auto* hl : {&xs[0].request_headers, &xs[0].response_headers})
    for (auto& [k, v] : *hl) all += k + ":" + v + "\n";
  EXPECT_EQ(all.find("SECRET"), std::string::npos) << all;
  EXPECT_EQ(xs[0].call.path, "/v1beta/models/gemini-2.5-flash:generateContent?alt=json");
  EXPECT_EQ(xs[0].request_headers.size(), 2u);  // host, content-length
}

// HTTP/2 in Connection (h2_reader.h): frames built with nghttp2's deflater (one per direction,
// so later header blocks are HPACK-indexed against earlier ones, as real peers do).
#include <gtest/gtest.h>

#include <random>

#include "h2_test_util.h"
#include "protocol/h2_reader.h"
#include "protocol_test_util.h"

using namespace ab::protocol;
using namespace ab::protocol::test;

namespace {

using Hs = std::vector<std::pair<std::string, std::string>>;

const std::string kChatBody =
    R"({"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]})";

Hs chat_req_headers(const std::string& key = "sk-test-SECRET") {
  return {{":method", "POST"},
          {":scheme", "https"},
          {":authority", "api.openai.com"},
          {":path", "/v1/chat/completions"},
          {"content-type", "application/json"},
          {"authorization", "Bearer " + key},
          {"user-agent", "h2-test/1"}};
}

std::string sse_body(int in, int out) {
  return "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hel\"}}]}\n\n"
         "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n"
         "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":" +
         std::to_string(in) + ",\"completion_tokens\":" + std::to_string(out) + ",\"total_tokens\":" +
         std::to_string(in + out) + "}}\n\ndata: [DONE]\n\n";
}

Hs resp_headers() {
  return {{":status", "200"}, {"content-type", "text/event-stream"}, {"set-cookie", "sess=SECRETCOOKIE"},
          {"x-ratelimit-remaining-tokens", "999"}};
}

struct H2Pair {
  H2Writer client, server;
  std::string req, resp;
  H2Pair() {
    req = H2Writer::preface() + H2Writer::settings({{0x3, 100}, {0x4, 65535}});
    resp = H2Writer::settings({{0x3, 128}}) + H2Writer::settings_ack();
    req += H2Writer::settings_ack();
  }
  void request(uint32_t sid, const std::string& body, uint8_t pad = 0, size_t cont = 0, const std::string& key = "sk-test-SECRET") {
    req += client.headers(sid, chat_req_headers(key), false, pad, pad != 0, cont);
    req += H2Writer::data(sid, body, true, pad);
  }
  void response(uint32_t sid, int in, int out, uint8_t pad = 0) {
    resp += server.headers(sid, resp_headers(), false);
    const std::string b = sse_body(in, out);
    // the body in three DATA frames, the first padded
    const size_t a = b.size() / 3;
    resp += H2Writer::data(sid, b.substr(0, a), false, pad);
    resp += H2Writer::window_update(0, 1000);
    resp += H2Writer::data(sid, b.substr(a, a), false);
    resp += H2Writer::data(sid, b.substr(2 * a), true);
  }
};

void no_secrets(const Exchange& x) {
  for (auto& [k, v] : x.request_headers) {
    EXPECT_NE(k, "authorization");
    EXPECT_EQ(v.find("SECRET"), std::string::npos) << k;
  }
  for (auto& [k, v] : x.response_headers) {
    EXPECT_NE(k, "set-cookie");
    EXPECT_EQ(v.find("SECRET"), std::string::npos) << k;
  }
}

TEST(Http2, StreamingChatOneStream) {
  H2Pair p;
  p.request(1, kChatBody);
  p.response(1, 17, 5);
  auto xs = run_split(p.req, p.resp);
  ASSERT_EQ(xs.size(), 1u);
  const auto& x = xs[0];
  EXPECT_TRUE(x.is_llm);
  EXPECT_EQ(x.call.method, "POST");
  EXPECT_EQ(x.call.path, "/v1/chat/completions");
  EXPECT_EQ(x.call.host, "api.openai.com");
  EXPECT_EQ(x.call.provider, "openai");
  EXPECT_EQ(x.call.model, "gpt-4o-mini");
  EXPECT_EQ(x.call.status, 200);
  EXPECT_TRUE(x.call.stream);
  EXPECT_TRUE(x.call.complete);
  EXPECT_FALSE(x.call.estimated);
  EXPECT_EQ(x.call.input_tokens, 17);
  EXPECT_EQ(x.call.output_tokens, 5);
  EXPECT_GT(x.call.request_bytes, kChatBody.size());
  EXPECT_GT(x.call.response_bytes, sse_body(17, 5).size());
  no_secrets(x);
}

TEST(Http2, ByteByByteAndEverySplit) {
  H2Pair p;
  p.request(1, kChatBody, /*pad=*/7, /*cont=*/9);
  p.response(1, 3, 4, /*pad=*/200);
  auto xs = run_bytewise(p.req, p.resp);
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.input_tokens, 3);
  EXPECT_EQ(xs[0].call.output_tokens, 4);
  for (size_t cut = 1; cut < p.req.size(); cut += 7) {
    auto ys = run_split(p.req, p.resp, cut, (cut * 13) % p.resp.size());
    ASSERT_EQ(ys.size(), 1u) << cut;
    EXPECT_EQ(ys[0].call.input_tokens, 3) << cut;
    EXPECT_EQ(ys[0].call.output_tokens, 4) << cut;
    EXPECT_TRUE(ys[0].call.complete) << cut;
  }
}

TEST(Http2, ContinuationPaddingPriority) {
  H2Pair p;
  p.request(1, kChatBody, /*pad=*/30, /*cont=*/5);  // a block in many CONTINUATIONs
  p.response(1, 8, 9, 255);
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, p.req, ++t);
  c.feed(Dir::Response, p.resp, ++t);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.model, "gpt-4o-mini");
  EXPECT_EQ(xs[0].call.input_tokens, 8);
  EXPECT_EQ(xs[0].call.output_tokens, 9);
  EXPECT_EQ(c.stats().h2_hpack_desync, 0u);
  EXPECT_EQ(c.stats().h2_protocol_errors, 0u);
  no_secrets(xs[0]);
}

TEST(Http2, InterleavedStreamsAccountedApart) {
  H2Pair p;
  const std::string body3 =
      R"({"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"second"}]})";
  // both HEADERS first (the second block is indexed against the first: much smaller)
  const std::string h1 = p.client.headers(1, chat_req_headers(), false);
  const std::string h3 = p.client.headers(3, chat_req_headers(), false);
  EXPECT_LT(h3.size() + 25, h1.size());  // (authorization is a never-indexed literal both times)
  p.req += h1 + h3;
  p.req += H2Writer::data(3, body3.substr(0, 20), false) + H2Writer::data(1, kChatBody.substr(0, 10), false);
  p.req += H2Writer::data(1, kChatBody.substr(10), true) + H2Writer::data(3, body3.substr(20), true);
  // responses interleaved frame by frame, stream 3 ends first
  const std::string b1 = sse_body(100, 1), b3 = sse_body(200, 2);
  p.resp += p.server.headers(3, resp_headers(), false);  // (one deflater call per statement:
  p.resp += p.server.headers(1, resp_headers(), false);  //  the blocks must be made in order)
  p.resp += H2Writer::data(1, b1.substr(0, 40), false) + H2Writer::data(3, b3.substr(0, 50), false);
  p.resp += H2Writer::data(3, b3.substr(50), true) + H2Writer::data(1, b1.substr(40), true);
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, p.req, ++t);
  auto rs = c.take_requests();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].method, "POST");
  EXPECT_EQ(rs[0].model, "gpt-4o-mini");
  EXPECT_EQ(rs[1].model, "gpt-4o");
  EXPECT_EQ(c.awaiting_response(), 2u);
  EXPECT_FALSE(c.request_in_progress());
  c.feed(Dir::Response, p.resp, ++t);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  // in the order their responses ended
  EXPECT_EQ(xs[0].call.model, "gpt-4o");
  EXPECT_EQ(xs[0].call.input_tokens, 200);
  EXPECT_EQ(xs[0].call.output_tokens, 2);
  EXPECT_EQ(xs[1].call.model, "gpt-4o-mini");
  EXPECT_EQ(xs[1].call.input_tokens, 100);
  EXPECT_EQ(xs[1].call.output_tokens, 1);
  EXPECT_EQ(c.stats().h2_streams, 2u);
  EXPECT_EQ(c.awaiting_response(), 0u);
  for (auto& x : xs) no_secrets(x);
}

TEST(Http2, RequestInProgressUntilEndStream) {
  H2Pair p;
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, p.req, ++t);
  EXPECT_FALSE(c.request_in_progress());
  c.feed(Dir::Request, p.client.headers(1, chat_req_headers(), false), ++t);
  EXPECT_TRUE(c.request_in_progress());
  c.feed(Dir::Request, H2Writer::data(1, kChatBody, true), ++t);
  EXPECT_FALSE(c.request_in_progress());
  EXPECT_EQ(c.take_requests().size(), 1u);
}

TEST(Http2, HeaderTableSizeFromSettings) {
  // The server allows a larger table than the default 4096: the client's encoder announces it
  // (a dynamic table size update) and the decoder must have been told by the SETTINGS.
  H2Writer client(8192), server;
  std::string req = H2Writer::preface() + H2Writer::settings();
  std::string resp = H2Writer::settings({{0x1, 8192}});
  ASSERT_EQ(nghttp2_hd_deflate_change_table_size(client.def, 8192), 0);
  req += client.headers(1, chat_req_headers(), false) + H2Writer::data(1, kChatBody, true);
  resp += server.headers(1, resp_headers(), false) + H2Writer::data(1, sse_body(1, 2), true);
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, req.substr(0, 24 + 9), ++t);  // preface and SETTINGS
  c.feed(Dir::Response, resp.substr(0, 9 + 6), ++t);  // the server's SETTINGS come first
  c.feed(Dir::Request, req.substr(33), ++t);
  c.feed(Dir::Response, resp.substr(15), ++t);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.output_tokens, 2);
  EXPECT_EQ(c.stats().h2_hpack_desync, 0u);

  // Without those SETTINGS the same update is an HPACK error: counted, nothing misread.
  H2Writer client2(8192);
  ASSERT_EQ(nghttp2_hd_deflate_change_table_size(client2.def, 8192), 0);
  Connection d;
  d.feed(Dir::Request, H2Writer::preface() + client2.headers(1, chat_req_headers(), false), ++t);
  d.close(++t);
  EXPECT_EQ(d.stats().h2_hpack_desync, 1u);
  EXPECT_TRUE(d.take_exchanges().empty());
}

TEST(Http2, RstStreamEndsOneStreamOnly) {
  H2Pair p;
  p.request(1, kChatBody);
  p.request(3, kChatBody);
  p.resp += p.server.headers(1, resp_headers(), false) + H2Writer::data(1, sse_body(5, 0).substr(0, 60), false);
  p.resp += H2Writer::rst(1);
  p.response(3, 6, 7);
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, p.req, ++t);
  c.feed(Dir::Response, p.resp, ++t);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_FALSE(xs[0].call.complete);
  EXPECT_TRUE(xs[1].call.complete);
  EXPECT_EQ(xs[1].call.input_tokens, 6);
  EXPECT_EQ(xs[1].call.output_tokens, 7);
}

TEST(Http2, GoawayDropsStreamsAboveLast) {
  H2Pair p;
  p.request(1, kChatBody);
  p.request(3, kChatBody);
  p.resp += H2Writer::goaway(1);
  p.response(1, 2, 3);
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, p.req, ++t);
  c.feed(Dir::Response, p.resp, ++t);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_FALSE(xs[0].call.complete);  // stream 3: never processed by the server
  EXPECT_EQ(xs[0].call.status, 0);
  EXPECT_TRUE(xs[1].call.complete);
  EXPECT_EQ(xs[1].call.output_tokens, 3);
}

TEST(Http2, MidwayConnectionCountedNeverMisattributed) {
  // The daemon started after the handshake: the connection's first captured bytes are frames
  // whose header blocks refer to a dynamic table built before.
  H2Pair p;
  p.request(1, kChatBody);
  p.response(1, 1, 1);
  const std::string later_req = p.client.headers(3, chat_req_headers(), false) + H2Writer::data(3, kChatBody, true);
  const std::string later_resp = p.server.headers(3, resp_headers(), false) + H2Writer::data(3, sse_body(40, 41), true);
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, later_req, ++t);
  c.feed(Dir::Response, later_resp, ++t);
  c.close(++t);
  EXPECT_EQ(c.stats().http2_detected, 1u);
  EXPECT_EQ(c.stats().h2_hpack_desync, 1u);
  EXPECT_GT(c.stats().unparsed_bytes, 0u);
  EXPECT_TRUE(c.take_exchanges().empty());
  EXPECT_TRUE(c.take_requests().empty());
  EXPECT_FALSE(c.request_in_progress());

  // first bytes a response (the request was written before the daemon looked)
  Connection d;
  d.feed(Dir::Response, later_resp, ++t);
  d.feed(Dir::Request, later_req, ++t);
  d.close(++t);
  EXPECT_EQ(d.stats().h2_hpack_desync, 1u);
  EXPECT_TRUE(d.take_exchanges().empty());
}

TEST(Http2, GapInHeaderBlockDesyncsGapInDataDoesNot) {
  H2Pair p;
  p.request(1, kChatBody);
  std::string data_first = p.server.headers(1, resp_headers(), false);
  const std::string b = sse_body(9, 9);
  // one DATA frame; 30 bytes of its payload are lost (in the first event, not the usage)
  const std::string df = H2Writer::data(1, b, true);
  Connection c;
  uint64_t t = 1;
  c.feed(Dir::Request, p.req, ++t);
  c.feed(Dir::Response, p.resp + data_first + df.substr(0, 20), ++t);
  c.gap(Dir::Response, 30, ++t);
  c.feed(Dir::Response, df.substr(50), ++t);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].call.capture_truncated);
  EXPECT_EQ(xs[0].call.output_tokens, 9);
  EXPECT_EQ(c.stats().h2_hpack_desync, 0u);

  H2Pair q;
  const std::string h = q.client.headers(1, chat_req_headers(), false);
  Connection d;
  d.feed(Dir::Request, q.req + h.substr(0, 12), ++t);
  d.gap(Dir::Request, 5, ++t);
  d.feed(Dir::Request, h.substr(17) + H2Writer::data(1, kChatBody, true), ++t);
  d.close(++t);
  EXPECT_EQ(d.stats().h2_hpack_desync, 1u);
  EXPECT_TRUE(d.take_exchanges().empty());
}

TEST(Http2, SecretsNeverKeptEvenNeverIndexed) {
  H2Pair p;
  p.request(1, kChatBody, 0, 0, "sk-A-SECRET");
  p.request(3, kChatBody, 0, 0, "sk-B-SECRET");
  p.response(1, 1, 1);
  p.response(3, 1, 1);
  auto xs = run_split(p.req, p.resp);
  ASSERT_EQ(xs.size(), 2u);
  for (auto& x : xs) no_secrets(x);
}

TEST(Http2, PlausibleFrameRejectsHttp1) {
  EXPECT_FALSE(H2Reader::plausible_frame(H2Reader::Side::Client, "POST /v1/chat HTTP/1.1"));
  EXPECT_FALSE(H2Reader::plausible_frame(H2Reader::Side::Server, "HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(H2Reader::plausible_frame(H2Reader::Side::Server, H2Writer::settings({{0x3, 1}})));
  EXPECT_TRUE(H2Reader::plausible_frame(H2Reader::Side::Client, H2Writer::data(1, "x", true)));
  EXPECT_FALSE(H2Reader::plausible_frame(H2Reader::Side::Client, H2Writer::frame(0x1, 0x4, 2, "x")));
}

TEST(Http2, GarbageAfterPrefaceNeverCrashes) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; i++) {
    H2Pair p;
    p.request(1, kChatBody);
    p.response(1, 1, 2);
    std::string req = p.req, resp = p.resp;
    for (int k = 0; k < 4; k++) {
      resp[24 + rng() % (resp.size() - 24)] = char(rng());
      req[24 + rng() % (req.size() - 24)] = char(rng());
    }
    Connection c;
    uint64_t t = 1;
    for (size_t off = 0; off < std::max(req.size(), resp.size()); off += 97) {
      if (off < req.size()) c.feed(Dir::Request, std::string_view(req).substr(off, 97), ++t);
      if (off < resp.size()) c.feed(Dir::Response, std::string_view(resp).substr(off, 97), ++t);
    }
    c.close(++t);
    for (auto& x : c.take_exchanges()) {
      EXPECT_GE(x.call.input_tokens, 0);
      for (auto& h : x.request_headers) EXPECT_NE(h.first, "authorization");
      for (auto& h : x.response_headers) EXPECT_NE(h.first, "set-cookie");
    }
  }
}

}  // namespace

// JsonScanner, DocStream and ContentDecoder on their own; large bodies in bounded memory.
#include <gtest/gtest.h>
#include <zlib.h>

#include <random>

#include "protocol/codec.h"
#include "protocol/json_scan.h"
#include "protocol_test_util.h"

using namespace ab::protocol;
using namespace ab::protocol::test;

namespace {

ScanSpec spec() {
  ScanSpec s;
  s.capture = {"model", "usage", "message.usage", "n", "flag", "deep.a.b.c"};
  s.text_keys = {"content", "text"};
  s.hash_arrays = {"messages"};
  s.capture_cap = 64;
  return s;
}

const char* kDoc =
    R"( {"messages":[{"role":"user","content":"hello \"there\""},{"role":"assistant","content":["ab","cd"]}],)"
    R"("n":-12, "flag":true, "deep":{"a":{"b":{"c":[1,2,{"x":null}]}}},)"
    R"("message":{"usage":{"input_tokens":5}},"big":")" "0123456789012345678901234567890123456789"
    R"(0123456789012345678901234567890123456789", "usage":{"prompt_tokens":3},"model":"gpt\u00e9-4"} trailing)";

}  // namespace

TEST(JsonScanner, CapturesCountsAndStopsAtTheEnd) {
  ScanSpec s = spec();
  JsonScanner sc(&s);
  std::string doc = kDoc;
  size_t n = sc.feed(doc);
  ASSERT_TRUE(sc.done());
  EXPECT_EQ(doc.substr(n), " trailing");
  EXPECT_EQ(*sc.str("model"), "gpt\xc3\xa9-4");
  EXPECT_EQ(*sc.integer("n"), -12);
  EXPECT_EQ(*sc.boolean("flag"), true);
  EXPECT_EQ(*sc.raw("usage"), R"({"prompt_tokens":3})");
  EXPECT_EQ(*sc.raw("message.usage"), R"({"input_tokens":5})");
  EXPECT_EQ(*sc.raw("deep.a.b.c"), R"([1,2,{"x":null}])");
  EXPECT_FALSE(sc.has("big"));
  EXPECT_EQ(sc.array_len("messages"), 2);
  EXPECT_EQ(sc.array_len("n"), -1);
  EXPECT_TRUE(sc.top_is_string("model"));
  // text under "content": hello \"there\" (escapes count 1 byte each) + ab + cd
  EXPECT_EQ(sc.text_bytes(), 13u + 4u);
  EXPECT_NE(sc.last_element_hash(), 0u);
}

TEST(JsonScanner, SplitAnywhereGivesTheSameResult) {
  ScanSpec s = spec();
  std::string doc = kDoc;
  JsonScanner whole(&s);
  whole.feed(doc);
  for (size_t cut = 0; cut <= doc.size(); ++cut) {
    JsonScanner sc(&s);
    size_t n = sc.feed(std::string_view(doc).substr(0, cut));
    if (!sc.done()) n += sc.feed(std::string_view(doc).substr(cut));
    ASSERT_TRUE(sc.done()) << cut;
    EXPECT_EQ(n, whole.bytes()) << cut;
    EXPECT_EQ(*sc.raw("usage"), *whole.raw("usage")) << cut;
    EXPECT_EQ(*sc.raw("deep.a.b.c"), *whole.raw("deep.a.b.c")) << cut;
    EXPECT_EQ(*sc.str("model"), *whole.str("model")) << cut;
    EXPECT_EQ(sc.text_bytes(), whole.text_bytes()) << cut;
    EXPECT_EQ(sc.string_bytes(), whole.string_bytes()) << cut;
    EXPECT_EQ(sc.last_element_hash(), whole.last_element_hash()) << cut;
  }
}

TEST(JsonScanner, RejectsInvalid) {
  for (const char* bad : {"{\"a\" 1}", "[1,,2", "{\"a\":1]", "}", "{1:2}", "<html>"}) {
    JsonScanner sc;
    sc.feed(bad);
    EXPECT_TRUE(sc.failed()) << bad;
  }
  JsonScanner num;
  num.feed("42");
  EXPECT_FALSE(num.done());
  num.finish();
  EXPECT_TRUE(num.done());
}

TEST(JsonScanner, DeepNestingIsBounded) {
  JsonScanner sc;
  std::string deep(100000, '[');
  sc.feed(deep);
  EXPECT_TRUE(sc.failed());
}

TEST(Hasher, SplitInvariant) {
  std::string s(1000, 'x');
  for (size_t i = 0; i < s.size(); ++i) s[i] = char(i * 7);
  uint64_t h = hash_bytes(s);
  for (size_t cut = 0; cut <= 40; ++cut) {
    Hasher a;
    a.update(std::string_view(s).substr(0, cut));
    a.update(std::string_view(s).substr(cut));
    EXPECT_EQ(a.final(), h);
  }
  EXPECT_NE(hash_bytes("a"), hash_bytes("b"));
  EXPECT_NE(hash_bytes(std::string(8, '\0')), hash_bytes(std::string(9, '\0')));
}

namespace {
struct Collect : DocSink {
  std::vector<std::string> events, models;
  int bad = 0;
  void on_doc(std::string_view ev, std::string_view head, const JsonScanner& d) override {
    events.emplace_back(ev);
    if (d.failed() || !d.done()) {
      ++bad;
      return;
    }
    models.push_back(d.str("model").value_or("?"));
  }
};
}  // namespace

TEST(DocStream, SseFieldsCommentsAndLineEndings) {
  ScanSpec s = spec();
  Collect c;
  DocStream ds(Framing::Sse, &s, &c);
  std::string in =
      ": comment\r\nevent: a\r\ndata: {\"model\":\"m1\"}\r\n\r\n"
      "id: 7\nretry: 10\ndata:{\"model\":\n"
      "data: \"m2\"}\n\n"
      "event: b\rdata: {\"model\":\"m3\"}\r\r"
      "data: [DONE]\n\n"
      "data: {\"model\":\"m4\"}";  // no final blank line: dispatched at finish()
  for (size_t i = 0; i < in.size(); ++i) ds.feed(in.substr(i, 1));
  ds.finish();
  ASSERT_EQ(c.events.size(), 5u);
  EXPECT_EQ(c.events[0], "a");
  EXPECT_EQ(c.events[2], "b");
  EXPECT_EQ(c.models, (std::vector<std::string>{"m1", "m2", "m3", "m4"}));
  EXPECT_EQ(c.bad, 1);  // [DONE]
}

TEST(DocStream, JsonArrayElements) {
  ScanSpec s = spec();
  Collect c;
  DocStream ds(Framing::JsonArray, &s, &c);
  std::string in = " [ {\"model\":\"a\"}\n,\r\n{\"model\":\"b\",\"x\":[1,{\"y\":\"]\"}]} ]";
  for (size_t i = 0; i < in.size(); ++i) ds.feed(in.substr(i, 1));
  ds.finish();
  EXPECT_EQ(c.models, (std::vector<std::string>{"a", "b"}));
}

TEST(DocStream, NdjsonRecoversAfterABadLine) {
  ScanSpec s = spec();
  Collect c;
  DocStream ds(Framing::Json, &s, &c);
  ds.feed("{\"model\":\"a\"}\n{\"model\" oops}\n{\"model\":\"c\"}\n");
  ds.finish();
  EXPECT_EQ(c.models, (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(c.bad, 1);
}

TEST(ContentDecoder, GzipMultiMemberAndCorruption) {
  auto gz = [](const std::string& s) {
    z_stream z{};
    deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    std::string out(s.size() + 256, '\0');
    z.next_in = (Bytef*)s.data();
    z.avail_in = s.size();
    z.next_out = (Bytef*)out.data();
    z.avail_out = out.size();
    deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    return out;
  };
  std::string data = gz("hello ") + gz("world");
  ContentDecoder d(ContentDecoder::Kind::Gzip);
  std::string out;
  for (char ch : data) ASSERT_TRUE(d.feed(std::string_view(&ch, 1), [&](std::string_view x) { out += x; }));
  EXPECT_EQ(out, "hello world");
  ContentDecoder bad(ContentDecoder::Kind::Gzip);
  EXPECT_FALSE(bad.feed("this is not gzip at all", [](std::string_view) {}));
  EXPECT_TRUE(bad.failed());
  EXPECT_EQ(ContentDecoder::kind_from_header("zstd"), ContentDecoder::Kind::Unsupported);
  EXPECT_EQ(ContentDecoder::kind_from_header(" GZIP "), ContentDecoder::Kind::Gzip);
}

// Harden M4: a gzip bomb stops at 64 MiB decoded (it was 1 GiB), and says so.
TEST(ContentDecoder, BombStopsAt64MiB) {
  EXPECT_EQ(ContentDecoder::max_output, 64ull << 20);
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string zeros(1 << 20, '\0'), bomb(1 << 20, '\0');
  z.next_out = (Bytef*)bomb.data();
  z.avail_out = bomb.size();
  for (int i = 0; i < 80; i++) {  // 80 MiB of zeros
    z.next_in = (Bytef*)zeros.data();
    z.avail_in = zeros.size();
    deflate(&z, i == 79 ? Z_FINISH : Z_NO_FLUSH);
  }
  bomb.resize(z.total_out);
  deflateEnd(&z);
  ContentDecoder d(ContentDecoder::Kind::Gzip);
  uint64_t got = 0;
  EXPECT_FALSE(d.feed(bomb, [&](std::string_view x) { got += x.size(); }));
  EXPECT_TRUE(d.failed());
  EXPECT_TRUE(d.too_large());
  EXPECT_LE(got, 64ull << 20);
  ContentDecoder bad(ContentDecoder::Kind::Gzip);
  bad.feed("not gzip", [](std::string_view) {});
  EXPECT_FALSE(bad.too_large());
}

TEST(BigBodies, OneMiBRequestWithModelAtTheEnd) {
  std::string body = R"({"messages":[)";
  int n = 0;
  while (body.size() < (1u << 20)) {
    if (n) body += ',';
    body += R"({"role":"user","content":"message )" + std::to_string(n++) + " " + std::string(500, 'w') +
            R"( \"quoted\" \u00e9\n"})";
  }
  body += R"(],"stream":true,"stream_options":{"include_usage":true},"max_tokens":4096,"model":"gpt-4o"})";
  std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\n"
                     "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  Connection c;
  uint64_t t = 0;
  c.feed(Dir::Request, head, ++t);
  for (size_t i = 0; i < body.size(); i += 16384) c.feed(Dir::Request, std::string_view(body).substr(i, 16384), ++t);
  auto ri = c.take_requests();
  ASSERT_EQ(ri.size(), 1u);
  EXPECT_EQ(ri[0].model, "gpt-4o");
  EXPECT_TRUE(ri[0].stream);
  EXPECT_EQ(ri[0].max_tokens, 4096);
  EXPECT_EQ(ri[0].message_count, n);
  c.close(++t);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  // ~1 MiB of text → ~262k tokens by bytes/4; the estimate leaves out the JSON punctuation
  EXPECT_EQ(xs[0].call.estimate_reason, "no_response");
  EXPECT_GT(xs[0].call.input_tokens, 230000);
  EXPECT_LT(xs[0].call.input_tokens, 262144);
}

TEST(BigBodies, MultiMegabyteSseStreamKeepsFinalUsage) {
  std::string rq = fixture("anthropic_sse.req");
  std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
  auto chunk = [](const std::string& s) {
    char hex[20];
    snprintf(hex, sizeof hex, "%zx\r\n", s.size());
    return std::string(hex) + s + "\r\n";
  };
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.feed(Dir::Response, head, 2);
  c.feed(Dir::Response, chunk("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":100,\"output_tokens\":1}}}\n\n"), 3);
  std::string delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"" +
                      std::string(1000, 'z') + "\"}}\n\n";
  const int kDeltas = 5000;  // ~5.5 MB
  for (int i = 0; i < kDeltas; ++i) c.feed(Dir::Response, chunk(delta), 4 + i);
  c.feed(Dir::Response, chunk("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":1250000}}\n\n") + "0\r\n\r\n", 99999);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.output_tokens, 1250000);
  EXPECT_EQ(xs[0].call.input_tokens, 100);
  EXPECT_EQ(xs[0].output_text_bytes, uint64_t(kDeltas) * 1000);
  EXPECT_GT(xs[0].call.response_bytes, 5'000'000u);
}

TEST(Estimates, StreamWithoutUsageCountsStreamedText) {
  auto xs = run_split(fixture("openai_chat_sse_nousage.req"), fixture("openai_chat_sse_nousage.resp"));
  ASSERT_EQ(xs.size(), 1u);
  const auto& c = xs[0].call;
  EXPECT_TRUE(c.estimated);
  EXPECT_EQ(c.estimate_reason, "stream_without_usage");
  EXPECT_EQ(xs[0].output_text_bytes, 21u);  // "Hello! Bonjour! Hola!"
  EXPECT_EQ(c.output_tokens, 6);
  // messages text: 5 strings, 61 bytes, + 3 per message → 16 + 6 = 22 tokens; real count ≈ 24
  EXPECT_GE(c.input_tokens, 15);
  EXPECT_LE(c.input_tokens, 30);
}

TEST(Estimates, UnsupportedEncodingIsUnparsed) {
  std::string rq = fixture("openai_chat_json.req");
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.feed(Dir::Response, "HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: 4\r\n\r\nabcd", 2);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].call.complete);
  EXPECT_TRUE(xs[0].call.estimated);
  EXPECT_EQ(xs[0].call.estimate_reason, "unparsed_body");
  EXPECT_GT(xs[0].call.input_tokens, 0);
}

TEST(Estimates, CutOffStream) {
  std::string rq = fixture("openai_chat_sse.req"), rs = fixture("openai_chat_sse.resp");
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.feed(Dir::Response, rs.substr(0, rs.size() / 2), 2);
  c.close(3);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_FALSE(xs[0].call.complete);
  EXPECT_TRUE(xs[0].call.estimated);
  EXPECT_EQ(xs[0].call.estimate_reason, "cut_off");
  EXPECT_GT(xs[0].call.input_tokens, 0);
}

TEST(Anthropic, ServerToolsFinalDeltaCarriesCumulativeInput) {
  std::string rq = fixture("anthropic_sse.req");
  std::string body =
      "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n"
      "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":7}}\n\n"
      "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":2500,\"cache_read_input_tokens\":100,\"output_tokens\":30,\"server_tool_use\":{\"web_search_requests\":1}}}\n\n"
      "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
  Connection c;
  c.feed(Dir::Request, rq, 1);
  c.feed(Dir::Response, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body, 2);
  auto xs = c.take_exchanges();
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.input_tokens, 2600);
  EXPECT_EQ(xs[0].call.cache_read_tokens, 100);
  EXPECT_EQ(xs[0].call.output_tokens, 30);  // latest, not 1 + 7 + 30
}

TEST(Robustness, RandomBytesAndSplitsNeverCrash) {
  std::mt19937 rng(7);
  std::vector<std::string> pieces = {fixture("openai_chat_sse.req"), fixture("openai_chat_sse.resp"),
                                     fixture("gemini_array.resp"), fixture("anthropic_sse_br.resp"),
                                     "PRI * HTTP/2.0\r\n", "HTTP/1.1 100 Continue\r\n\r\n", "0\r\n\r\n"};
  for (int round = 0; round < 300; ++round) {
    Connection c;
    for (int k = 0; k < 20; ++k) {
      std::string s = pieces[rng() % pieces.size()];
      if (rng() % 3 == 0) s[rng() % s.size()] = char(rng());
      size_t a = rng() % s.size(), b = a + rng() % (s.size() - a + 1);
      Dir d = rng() % 2 ? Dir::Request : Dir::Response;
      if (rng() % 10 == 0) c.gap(d, rng() % 5000, k);
      c.feed(d, s.substr(a, b - a), k);
    }
    c.close(100);
    for (auto& x : c.take_exchanges()) EXPECT_GE(x.call.input_tokens, 0);
  }
}

// AWS Bedrock: the event-stream framing (CRCs, any split, loss found and counted) and the four
// operations end to end through the HTTP/1.1 layer (tokens exact, model from the path, the
// service's usage headers, exceptions named).
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>
#include <utility>
#include <vector>

#include "protocol/eventstream.h"
#include "protocol_test_util.h"

using namespace ab::protocol;
using namespace ab::protocol::test;

namespace {

void put32(std::string& s, uint32_t v) {
  for (int sh = 24; sh >= 0; sh -= 8) s += static_cast<char>((v >> sh) & 0xff);
}
uint32_t crc(std::string_view s) { return uint32_t(::crc32(0, reinterpret_cast<const Bytef*>(s.data()), uInt(s.size()))); }

// One event-stream message with string headers.
std::string frame(const std::vector<std::pair<std::string, std::string>>& headers, const std::string& payload) {
  std::string h;
  for (const auto& [k, v] : headers) {
    h += static_cast<char>(k.size());
    h += k;
    h += static_cast<char>(7);
    h += static_cast<char>(v.size() >> 8);
    h += static_cast<char>(v.size() & 0xff);
    h += v;
  }
  std::string m;
  put32(m, uint32_t(12 + h.size() + payload.size() + 4));
  put32(m, uint32_t(h.size()));
  put32(m, crc(m));
  m += h;
  m += payload;
  put32(m, crc(m));
  return m;
}
std::string event(const std::string& type, const std::string& payload) {
  return frame({{":event-type", type}, {":content-type", "application/json"}, {":message-type", "event"}}, payload);
}
std::string exception(const std::string& type, const std::string& payload) {
  return frame({{":exception-type", type}, {":content-type", "application/json"}, {":message-type", "exception"}},
               payload);
}

std::string b64(std::string_view in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int sh = 18; sh >= 0; sh -= 6) out += k[(v >> sh) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}
std::string chunk(const std::string& inner_json) { return event("chunk", R"({"bytes":")" + b64(inner_json) + R"("})"); }

struct Decoded {
  std::vector<std::string> got;  // "event-type|payload"
  uint64_t bad = 0, skipped = 0;
  bool mid = false;
};
Decoded decode_all(std::string_view wire, size_t step) {
  Decoded r;
  EventStreamDecoder d([&](const EventStreamMessage& m) { r.got.push_back(m.event_type + "|" + std::string(m.payload)); });
  for (size_t i = 0; i < wire.size(); i += step) d.feed(wire.substr(i, step));
  r.bad = d.bad_frames();
  r.skipped = d.skipped_bytes();
  r.mid = d.mid_message();
  return r;
}

const std::string kHost = "bedrock-runtime.us-east-1.amazonaws.com";

std::string post(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: " + kHost +
         "\r\nContent-Type: application/json\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, "
         "Signature=deadbeef\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}
std::string chunked(const std::string& head, const std::string& body, size_t piece = 37) {
  std::string r = head + "Transfer-Encoding: chunked\r\n\r\n";
  for (size_t i = 0; i < body.size(); i += piece) {
    std::string p = body.substr(i, piece);
    char hex[16];
    snprintf(hex, sizeof hex, "%zx", p.size());
    r += std::string(hex) + "\r\n" + p + "\r\n";
  }
  return r + "0\r\n\r\n";
}
const std::string kStreamHead =
    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\nx-amzn-requestid: r1\r\n";
const std::string kConverseBody =
    R"({"messages":[{"role":"user","content":[{"text":"hello there"}]}],"inferenceConfig":{"maxTokens":256}})";

std::string converse_stream_body() {
  return event("messageStart", R"({"role":"assistant"})") +
         event("contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":"Hi! How can I help?"}})") +
         event("contentBlockStop", R"({"contentBlockIndex":0})") + event("messageStop", R"({"stopReason":"end_turn"})") +
         event("metadata", R"({"usage":{"inputTokens":25,"outputTokens":9,"totalTokens":64,"cacheReadInputTokens":20,)"
                           R"("cacheWriteInputTokens":10},"metrics":{"latencyMs":312}})");
}

ab::LlmCall only(const std::vector<Exchange>& xs) {
  EXPECT_EQ(xs.size(), 1u);
  return xs.empty() ? ab::LlmCall{} : xs[0].call;
}

}  // namespace

TEST(EventStream, MessagesAreTheSameForEverySplit) {
  const std::string wire = event("a", R"({"x":1})") + event("bb", "") + event("c", std::string(3000, 'z'));
  for (size_t step : {size_t(1), size_t(5), size_t(12), size_t(13), size_t(4096)}) {
    SCOPED_TRACE(step);
    auto r = decode_all(wire, step);
    ASSERT_EQ(r.got.size(), 3u);
    EXPECT_EQ(r.got[0], R"(a|{"x":1})");
    EXPECT_EQ(r.got[1], "bb|");
    EXPECT_EQ(r.got[2], "c|" + std::string(3000, 'z'));
    EXPECT_EQ(r.bad, 0u);
    EXPECT_FALSE(r.mid);
  }
}

TEST(EventStream, BadCrcIsCountedAndTheNextFrameIsFound) {
  std::string bad = event("lost", R"({"usage":1})");
  bad[bad.size() - 6] ^= 0x55;  // payload byte: the message CRC no longer matches
  std::string bad_prelude = event("lost2", "{}");
  bad_prelude[9] ^= 1;  // prelude CRC
  const std::string wire = event("first", "1") + bad + bad_prelude + "garbage!" + event("last", "2");
  for (size_t step : {size_t(1), size_t(7), size_t(100000)}) {
    SCOPED_TRACE(step);
    auto r = decode_all(wire, step);
    ASSERT_EQ(r.got.size(), 2u);
    EXPECT_EQ(r.got[0], "first|1");
    EXPECT_EQ(r.got[1], "last|2");
    EXPECT_EQ(r.bad, 1u);  // one run of lost bytes, counted once
    EXPECT_GT(r.skipped, bad.size());
  }
}

TEST(EventStream, OversizedOrMalformedHeadersAreNotMessages) {
  // a prelude claiming 1 GiB (with a correct prelude CRC) is no frame
  std::string huge;
  put32(huge, 1u << 30);
  put32(huge, 0);
  put32(huge, crc(huge));
  // a header with an unknown value type (10)
  std::string h = std::string(1, char(2)) + "xy" + char(10);
  std::string m;
  put32(m, uint32_t(12 + h.size() + 4));
  put32(m, uint32_t(h.size()));
  put32(m, crc(m));
  m += h;
  put32(m, crc(m));
  auto r = decode_all(huge + m + event("ok", "{}"), 3);
  ASSERT_EQ(r.got.size(), 1u);
  EXPECT_EQ(r.got[0], "ok|{}");
  EXPECT_EQ(r.bad, 1u);
}

TEST(EventStream, Base64) {
  std::string out;
  ASSERT_TRUE(base64_decode(b64("{\"type\":\"message_stop\"}"), out));
  EXPECT_EQ(out, "{\"type\":\"message_stop\"}");
  EXPECT_FALSE(base64_decode("ab$d", out));
  EXPECT_FALSE(base64_decode("a", out));
}

TEST(Bedrock, ClassifiedByPathWithTheModelDecoded) {
  EXPECT_EQ(classify_path("POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"),
            ApiKind::BedrockConverseStream);
  EXPECT_EQ(classify_path("POST", "/model/x/converse"), ApiKind::BedrockConverse);
  EXPECT_EQ(classify_path("POST", "/model/x/invoke"), ApiKind::BedrockInvoke);
  EXPECT_EQ(classify_path("POST", "/model/x/invoke-with-response-stream"), ApiKind::BedrockInvokeStream);
  EXPECT_EQ(classify_path("GET", "/model/x/converse"), std::nullopt);
  EXPECT_EQ(classify_path("POST", "/model/converse"), std::nullopt);
  EXPECT_EQ(bedrock_model_from_path("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "anthropic.claude-3-haiku-20240307-v1:0");
  EXPECT_EQ(bedrock_model_from_path("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse"),
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.x");
  EXPECT_STREQ(api_name(ApiKind::BedrockInvoke), "bedrock");
  EXPECT_EQ(provider_for_host("bedrock-runtime.eu-west-3.amazonaws.com", ApiKind::BedrockConverse), "aws");
  EXPECT_EQ(provider_for_host("bedrock-runtime-fips.us-east-1.amazonaws.com:443", ApiKind::OpenAIChat), "aws");
}

TEST(Bedrock, ConverseStreamTokensExactForEverySplit) {
  const std::string req = post("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream", kConverseBody);
  for (size_t piece : {size_t(1), size_t(37), size_t(100000)}) {
    SCOPED_TRACE(piece);
    auto c = only(run_split(req, chunked(kStreamHead, converse_stream_body(), piece)));
    EXPECT_EQ(c.api, "bedrock");
    EXPECT_EQ(c.provider, "aws");
    EXPECT_EQ(c.model, "anthropic.claude-3-haiku-20240307-v1:0");
    EXPECT_TRUE(c.stream);
    EXPECT_EQ(c.max_tokens, 256);
    EXPECT_TRUE(c.usage_present);
    EXPECT_FALSE(c.estimated) << c.estimate_reason;
    EXPECT_EQ(c.input_tokens, 25 + 20 + 10);
    EXPECT_EQ(c.cache_read_tokens, 20);
    EXPECT_EQ(c.cache_write_tokens, 10);
    EXPECT_EQ(c.output_tokens, 9);
    EXPECT_TRUE(c.complete);
  }
}

TEST(Bedrock, ConverseStreamCutBeforeMetadataIsEstimated) {
  std::string body = converse_stream_body();
  std::string resp = kStreamHead + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                     body.substr(0, body.size() - 40);
  auto c = only(run_split(post("/model/m/converse-stream", kConverseBody), resp));
  EXPECT_TRUE(c.estimated);
  EXPECT_EQ(c.estimate_reason, "cut_off");
  EXPECT_GE(c.output_tokens, 4);  // "Hi! How can I help?" streamed before the cut
  EXPECT_GE(c.input_tokens, 1);
}

TEST(Bedrock, ConverseStreamBadFrameIsCountedAndUsageStillRead) {
  std::string body = event("messageStart", R"({"role":"assistant"})");
  std::string bad = event("contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":"zz"}})");
  bad[20] ^= 0x40;
  body += bad + event("metadata", R"({"usage":{"inputTokens":7,"outputTokens":3,"totalTokens":10}})");
  Connection conn;
  uint64_t t = 1000;
  conn.feed(Dir::Request, post("/model/m/converse-stream", kConverseBody), t += 1000);
  conn.feed(Dir::Response, chunked(kStreamHead, body), t += 1000);
  conn.close(t += 1000);
  auto xs = conn.take_exchanges();
  auto c = only(xs);
  EXPECT_EQ(c.input_tokens, 7);
  EXPECT_EQ(c.output_tokens, 3);
  EXPECT_FALSE(c.estimated);
  EXPECT_EQ(conn.stats().eventstream_bad_frames, 1u);
  EXPECT_EQ(conn.stats().eventstream_frames, 2u);
}

TEST(Bedrock, ConverseStreamExceptionIsNamed) {
  std::string body = event("messageStart", R"({"role":"assistant"})") +
                     exception("throttlingException", R"({"message":"Too many requests"})");
  auto c = only(run_split(post("/model/m/converse-stream", kConverseBody), chunked(kStreamHead, body)));
  EXPECT_EQ(c.error_type, "throttlingException");
}

TEST(Bedrock, ConverseBody) {
  const std::string body =
      R"({"output":{"message":{"role":"assistant","content":[{"text":"Hello!"}]}},"stopReason":"end_turn",)"
      R"("usage":{"inputTokens":12,"outputTokens":4,"totalTokens":16},"metrics":{"latencyMs":200}})";
  auto c = only(run_split(post("/model/amazon.nova-lite-v1%3A0/converse", kConverseBody),
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body));
  EXPECT_EQ(c.model, "amazon.nova-lite-v1:0");
  EXPECT_FALSE(c.stream);
  EXPECT_EQ(c.input_tokens, 12);
  EXPECT_EQ(c.output_tokens, 4);
  EXPECT_FALSE(c.estimated);
}

TEST(Bedrock, InvokeModelHeadersAreTheServicesCount) {
  // Llama's own body has its own fields; the headers count every model family
  const std::string body = R"({"generation":"Hi","prompt_token_count":999,"generation_token_count":999})";
  auto c = only(run_split(post("/model/meta.llama3-8b-instruct-v1%3A0/invoke", R"({"prompt":"hello","max_gen_len":64})"),
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Amzn-Bedrock-Input-Token-Count: 31\r\n"
                          "X-Amzn-Bedrock-Output-Token-Count: 5\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body));
  EXPECT_EQ(c.input_tokens, 31);
  EXPECT_EQ(c.output_tokens, 5);
  EXPECT_FALSE(c.estimated);
}

TEST(Bedrock, InvokeModelClaudeBodyAndHeadersAgreeWithCacheHeaders) {
  const std::string body =
      R"({"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],)"
      R"("usage":{"input_tokens":40,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":6}})";
  auto c = only(run_split(
      post("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke",
           R"({"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"hi"}]})"),
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Amzn-Bedrock-Input-Token-Count: 40\r\n"
      "X-Amzn-Bedrock-Output-Token-Count: 6\r\nX-Amzn-Bedrock-Cache-Read-Input-Token-Count: 100\r\n"
      "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  EXPECT_EQ(c.model, "anthropic.claude-3-5-sonnet-20240620-v1:0");
  EXPECT_EQ(c.max_tokens, 100);
  EXPECT_EQ(c.input_tokens, 140);
  EXPECT_EQ(c.cache_read_tokens, 100);
  EXPECT_EQ(c.output_tokens, 6);
}

TEST(Bedrock, InvokeModelNegativeHeaderIsNotBilled) {
  const std::string body = R"({"generation":"Hi"})";
  auto c = only(run_split(post("/model/m/invoke", R"({"prompt":"hello"})"),
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Amzn-Bedrock-Input-Token-Count: -5\r\n"
                          "X-Amzn-Bedrock-Output-Token-Count: 5\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body));
  EXPECT_TRUE(c.estimated);
  EXPECT_EQ(c.estimate_reason, "malformed_usage");
}

TEST(Bedrock, InvokeWithResponseStreamClaudeChunks) {
  std::string body =
      chunk(R"({"type":"message_start","message":{"id":"m","model":"claude","usage":{"input_tokens":18,"output_tokens":1}}})") +
      chunk(R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello world"}})") +
      chunk(R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}})") +
      chunk(R"({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":18,"outputTokenCount":7,)"
            R"("invocationLatency":500,"firstByteLatency":200}})");
  for (size_t piece : {size_t(1), size_t(64)}) {
    SCOPED_TRACE(piece);
    auto c = only(run_split(post("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream",
                                 R"({"anthropic_version":"bedrock-2023-05-31","max_tokens":50,"messages":[]})"),
                            chunked(kStreamHead, body, piece)));
    EXPECT_TRUE(c.stream);
    EXPECT_EQ(c.input_tokens, 18);
    EXPECT_EQ(c.output_tokens, 7);
    EXPECT_FALSE(c.estimated) << c.estimate_reason;
  }
}

TEST(Bedrock, TheSignatureNeverReachesTheRecord) {
  auto xs = run_split(post("/model/m/converse-stream", kConverseBody), chunked(kStreamHead, converse_stream_body()));
  ASSERT_EQ(xs.size(), 1u);
  for (const auto& [k, v] : xs[0].request_headers) {
    EXPECT_EQ(v.find("deadbeef"), std::string::npos) << k;
  }
}

TEST(VertexAnthropic, RawPredictIsAnAnthropicCallWithTheModelFromThePath) {
  const std::string path =
      "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict";
  EXPECT_EQ(classify_path("POST", path), ApiKind::AnthropicMessages);
  const std::string req_body =
      R"({"anthropic_version":"vertex-2023-10-16","stream":false,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]})";
  const std::string body = R"({"type":"message","usage":{"input_tokens":9,"output_tokens":2}})";
  std::string req = "POST " + path + " HTTP/1.1\r\nHost: us-east5-aiplatform.googleapis.com\r\nContent-Type: "
                    "application/json\r\nContent-Length: " + std::to_string(req_body.size()) + "\r\n\r\n" + req_body;
  auto c = only(run_split(req, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                                   std::to_string(body.size()) + "\r\n\r\n" + body));
  EXPECT_EQ(c.model, "claude-sonnet-4@20250514");
  EXPECT_EQ(c.provider, "google");
  EXPECT_EQ(c.input_tokens, 9);
  EXPECT_EQ(c.output_tokens, 2);
}

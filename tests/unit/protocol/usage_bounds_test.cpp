// Token counts the server sends are not trusted: a negative, fractional or absurd count marks
// the usage malformed, the call is estimated instead ("malformed_usage"), and a request's
// max_tokens past any real limit is clamped (reserving it would overflow a bucket's sums).
#include <gtest/gtest.h>

#include <string>

#include "protocol/adapter.h"
#include "protocol_test_util.h"

using namespace ab::protocol;
using namespace ab::protocol::test;

namespace {

std::string post(const std::string& path, const std::string& body, const std::string& host) {
  return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string ok(const std::string& body, const std::string& type = "application/json") {
  return "HTTP/1.1 200 OK\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

const std::string kPrompt = std::string(400, 'p');  // ≈ 100 input tokens estimated

ab::LlmCall one(const std::string& req, const std::string& resp) {
  auto xs = run_split(req, resp);
  EXPECT_EQ(xs.size(), 1u);
  return xs.empty() ? ab::LlmCall{} : xs[0].call;
}

ab::LlmCall openai_chat(const std::string& usage) {
  return one(post("/v1/chat/completions",
                  R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":")" + kPrompt + R"("}]})",
                  "api.openai.com"),
             ok(R"({"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,)"
                R"("message":{"role":"assistant","content":"hello there"}}],"usage":)" + usage + "}"));
}

void expect_estimated(const ab::LlmCall& c, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(c.usage_malformed);
  EXPECT_FALSE(c.usage_present);
  EXPECT_TRUE(c.estimated);
  EXPECT_EQ(c.estimate_reason, "malformed_usage");
  EXPECT_GE(c.input_tokens, 90);  // the estimate from the request, never the wire's number
  EXPECT_LE(c.input_tokens, 130);
  EXPECT_GE(c.output_tokens, 0);
  EXPECT_LE(c.output_tokens, 10);
  EXPECT_GE(c.cache_read_tokens, 0);
  EXPECT_GE(c.reasoning_tokens, 0);
}

}  // namespace

TEST(UsageBounds, OpenAiCountsInRangeAreBilledAsSent) {
  auto c = openai_chat(R"({"prompt_tokens":1000000000,"completion_tokens":0})");
  EXPECT_FALSE(c.usage_malformed);
  EXPECT_FALSE(c.estimated);
  EXPECT_EQ(c.input_tokens, kMaxTokenCount);
  auto d = openai_chat(R"({"prompt_tokens":12.0,"completion_tokens":3})");  // an integral number is a count
  EXPECT_FALSE(d.usage_malformed);
  EXPECT_EQ(d.input_tokens, 12);
  EXPECT_EQ(d.output_tokens, 3);
}

TEST(UsageBounds, OpenAiNegativeHugeFractionalOrNonNumericCountsAreEstimated) {
  expect_estimated(openai_chat(R"({"prompt_tokens":-999997440,"completion_tokens":5})"), "negative input");
  expect_estimated(openai_chat(R"({"prompt_tokens":10,"completion_tokens":-1})"), "negative output");
  expect_estimated(openai_chat(R"({"prompt_tokens":1000000001,"completion_tokens":5})"), "above the bound");
  expect_estimated(openai_chat(R"({"prompt_tokens":18446744073709551615,"completion_tokens":5})"), "uint64 max");
  expect_estimated(openai_chat(R"({"prompt_tokens":1e300,"completion_tokens":5})"), "a double past int64");
  expect_estimated(openai_chat(R"({"prompt_tokens":2.5,"completion_tokens":5})"), "fractional");
  expect_estimated(openai_chat(R"({"prompt_tokens":"12","completion_tokens":5})"), "a string");
  expect_estimated(openai_chat(R"({"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":-7}})"),
                   "negative cache read");
}

TEST(UsageBounds, AnthropicNegativeCountsAreEstimated) {
  auto c = one(post("/v1/messages",
                    R"({"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":")" + kPrompt +
                        R"("}]})",
                    "api.anthropic.com"),
               ok(R"({"id":"m","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text",)"
                  R"("text":"hello"}],"usage":{"input_tokens":10,"cache_read_input_tokens":-999999999,"output_tokens":4}})"));
  expect_estimated(c, "anthropic cache read");
}

TEST(UsageBounds, GeminiHugeCountsAreEstimated) {
  auto c = one(post("/v1beta/models/gemini-2.5-flash:generateContent",
                    R"({"contents":[{"role":"user","parts":[{"text":")" + kPrompt + R"("}]}]})",
                    "generativelanguage.googleapis.com"),
               ok(R"({"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"modelVersion":"gemini-2.5-flash",)"
                  R"("usageMetadata":{"promptTokenCount":9223372036854775807,"candidatesTokenCount":2}})"));
  expect_estimated(c, "gemini int64 max");
}

TEST(UsageBounds, OllamaNegativeCountsAreEstimated) {
  auto c = one(post("/api/chat",
                    R"({"model":"llama3","stream":false,"messages":[{"role":"user","content":")" + kPrompt + R"("}]})",
                    "localhost:11434"),
               ok(R"({"model":"llama3","message":{"role":"assistant","content":"hi"},"done":true,)"
                  R"("prompt_eval_count":-5,"eval_count":3})"));
  if (c.api != "ollama") GTEST_SKIP() << "this host is not classified as Ollama here (api=" << c.api << ")";
  expect_estimated(c, "ollama");
}

TEST(UsageBounds, MaxTokensPastAnyLimitIsClampedAndNegativeIsNone) {
  auto req = [](const std::string& mt) {
    return post("/v1/chat/completions",
                R"({"model":"gpt-4o-mini","max_tokens":)" + mt + R"(,"messages":[{"role":"user","content":"hi"}]})",
                "api.openai.com");
  };
  const std::string resp = ok(R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}})");
  EXPECT_EQ(one(req("9223372036854775807"), resp).max_tokens, kMaxTokenCount);
  EXPECT_EQ(one(req("-5"), resp).max_tokens, -1);
  EXPECT_EQ(one(req("256"), resp).max_tokens, 256);
}

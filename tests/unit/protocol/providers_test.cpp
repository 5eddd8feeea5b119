// The built-in OpenAI-compatible hosts on the wire: Azure OpenAI (api-key header, deployment
// paths), DeepSeek's cache-hit usage, Groq/OpenRouter prefixes, Anthropic's cache_creation
// split by TTL.
#include <gtest/gtest.h>

#include "protocol_test_util.h"

using namespace ab::protocol;
using namespace ab::protocol::test;

namespace {

std::string req(const std::string& path, const std::string& body, const std::string& host,
                const std::string& extra = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + extra +
         "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string resp(const std::string& body, const std::string& ctype = "application/json") {
  return "HTTP/1.1 200 OK\r\nContent-Type: " + ctype + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

// Everything of an exchange that is kept: path, host, model, both header lists.
std::string kept(const Exchange& x) {
  std::string all = x.call.path + "\n" + x.call.host + "\n" + x.call.model + "\n" + x.call.provider + "\n";
  for (auto* hl : {&x.request_headers, &x.response_headers})
    for (auto& [k, v] : *hl) all += k + ":" + v + "\n";
  return all;
}

}  // namespace

TEST(Providers, AzureOpenAIDeploymentWithApiKeyHeader) {
  const std::string body = R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":64})";  // no model: the deployment names it
  auto xs = run_split(
      req("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", body,
          "myres.openai.azure.com", "api-key: AZSECRETKEY0123456789\r\n"),
      resp(R"({"id":"c","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[],)"
           R"("usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,)"
           R"("prompt_tokens_details":{"cached_tokens":100}}})"));
  ASSERT_EQ(xs.size(), 1u);
  const auto& c = xs[0].call;
  EXPECT_EQ(c.api, "openai");
  EXPECT_EQ(c.provider, "myres.openai.azure.com");
  EXPECT_EQ(c.host, "myres.openai.azure.com");
  EXPECT_EQ(c.model, "gpt-4o-2024-08-06");
  EXPECT_EQ(c.input_tokens, 120);
  EXPECT_EQ(c.cache_read_tokens, 100);
  EXPECT_EQ(c.output_tokens, 30);
  EXPECT_EQ(c.max_tokens, 64);
  EXPECT_EQ(c.path, "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21");
  const std::string all = kept(xs[0]);
  EXPECT_EQ(all.find("AZSECRET"), std::string::npos) << all;
  for (const auto& [k, v] : xs[0].request_headers) EXPECT_NE(k, "api-key");
}

TEST(Providers, AzureResponsesAndLegacyCompletions) {
  auto r = run_split(req("/openai/responses?api-version=preview", R"({"model":"gpt-4.1","input":"x"})",
                         "myres.openai.azure.com", "API-Key: AZSECRET2\r\n"),
                     resp(R"({"object":"response","model":"gpt-4.1","usage":{"input_tokens":5,"output_tokens":7}})"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].call.input_tokens, 5);
  EXPECT_EQ(r[0].call.output_tokens, 7);
  EXPECT_EQ(kept(r[0]).find("AZSECRET"), std::string::npos);
  EXPECT_EQ(classify_path("POST", "/openai/deployments/d/completions?api-version=1"), ApiKind::OpenAICompletions);
}

TEST(Providers, DeepSeekCacheHitsAreCachedInput) {
  auto xs = run_split(
      req("/chat/completions", R"({"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]})",
          "api.deepseek.com", "Authorization: Bearer sk-DSSECRET\r\n"),
      resp(R"({"id":"x","object":"chat.completion","model":"deepseek-chat","choices":[],)"
           R"("usage":{"prompt_tokens":10000,"completion_tokens":500,"total_tokens":10500,)"
           R"("prompt_cache_hit_tokens":9000,"prompt_cache_miss_tokens":1000}})"));
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.input_tokens, 10000);  // hits + misses
  EXPECT_EQ(xs[0].call.cache_read_tokens, 9000);
  EXPECT_EQ(xs[0].call.output_tokens, 500);
  EXPECT_EQ(xs[0].call.provider, "api.deepseek.com");
  EXPECT_EQ(kept(xs[0]).find("DSSECRET"), std::string::npos);
}

TEST(Providers, DeepSeekStreamUsageChunk) {
  const std::string sse =
      "data: {\"id\":\"x\",\"model\":\"deepseek-reasoner\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"
      "data: {\"id\":\"x\",\"model\":\"deepseek-reasoner\",\"choices\":[],\"usage\":{\"prompt_tokens\":64,"
      "\"completion_tokens\":12,\"total_tokens\":76,\"prompt_cache_hit_tokens\":60,\"prompt_cache_miss_tokens\":4,"
      "\"completion_tokens_details\":{\"reasoning_tokens\":8}}}\n\n"
      "data: [DONE]\n\n";
  auto xs = run_split(req("/v1/chat/completions",
                          R"({"model":"deepseek-reasoner","stream":true,"stream_options":{"include_usage":true},"messages":[]})",
                          "api.deepseek.com"),
                      resp(sse, "text/event-stream"));
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].call.stream);
  EXPECT_EQ(xs[0].call.input_tokens, 64);
  EXPECT_EQ(xs[0].call.cache_read_tokens, 60);
  EXPECT_EQ(xs[0].call.output_tokens, 12);
  EXPECT_EQ(xs[0].call.reasoning_tokens, 8);
  EXPECT_FALSE(xs[0].call.estimated);
}

TEST(Providers, CachedTokensDetailWinsOverDeepSeekFields) {
  // Both forms present (a server that sends both): the OpenAI field is used, never summed.
  auto xs = run_split(req("/v1/chat/completions", R"({"model":"m","messages":[]})", "api.deepseek.com"),
                      resp(R"({"model":"m","usage":{"prompt_tokens":100,"completion_tokens":1,)"
                           R"("prompt_tokens_details":{"cached_tokens":40},"prompt_cache_hit_tokens":40,)"
                           R"("prompt_cache_miss_tokens":60}})"));
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.cache_read_tokens, 40);
}

TEST(Providers, OpenAICompatiblePrefixes) {
  struct Case {
    const char* host;
    const char* path;
  } cases[] = {
      {"openrouter.ai", "/api/v1/chat/completions"},
      {"api.groq.com", "/openai/v1/chat/completions"},
      {"api.mistral.ai", "/v1/chat/completions"},
      {"api.together.xyz", "/v1/chat/completions"},
      {"api.fireworks.ai", "/inference/v1/chat/completions"},
      {"api.x.ai", "/v1/chat/completions"},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.host);
    auto xs = run_split(req(k.path, R"({"model":"m","messages":[]})", k.host, "Authorization: Bearer SECRETX\r\n"),
                        resp(R"({"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}})"));
    ASSERT_EQ(xs.size(), 1u);
    EXPECT_EQ(xs[0].call.api, "openai");
    EXPECT_EQ(xs[0].call.provider, k.host);  // the host names an OpenAI-compatible provider
    EXPECT_EQ(xs[0].call.input_tokens, 3);
    EXPECT_EQ(xs[0].call.output_tokens, 4);
    EXPECT_EQ(kept(xs[0]).find("SECRETX"), std::string::npos);
  }
}

TEST(Providers, EndpointHintCountsAnUnknownPostOfAnOpenAICompatibleHost) {
  // Mistral's FIM endpoint is not a path classify_path knows; on a built-in endpoint the
  // connection has the "openai" hint (core/endpoints.cpp), so it is a call, usage read.
  Connection::Options o;
  o.api_hint = ApiKind::OpenAIChat;
  o.host_hint = "api.mistral.ai";
  auto xs = run_split(req("/v1/fim/completions", R"({"model":"codestral-latest","prompt":"def"})", "api.mistral.ai"),
                      resp(R"({"model":"codestral-latest","usage":{"prompt_tokens":6,"completion_tokens":9}})"),
                      std::string::npos, std::string::npos, o);
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].is_llm);
  EXPECT_EQ(xs[0].call.input_tokens, 6);
  EXPECT_EQ(xs[0].call.output_tokens, 9);
}

TEST(Providers, AnthropicCacheCreationSplitByTtl) {
  auto xs = run_split(
      req("/v1/messages", R"({"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]})", "api.anthropic.com",
          "x-api-key: sk-ant-SECRET\r\n"),
      resp(R"({"type":"message","model":"claude-sonnet-4-5-20250929","content":[],"usage":{"input_tokens":10,)"
           R"("cache_creation_input_tokens":30000,"cache_read_input_tokens":60000,"output_tokens":1000,)"
           R"("cache_creation":{"ephemeral_5m_input_tokens":10000,"ephemeral_1h_input_tokens":20000}}})"));
  ASSERT_EQ(xs.size(), 1u);
  const auto& c = xs[0].call;
  EXPECT_EQ(c.input_tokens, 90010);
  EXPECT_EQ(c.cache_write_tokens, 30000);
  EXPECT_EQ(c.cache_write_1h_tokens, 20000);
  EXPECT_EQ(c.cache_read_tokens, 60000);
  EXPECT_EQ(c.output_tokens, 1000);
  EXPECT_EQ(kept(xs[0]).find("SECRET"), std::string::npos);
}

TEST(Providers, AnthropicStreamCacheCreationFromMessageStart) {
  const std::string sse =
      "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\","
      "\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":700,\"cache_read_input_tokens\":0,"
      "\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":700},\"output_tokens\":1}}}\n\n"
      "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
      "\"usage\":{\"output_tokens\":42}}\n\n"
      "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
  auto xs = run_split(req("/v1/messages", R"({"model":"claude-haiku-4-5","stream":true,"max_tokens":50,"messages":[]})",
                          "api.anthropic.com"),
                      resp(sse, "text/event-stream"));
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.input_tokens, 705);
  EXPECT_EQ(xs[0].call.cache_write_tokens, 700);
  EXPECT_EQ(xs[0].call.cache_write_1h_tokens, 700);
  EXPECT_EQ(xs[0].call.output_tokens, 42);
}

TEST(Providers, AnthropicWithoutCacheCreationHasNoOneHourWrites) {
  auto xs = run_split(req("/v1/messages", R"({"model":"claude-3-5-haiku","max_tokens":10,"messages":[]})",
                          "api.anthropic.com"),
                      resp(R"({"type":"message","model":"claude-3-5-haiku-20241022","usage":{"input_tokens":10,)"
                           R"("cache_creation_input_tokens":300,"cache_read_input_tokens":0,"output_tokens":5}})"));
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.cache_write_tokens, 300);
  EXPECT_EQ(xs[0].call.cache_write_1h_tokens, 0);  // 5-minute TTL (the default) for all of them
}

TEST(Providers, VertexAnthropicRawPredictAndGemini) {
  // On the Vertex endpoint (gemini hint) each is read by its own path: Anthropic's body for
  // :rawPredict, Gemini's for :generateContent.
  Connection::Options o;
  o.api_hint = ApiKind::GeminiGenerate;
  auto xs = run_split(req("/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
                          R"({"anthropic_version":"vertex-2023-10-16","max_tokens":5,"messages":[]})",
                          "us-east5-aiplatform.googleapis.com"),
                      resp(R"({"type":"message","usage":{"input_tokens":3,"cache_creation_input_tokens":4,)"
                           R"("cache_read_input_tokens":0,"output_tokens":2,)"
                           R"("cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":4}}})"),
                      std::string::npos, std::string::npos, o);
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_TRUE(xs[0].is_llm);
  EXPECT_EQ(xs[0].call.api, "anthropic");
  EXPECT_EQ(xs[0].call.input_tokens, 7);
  EXPECT_EQ(xs[0].call.cache_write_1h_tokens, 4);
  EXPECT_EQ(xs[0].call.output_tokens, 2);
  auto g = run_split(req("/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent",
                         R"({"contents":[]})", "us-central1-aiplatform.googleapis.com"),
                     resp(R"({"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":5,"totalTokenCount":16}})"),
                     std::string::npos, std::string::npos, o);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_TRUE(g[0].is_llm);
  EXPECT_EQ(g[0].call.provider, "google");
  EXPECT_EQ(g[0].call.model, "gemini-2.5-pro");
  EXPECT_EQ(g[0].call.input_tokens, 11);
}

#include <gtest/gtest.h>

#include "protocol/classify.h"
#include "protocol/http_util.h"

using namespace ab::protocol;

TEST(Classify, Paths) {
  EXPECT_EQ(classify_path("POST", "/v1/chat/completions"), ApiKind::OpenAIChat);
  EXPECT_EQ(classify_path("POST", "/chat/completions"), ApiKind::OpenAIChat);
  EXPECT_EQ(classify_path("POST", "/api/v1/chat/completions"), ApiKind::OpenAIChat);  // OpenRouter
  EXPECT_EQ(classify_path("POST", "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"),
            ApiKind::OpenAIChat);
  EXPECT_EQ(classify_path("POST", "https://api.openai.com/v1/chat/completions"), ApiKind::OpenAIChat);
  EXPECT_EQ(classify_path("POST", "/v1/completions"), ApiKind::OpenAICompletions);
  EXPECT_EQ(classify_path("POST", "/openai/deployments/x/completions"), ApiKind::OpenAICompletions);
  EXPECT_EQ(classify_path("POST", "/v1/responses"), ApiKind::OpenAIResponses);
  EXPECT_EQ(classify_path("POST", "/v1/messages"), ApiKind::AnthropicMessages);
  EXPECT_EQ(classify_path("POST", "/v1/messages?beta=true"), ApiKind::AnthropicMessages);
  EXPECT_EQ(classify_path("POST", "/v1beta/models/gemini-2.5-flash:generateContent"), ApiKind::GeminiGenerate);
  EXPECT_EQ(classify_path("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
            ApiKind::GeminiGenerate);
  EXPECT_EQ(classify_path("POST", "/api/chat"), ApiKind::OllamaChat);
  EXPECT_EQ(classify_path("POST", "/api/generate"), ApiKind::OllamaGenerate);
  // not calls
  EXPECT_FALSE(classify_path("GET", "/v1/chat/completions"));
  EXPECT_FALSE(classify_path("GET", "/v1/models"));
  EXPECT_FALSE(classify_path("POST", "/v1/messages/count_tokens"));
  EXPECT_FALSE(classify_path("POST", "/v1beta/models/gemini-2.5-flash:countTokens"));
  EXPECT_FALSE(classify_path("POST", "/v1/embeddings"));
  EXPECT_FALSE(classify_path("POST", "/api/tags"));
  EXPECT_FALSE(classify_path("POST", "/v1/chat/completionsX"));
}

TEST(Classify, ApiNames) {
  EXPECT_STREQ(api_name(ApiKind::OpenAIResponses), "openai");
  EXPECT_STREQ(api_name(ApiKind::AnthropicMessages), "anthropic");
  EXPECT_STREQ(api_name(ApiKind::GeminiGenerate), "gemini");
  EXPECT_STREQ(api_name(ApiKind::OllamaGenerate), "ollama");
}

TEST(Classify, Providers) {
  EXPECT_EQ(provider_for_host("api.openai.com", ApiKind::OpenAIChat), "openai");
  EXPECT_EQ(provider_for_host("API.OpenAI.com:443", ApiKind::OpenAIChat), "openai");
  EXPECT_EQ(provider_for_host("api.anthropic.com", ApiKind::AnthropicMessages), "anthropic");
  EXPECT_EQ(provider_for_host("generativelanguage.googleapis.com", ApiKind::GeminiGenerate), "google");
  EXPECT_EQ(provider_for_host("europe-west4-aiplatform.googleapis.com", ApiKind::GeminiGenerate), "google");
  EXPECT_EQ(provider_for_host("localhost:11434", ApiKind::OpenAIChat), "ollama");
  EXPECT_EQ(provider_for_host("gpu-box:8080", ApiKind::OllamaChat), "ollama");
  EXPECT_EQ(provider_for_host("openrouter.ai", ApiKind::OpenAIChat), "openrouter.ai");
  EXPECT_EQ(provider_for_host("127.0.0.1:8443", ApiKind::OpenAIChat), "127.0.0.1:8443");
  EXPECT_EQ(provider_for_host("[::1]:8000", ApiKind::OpenAIChat), "[::1]:8000");
  EXPECT_EQ(provider_for_host("api.groq.com:443", ApiKind::OpenAIChat), "api.groq.com");
}

TEST(Classify, NormalizeHost) {
  EXPECT_EQ(normalize_host("Api.OpenAI.com:443"), "api.openai.com");
  EXPECT_EQ(normalize_host("localhost:80"), "localhost");
  EXPECT_EQ(normalize_host("localhost:11434"), "localhost:11434");
  EXPECT_EQ(normalize_host("[::1]:443"), "[::1]");
  EXPECT_EQ(normalize_host("[::1]:8080"), "[::1]:8080");
  EXPECT_EQ(normalize_host("example.com."), "example.com");
}

TEST(Classify, GeminiModelFromPath) {
  EXPECT_EQ(gemini_model_from_path("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"), "gemini-2.5-pro");
  EXPECT_EQ(gemini_model_from_path("/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent"),
            "gemini-2.0-flash");
}

TEST(HttpUtil, StartLines) {
  EXPECT_TRUE(looks_like_request_line("POST /v1/messages HTTP/1.1"));
  EXPECT_TRUE(looks_like_request_line("GET / HTTP/1.0"));
  EXPECT_TRUE(looks_like_request_line("OPTIONS * HTTP/1.1"));
  EXPECT_FALSE(looks_like_request_line("POST /v1/messages HTTP/2.0"));
  EXPECT_FALSE(looks_like_request_line("FOO /x HTTP/1.1"));
  EXPECT_FALSE(looks_like_request_line("post /x HTTP/1.1"));
  EXPECT_FALSE(looks_like_request_line("POST x HTTP/1.1"));
  EXPECT_FALSE(looks_like_request_line("data: POST /x HTTP/1.1"));
  EXPECT_TRUE(looks_like_status_line("HTTP/1.1 200 OK"));
  EXPECT_TRUE(looks_like_status_line("HTTP/1.1 529"));
  EXPECT_FALSE(looks_like_status_line("HTTP/1.1 20 OK"));
  EXPECT_FALSE(looks_like_status_line("HTTP/2 200"));
}

TEST(HttpUtil, RetryAfter) {
  EXPECT_DOUBLE_EQ(*parse_retry_after("17", "", 0), 17.0);
  EXPECT_DOUBLE_EQ(*parse_retry_after(" 1.5 ", "", 0), 1.5);
  EXPECT_DOUBLE_EQ(*parse_retry_after("Sat, 29 Nov 2025 10:00:20 GMT", "Sat, 29 Nov 2025 10:00:00 GMT", 0), 20.0);
  // no Date header: relative to now
  int64_t when = *parse_http_date("Sat, 29 Nov 2025 10:00:20 GMT");
  EXPECT_DOUBLE_EQ(*parse_retry_after("Sat, 29 Nov 2025 10:00:20 GMT", "", when - 5), 5.0);
  EXPECT_DOUBLE_EQ(*parse_retry_after("Sat, 29 Nov 2025 10:00:20 GMT", "", when + 5), 0.0);  // past
  EXPECT_FALSE(parse_retry_after("soon", "", 0));
  EXPECT_FALSE(parse_retry_after("-3", "", 0));
  // Harden H1: the date form is bounded as the delay form is (> 1e9 s: not a valid delay)
  EXPECT_FALSE(parse_retry_after("1000000001", "", 0));
  EXPECT_FALSE(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", "", when));
  EXPECT_FALSE(parse_retry_after("Sat, 29 Nov 2025 10:00:20 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", 0));
  EXPECT_DOUBLE_EQ(*parse_retry_after("Sun, 30 Nov 2025 10:00:00 GMT", "Sat, 29 Nov 2025 10:00:00 GMT", 0), 86400.0);
  EXPECT_EQ(*parse_http_date("Thu, 01 Jan 1970 00:01:00 GMT"), 60);
  EXPECT_EQ(*parse_http_date("Thursday, 01-Jan-70 00:01:00 GMT"), 60);
  EXPECT_EQ(*parse_http_date("Thu Jan  1 00:01:00 1970"), 60);
}

TEST(HttpUtil, HeaderLines) {
  HeaderList h;
  EXPECT_TRUE(parse_header_lines("Content-Type: a\r\nX-Long: one\r\n  two\r\n", h));
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].first, "content-type");
  EXPECT_EQ(h[1].second, "one two");
  HeaderList bad;
  EXPECT_FALSE(parse_header_lines("no colon here\r\n", bad));
}

// Every recorded fixture parsed whole, split in two at EVERY byte boundary (request and
// response separately) and in 1-byte writes: the LlmCall must come out identical each time.
#include <gtest/gtest.h>

#include "protocol_test_util.h"
#include "util/redact.h"

using namespace ab::protocol;
using namespace ab::protocol::test;
using ab::util::is_secret_header;

namespace {

struct Want {
  const char* name;
  const char* provider;
  const char* api;
  const char* host;
  const char* path;
  const char* model;
  bool stream;
  int status;
  int64_t in, out, cache_read, cache_write, reasoning;
  bool usage_present, estimated;
  const char* reason;
  int64_t max_tokens;
  int messages;
  const char* error_type;
  bool complete = true;
};

const Want kWant[] = {
    {"openai_chat_json", "openai", "openai", "api.openai.com", "/v1/chat/completions", "gpt-4o-mini",
     false, 200, 19, 10, 6, 0, 3, true, false, "", 256, 2, ""},
    {"openai_chat_gzip", "openai", "openai", "api.openai.com", "/v1/chat/completions", "gpt-4o-mini",
     false, 200, 19, 10, 6, 0, 3, true, false, "", 256, 2, ""},
    {"openai_chat_deflate", "openai", "openai", "api.openai.com", "/v1/chat/completions", "gpt-4o-mini",
     false, 200, 19, 10, 6, 0, 3, true, false, "", 256, 2, ""},
    {"openai_chat_rawdeflate", "openai", "openai", "api.openai.com", "/v1/chat/completions",
     "gpt-4o-mini", false, 200, 19, 10, 6, 0, 3, true, false, "", 256, 2, ""},
    {"openai_chat_br", "openai", "openai", "api.openai.com", "/v1/chat/completions", "gpt-4o-mini",
     false, 200, 19, 10, 6, 0, 3, true, false, "", 256, 2, ""},
    {"openai_chat_sse", "openai", "openai", "api.openai.com", "/v1/chat/completions", "gpt-4o-mini",
     true, 200, 19, 10, 6, 0, 3, true, false, "", 100, 2, ""},
    // no include_usage: "Hello! Bonjour! Hola!" = 21 bytes → 6 tokens; input from the request text
    {"openai_chat_sse_nousage", "openai", "openai", "api.openai.com", "/v1/chat/completions",
     "gpt-4o-mini", true, 200, -1, 6, 0, 0, 0, false, true, "stream_without_usage", -1, 2, ""},
    {"compat_chat_sse_continuous", "127.0.0.1:8000", "openai", "127.0.0.1:8000", "/v1/chat/completions",
     "meta-llama/Llama-3.1-8B-Instruct", true, 200, 19, 6, 0, 0, 0, true, false, "", -1, 2, ""},
    {"openai_completions_json", "openai", "openai", "api.openai.com", "/v1/completions",
     "gpt-3.5-turbo-instruct", false, 200, 5, 7, 0, 0, 0, true, false, "", 7, 1, ""},
    {"openai_responses_sse", "openai", "openai", "api.openai.com", "/v1/responses", "o4-mini", true,
     200, 36, 87, 4, 0, 64, true, false, "", 500, 1, ""},
    {"openai_responses_json", "openai", "openai", "api.openai.com", "/v1/responses", "o4-mini", false,
     200, 36, 87, 4, 0, 64, true, false, "", 300, 1, ""},
    {"anthropic_json", "anthropic", "anthropic", "api.anthropic.com", "/v1/messages",
     "claude-sonnet-4-5", false, 200, 40, 15, 5, 10, 0, true, false, "", 1024, 1, ""},
    {"anthropic_sse", "anthropic", "anthropic", "api.anthropic.com", "/v1/messages", "claude-sonnet-4-5",
     true, 200, 40, 15, 5, 10, 0, true, false, "", 1024, 1, ""},
    {"anthropic_sse_br", "anthropic", "anthropic", "api.anthropic.com", "/v1/messages",
     "claude-sonnet-4-5", true, 200, 40, 15, 5, 10, 0, true, false, "", 1024, 1, ""},
    // cut after message_start and the first delta ("Hi" = 2 bytes): input from message_start,
    // output max(1 reported, ceil(2/4)=1)
    {"anthropic_sse_cut", "anthropic", "anthropic", "api.anthropic.com", "/v1/messages",
     "claude-sonnet-4-5", true, 200, 40, 1, 5, 10, 0, true, true, "cut_off", 1024, 1, "", false},
    {"anthropic_529", "anthropic", "anthropic", "api.anthropic.com", "/v1/messages", "claude-sonnet-4-5",
     false, 529, 0, 0, 0, 0, 0, false, false, "", 1024, 1, "overloaded_error"},
    {"anthropic_429", "anthropic", "anthropic", "api.anthropic.com", "/v1/messages", "claude-sonnet-4-5",
     false, 429, 0, 0, 0, 0, 0, false, false, "", 1024, 1, "rate_limit_error"},
    {"openai_429", "openai", "openai", "api.openai.com", "/v1/chat/completions", "gpt-4o-mini", false,
     429, 0, 0, 0, 0, 0, false, false, "", 256, 2, "requests"},
    {"gemini_json", "google", "gemini", "generativelanguage.googleapis.com",
     "/v1beta/models/gemini-2.5-flash:generateContent", "gemini-2.5-flash", false, 200, 11, 39, 3, 0,
     12, true, false, "", 200, 1, ""},
    {"gemini_sse", "google", "gemini", "generativelanguage.googleapis.com",
     "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini-2.5-flash", true, 200,
     11, 39, 3, 0, 12, true, false, "", 200, 1, ""},
    {"gemini_array", "google", "gemini", "generativelanguage.googleapis.com",
     "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini-2.5-flash", true, 200, 11, 39, 3,
     0, 12, true, false, "", 200, 1, ""},
    {"vertex_json", "google", "gemini", "us-central1-aiplatform.googleapis.com",
     "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
     "gemini-2.0-flash-001", false, 200, 11, 39, 3, 0, 12, true, false, "", 200, 1, ""},
    {"ollama_chat_ndjson", "ollama", "ollama", "localhost:11434", "/api/chat", "llama3.2", true, 200,
     26, 282, 0, 0, 0, true, false, "", -1, 1, ""},
    {"ollama_generate_json", "ollama", "ollama", "127.0.0.1:11434", "/api/generate", "llama3.2", false,
     200, 26, 290, 0, 0, 0, true, false, "", 128, 1, ""},
};

void check(const Want& w, const std::vector<Exchange>& xs, const std::string& how) {
  SCOPED_TRACE(std::string(w.name) + " fed " + how);
  ASSERT_EQ(xs.size(), 1u);
  const Exchange& x = xs[0];
  const ab::LlmCall& c = x.call;
  EXPECT_TRUE(x.is_llm);
  EXPECT_EQ(c.provider, w.provider);
  EXPECT_EQ(c.api, w.api);
  EXPECT_EQ(c.host, w.host);
  EXPECT_EQ(c.method, "POST");
  EXPECT_EQ(c.path, w.path);
  EXPECT_EQ(c.model, w.model);
  EXPECT_EQ(c.stream, w.stream);
  EXPECT_EQ(c.status, w.status);
  EXPECT_EQ(c.complete, w.complete);
  if (w.in >= 0) EXPECT_EQ(c.input_tokens, w.in);
  else EXPECT_GT(c.input_tokens, 0);
  EXPECT_EQ(c.output_tokens, w.out);
  EXPECT_EQ(c.cache_read_tokens, w.cache_read);
  EXPECT_EQ(c.cache_write_tokens, w.cache_write);
  EXPECT_EQ(c.reasoning_tokens, w.reasoning);
  EXPECT_EQ(c.usage_present, w.usage_present);
  EXPECT_EQ(c.estimated, w.estimated);
  EXPECT_EQ(c.estimate_reason, w.reason);
  EXPECT_EQ(c.max_tokens, w.max_tokens);
  EXPECT_EQ(c.message_count, w.messages);
  EXPECT_EQ(c.error_type, w.error_type);
  EXPECT_FALSE(c.capture_truncated);
  EXPECT_GT(c.request_bytes, 0u);
  EXPECT_GT(c.response_bytes, 0u);
}

class Fixtures : public ::testing::TestWithParam<Want> {};

TEST_P(Fixtures, Whole) {
  const Want& w = GetParam();
  std::string rq = fixture(std::string(w.name) + ".req"), rs = fixture(std::string(w.name) + ".resp");
  auto xs = run_split(rq, rs);
  check(w, xs, "whole");
  ASSERT_EQ(xs.size(), 1u);
  EXPECT_EQ(xs[0].call.request_bytes, rq.size());
  EXPECT_EQ(xs[0].call.response_bytes, rs.size());
}

TEST_P(Fixtures, EveryRequestSplit) {
  const Want& w = GetParam();
  std::string rq = fixture(std::string(w.name) + ".req"), rs = fixture(std::string(w.name) + ".resp");
  for (size_t i = 1; i < rq.size(); ++i) {
    auto xs = run_split(rq, rs, i);
    check(w, xs, "request split at " + std::to_string(i));
    if (HasFailure()) return;
  }
}

TEST_P(Fixtures, EveryResponseSplit) {
  const Want& w = GetParam();
  std::string rq = fixture(std::string(w.name) + ".req"), rs = fixture(std::string(w.name) + ".resp");
  for (size_t i = 1; i < rs.size(); ++i) {
    auto xs = run_split(rq, rs, std::string::npos, i);
    check(w, xs, "response split at " + std::to_string(i));
    if (HasFailure()) return;
  }
}

TEST_P(Fixtures, OneByteWrites) {
  const Want& w = GetParam();
  check(w, run_bytewise(fixture(std::string(w.name) + ".req"), fixture(std::string(w.name) + ".resp")),
        "1-byte writes");
}

TEST_P(Fixtures, NoSecretsInExchange) {
  const Want& w = GetParam();
  auto xs = run_split(fixture(std::string(w.name) + ".req"), fixture(std::string(w.name) + ".resp"));
  ASSERT_EQ(xs.size(), 1u);
  auto clean = [](const std::string& s) {
    for (const char* bad : {"FAKESECRET", "FAKECOOKIE", "FAKESETCOOKIE", "AIza", "ya29", "key="})
      if (s.find(bad) != std::string::npos) return false;
    return true;
  };
  for (const auto& hl : {xs[0].request_headers, xs[0].response_headers})
    for (const auto& [k, v] : hl) {
      EXPECT_FALSE(is_secret_header(k)) << k;
      EXPECT_TRUE(clean(k) && clean(v)) << k << ": " << v;
    }
  EXPECT_TRUE(clean(xs[0].call.path)) << xs[0].call.path;
  for (const auto& [k, v] : xs[0].call.ratelimit) EXPECT_TRUE(clean(k) && clean(v));
  EXPECT_FALSE(xs[0].request_headers.empty());
}

INSTANTIATE_TEST_SUITE_P(Recorded, Fixtures, ::testing::ValuesIn(kWant),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace

// Built-in endpoints, DNS name patterns, and what a learned address talks to.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "core/endpoints.h"
#include "policy/policy.h"
#include "protocol/classify.h"

using namespace ab::core;
using ab::protocol::ApiKind;

namespace {

ab_endpoint_key v4(const char* a, uint16_t port = 0) {
  ab_endpoint_key k{};
  EXPECT_TRUE(endpoint_key_for(a, port, &k));
  return k;
}

// What the set makes of a DNS answer for `name` (address 203.0.113.7): the endpoint a
// connection to it on 443 finds, or nullptr.
const EndpointInfo* learned(EndpointSet& s, const std::string& name) {
  auto added = s.on_dns(name, {v4("203.0.113.7")});
  return s.find(v4("203.0.113.7", 443));
}

}  // namespace

TEST(EndpointNames, PatternStarIsPartOfOneLabel) {
  EXPECT_TRUE(name_matches("*.openai.azure.com", "myres.openai.azure.com"));
  EXPECT_TRUE(name_matches("*.openai.azure.com", "a-b-1.openai.azure.com"));
  EXPECT_FALSE(name_matches("*.openai.azure.com", "openai.azure.com"));        // '*' is one or more
  EXPECT_FALSE(name_matches("*.openai.azure.com", "a.b.openai.azure.com"));    // never a '.'
  EXPECT_FALSE(name_matches("*.openai.azure.com", "evil.com.openai.azure.co"));
  EXPECT_FALSE(name_matches("*.openai.azure.com", "x.openai.azure.com.evil.com"));
  EXPECT_TRUE(name_matches("*-aiplatform.googleapis.com", "us-central1-aiplatform.googleapis.com"));
  EXPECT_TRUE(name_matches("*-aiplatform.googleapis.com", "europe-west4-aiplatform.googleapis.com"));
  EXPECT_FALSE(name_matches("*-aiplatform.googleapis.com", "aiplatform.googleapis.com"));
  EXPECT_FALSE(name_matches("*-aiplatform.googleapis.com", "x.us-aiplatform.googleapis.com"));
  EXPECT_TRUE(name_matches("bedrock-runtime.*.amazonaws.com", "bedrock-runtime.us-east-1.amazonaws.com"));
  EXPECT_FALSE(name_matches("bedrock-runtime.*.amazonaws.com", "bedrock-runtime.amazonaws.com"));
  EXPECT_FALSE(name_matches("bedrock-runtime.*.amazonaws.com", "bedrock-runtime.a.b.amazonaws.com"));
  EXPECT_FALSE(name_matches("bedrock-runtime.*.amazonaws.com", "bedrock.us-east-1.amazonaws.com"));
  EXPECT_TRUE(name_matches("api.x.ai", "api.x.ai"));
  EXPECT_FALSE(name_matches("api.x.ai", "xapi.x.ai"));
  EXPECT_TRUE(name_matches("a*b*.example.com", "axxbyy.example.com"));
  EXPECT_FALSE(name_matches("a*b*.example.com", "axxb.example.com"));
}

TEST(Endpoints, BuiltinHostsGiveTheirApi) {
  // host as a process resolves it → the api hint of the endpoint its address becomes, and the
  // provider a call to that Host is recorded under (the host itself for the OpenAI-compatible
  // ones: docs/interface.md, llm_call.provider).
  struct Case {
    const char* name;
    const char* api;
    const char* provider;
  } cases[] = {
      {"api.openai.com", "openai", "openai"},
      {"api.anthropic.com", "anthropic", "anthropic"},
      {"generativelanguage.googleapis.com", "gemini", "google"},
      {"openrouter.ai", "openai", "openrouter.ai"},
      {"api.groq.com", "openai", "api.groq.com"},
      {"api.mistral.ai", "openai", "api.mistral.ai"},
      {"api.deepseek.com", "openai", "api.deepseek.com"},
      {"api.together.xyz", "openai", "api.together.xyz"},
      {"api.fireworks.ai", "openai", "api.fireworks.ai"},
      {"api.x.ai", "openai", "api.x.ai"},
      {"myres.openai.azure.com", "openai", "myres.openai.azure.com"},
      {"aiplatform.googleapis.com", "gemini", "google"},
      {"us-central1-aiplatform.googleapis.com", "gemini", "google"},
      {"bedrock-runtime.us-east-1.amazonaws.com", "bedrock", "aws"},
      {"bedrock-runtime-fips.us-gov-west-1.amazonaws.com", "bedrock", "aws"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EndpointSet s;
    s.set_policy({});
    const EndpointInfo* info = learned(s, c.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->api, c.api);
    EXPECT_EQ(info->host, c.name);  // a pattern's match keeps the name: confirm_endpoint compares Hosts
    EXPECT_EQ(info->port, 443);
    EXPECT_TRUE(info->tls);
    const auto kind = api_kind_for(info->api);
    ASSERT_TRUE(kind.has_value());
    EXPECT_EQ(ab::protocol::provider_for_host(c.name, *kind), c.provider);
    // the name is matched case-insensitively, with a trailing dot
    EndpointSet u;
    u.set_policy({});
    std::string upper = c.name;
    for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    EXPECT_NE(learned(u, upper + "."), nullptr);
  }
}

TEST(Endpoints, OtherNamesAreNotEndpoints) {
  for (const char* n : {"openai.azure.com", "a.b.openai.azure.com", "api.x.ai.evil.com", "x.ai", "groq.com",
                        "bedrock.us-east-1.amazonaws.com", "s3.amazonaws.com", "www.googleapis.com",
                        "openrouter.ai.example.com"}) {
    SCOPED_TRACE(n);
    EndpointSet s;
    s.set_policy({});
    const size_t builtin_keys = s.size();  // Ollama's localhost:11434 (127.0.0.1, ::1)
    EXPECT_EQ(learned(s, n), nullptr);
    EXPECT_EQ(s.size(), builtin_keys);
  }
}

TEST(Endpoints, PolicyPatternIsLearnedFromDnsNeverResolved) {
  ab::policy::Endpoint e;
  e.host = "*.llm.example.com";
  e.port = 8443;
  e.api = "anthropic";
  EndpointSet s;
  auto to_resolve = s.set_policy({e});
  EXPECT_TRUE(to_resolve.empty());
  s.on_dns("gw1.llm.example.com", {v4("198.51.100.1")});
  const EndpointInfo* info = s.find(v4("198.51.100.1", 8443));
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->api, "anthropic");
  EXPECT_EQ(info->host, "gw1.llm.example.com");
  EXPECT_EQ(s.find(v4("198.51.100.1", 443)), nullptr);
  // a reload that keeps the pattern keeps what it learned; one that drops it drops it
  s.set_policy({e});
  EXPECT_NE(s.find(v4("198.51.100.1", 8443)), nullptr);
  s.set_policy({});
  EXPECT_EQ(s.find(v4("198.51.100.1", 8443)), nullptr);
}

TEST(Endpoints, LearnedBuiltinPatternSurvivesReload) {
  EndpointSet s;
  s.set_policy({});
  ASSERT_NE(learned(s, "res.openai.azure.com"), nullptr);
  s.set_policy({});
  const EndpointInfo* info = s.find(v4("203.0.113.7", 443));
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->host, "res.openai.azure.com");
}

TEST(Endpoints, EveryBuiltinButOllamaIsHttpsOn443) {
  for (const auto& b : builtin_endpoints()) {
    SCOPED_TRACE(b.host);
    if (b.api == "ollama") continue;
    EXPECT_EQ(b.port, 443);
    EXPECT_TRUE(b.tls);
  }
}

TEST(Endpoints, OllamaOnLocalhostIsBuiltInPlainHttp) {
  EndpointSet s;
  s.set_policy({});
  for (const char* addr : {"127.0.0.1", "::1"}) {
    SCOPED_TRACE(addr);
    ab_endpoint_key k;
    ASSERT_TRUE(endpoint_key_for(addr, 11434, &k));
    const EndpointInfo* info = s.find(k);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->api, "ollama");
    EXPECT_FALSE(info->tls);
    ASSERT_TRUE(endpoint_key_for(addr, 11435, &k));
    EXPECT_EQ(s.find(k), nullptr);
  }
}

TEST(Endpoints, PolicyEntryReplacesTheBuiltInOllamaAddress) {
  ab::policy::Endpoint e;
  e.host = "127.0.0.1";
  e.port = 11434;
  e.api = "openai";  // a LiteLLM proxy on Ollama's port
  e.tls = false;
  EndpointSet s;
  s.set_policy({e});
  ab_endpoint_key k;
  ASSERT_TRUE(endpoint_key_for("127.0.0.1", 11434, &k));
  ASSERT_NE(s.find(k), nullptr);
  EXPECT_EQ(s.find(k)->api, "openai");
  ASSERT_TRUE(endpoint_key_for("::1", 11434, &k));
  ASSERT_NE(s.find(k), nullptr);
  EXPECT_EQ(s.find(k)->api, "ollama");  // not named by the policy: the built-in stays
}

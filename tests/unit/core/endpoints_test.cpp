// Built-in endpoints, DNS name patterns, and what a learned address talks to.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>

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

// The shared map's keys besides the built-in Ollama ones (localhost:11434, always there).
size_t learned_keys(const EndpointSet& s) {
  size_t n = 0;
  for (const auto& k : s.keys()) n += k.port != 11434;
  return n;
}

// What the set makes of a DNS answer for `name` (address 203.0.113.7) that the daemon's own
// look-up confirms: the endpoint a connection to it on 443 finds host-wide, or nullptr.
const EndpointInfo* learned(EndpointSet& s, const std::string& name) {
  s.on_dns(1000, name, {v4("203.0.113.7")});
  s.on_resolved(name, {v4("203.0.113.7")});
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
  auto dns = s.on_dns(1000, "gw1.llm.example.com", {v4("198.51.100.1")});
  EXPECT_EQ(dns.resolve, "gw1.llm.example.com");  // the matching name itself is resolved
  s.on_resolved("gw1.llm.example.com", {v4("198.51.100.1")});
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

// ---- endpoints found without trusting the agent (docs/enforcement.md) ----

TEST(EndpointHints, AProcessOwnAnswerIsAHintForItsUidOnly) {
  EndpointSet s;
  s.set_policy({});
  // uid 1000's own /etc/hosts says api.openai.com is 127.0.0.1
  auto dns = s.on_dns(1000, "api.openai.com", {v4("127.0.0.1")}, 0);
  EXPECT_TRUE(dns.confirmed.empty());
  ASSERT_EQ(dns.hinted.size(), 1u);
  EXPECT_EQ(dns.hinted[0].uid, 1000u);
  EXPECT_EQ(dns.hinted[0].key.port, 443);
  EXPECT_EQ(dns.resolve, "api.openai.com") << "the daemon looks the name up itself";
  EXPECT_EQ(s.find(v4("127.0.0.1", 443)), nullptr) << "not host-wide";
  EXPECT_EQ(learned_keys(s), 0u) << "the kernel's shared map gets nothing";
  ASSERT_NE(s.find_for(1000, v4("127.0.0.1", 443)), nullptr) << "the teacher's own connects are seen";
  EXPECT_EQ(s.find_for(1000, v4("127.0.0.1", 443))->api, "openai");
  EXPECT_EQ(s.find_for(1001, v4("127.0.0.1", 443)), nullptr) << "another uid's are not";
  EXPECT_EQ(s.find_for(1000, v4("127.0.0.1", 80)), nullptr) << "the endpoint's port only";
  // the daemon's own answer does not list it: it stays the teacher's
  auto own = s.on_resolved("api.openai.com", {v4("162.159.140.245")}, 1);
  EXPECT_TRUE(own.confirmed.empty());
  EXPECT_EQ(s.find(v4("127.0.0.1", 443)), nullptr);
  EXPECT_NE(s.find_for(1000, v4("127.0.0.1", 443)), nullptr);
  EXPECT_NE(s.find(v4("162.159.140.245", 443)), nullptr) << "the daemon's own answer is trusted";
}

TEST(EndpointHints, ConfirmedByTheDaemonsOwnResolution) {
  EndpointSet s;
  s.set_policy({});
  s.on_dns(1000, "api.anthropic.com", {v4("160.79.104.10"), v4("10.9.9.9")}, 0);
  EXPECT_EQ(s.hints_of(1000), 2u);
  auto own = s.on_resolved("api.anthropic.com", {v4("160.79.104.10")}, 5);
  ASSERT_EQ(own.confirmed.size(), 1u);
  EXPECT_EQ(std::memcmp(own.confirmed[0].key.addr, v4("160.79.104.10").addr, 16), 0);
  ASSERT_NE(s.find(v4("160.79.104.10", 443)), nullptr) << "host-wide now";
  EXPECT_EQ(s.find(v4("160.79.104.10", 443))->host, "api.anthropic.com");
  EXPECT_EQ(s.hints_of(1000), 1u) << "the confirmed one is no hint any more";
  EXPECT_EQ(s.find(v4("10.9.9.9", 443)), nullptr);
  // a later DNS event within the answer's freshness is confirmed at once, no new look-up
  auto again = s.on_dns(1002, "api.anthropic.com", {v4("160.79.104.10")}, 6);
  EXPECT_TRUE(again.hinted.empty());
  EXPECT_TRUE(again.resolve.empty());
  EndpointSet t;
  t.set_policy({});
  t.on_resolved("api.anthropic.com", {v4("160.79.104.11")}, 0);
  auto now_known = t.on_dns(1002, "api.anthropic.com", {v4("160.79.104.11")}, 1);
  EXPECT_TRUE(now_known.hinted.empty());
  EXPECT_TRUE(now_known.resolve.empty()) << "host-wide already";
  // an address the fresh answer does not list stays a hint, and is not re-resolved while fresh
  auto other = t.on_dns(1002, "api.anthropic.com", {v4("10.1.1.1")}, 2);
  EXPECT_EQ(other.hinted.size(), 1u);
  EXPECT_TRUE(other.resolve.empty());
  // once the answer is stale, an unconfirmed address asks again
  const int64_t stale = t.limits().own_answer_fresh_ns + 10;
  EXPECT_EQ(t.on_dns(1002, "api.anthropic.com", {v4("10.1.1.1")}, stale).resolve, "api.anthropic.com");
}

TEST(EndpointHints, OneUidCannotTeachMoreThanItsCap) {
  EndpointSet::Limits lim;
  lim.hints_per_uid = 3;
  lim.hints_total = 5;
  EndpointSet s(lim);
  s.set_policy({});
  auto a = s.on_dns(1000, "api.openai.com", {v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3"), v4("10.0.0.4")}, 0);
  EXPECT_EQ(a.hinted.size(), 3u);
  EXPECT_EQ(a.dropped, 1u);
  auto b = s.on_dns(1000, "api.groq.com", {v4("10.0.1.1")}, 0);
  EXPECT_EQ(b.dropped, 1u) << "the cap is per uid, over every name";
  EXPECT_EQ(s.hints_of(1000), 3u);
  // the same address again is no new hint (and costs nothing)
  EXPECT_EQ(s.on_dns(1000, "api.openai.com", {v4("10.0.0.1")}, 1).dropped, 0u);
  // another uid has its own cap, within the total
  auto c = s.on_dns(1001, "api.openai.com", {v4("10.0.2.1"), v4("10.0.2.2"), v4("10.0.2.3")}, 0);
  EXPECT_EQ(c.hinted.size(), 2u);
  EXPECT_EQ(c.dropped, 1u) << "all uids together stay within hints_total";
  EXPECT_EQ(s.hints(), 5u);
  EXPECT_EQ(learned_keys(s), 0u);
  // hints expire; their uid may teach again
  auto gone = s.expire_hints(lim.hint_ttl_ns);
  EXPECT_EQ(gone.size(), 4u) << "the one taught again at t=1 lasts longer";
  EXPECT_EQ(s.hints_of(1000), 1u);
  EXPECT_EQ(s.on_dns(1000, "api.groq.com", {v4("10.0.1.1")}, lim.hint_ttl_ns + 2).hinted.size(), 1u);
}

TEST(EndpointHints, OnlyEndpointNamesTeachAndAReloadDropsHintsOfNamesItRemoves) {
  ab::policy::Endpoint e;
  e.host = "llm.corp.example";
  e.port = 8443;
  e.api = "openai";
  EndpointSet s;
  s.set_policy({e});
  EXPECT_TRUE(s.on_dns(1000, "example.com", {v4("10.0.0.1")}, 0).hinted.empty());
  EXPECT_EQ(s.hints(), 0u);
  auto h = s.on_dns(1000, "llm.corp.example", {v4("10.0.0.2")}, 0);
  ASSERT_EQ(h.hinted.size(), 1u);
  EXPECT_EQ(h.hinted[0].key.port, 8443);
  s.set_policy({e});
  EXPECT_EQ(s.hints(), 1u) << "kept: still an endpoint name";
  s.set_policy({});
  EXPECT_EQ(s.hints(), 0u);
  EXPECT_EQ(s.find_for(1000, v4("10.0.0.2", 8443)), nullptr);
}

TEST(EndpointHints, TheDaemonsAnswerForAnUnknownNameTeachesNothing) {
  EndpointSet s;
  s.set_policy({});
  auto r = s.on_resolved("example.com", {v4("10.0.0.1")}, 0);
  EXPECT_TRUE(r.added.empty());
  EXPECT_EQ(learned_keys(s), 0u);
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

// telemetry/otlp_json.h: spans with the OpenTelemetry GenAI attribute names, OTLP/JSON
// encoding (hex ids, 64-bit integers as strings), metrics bodies, the headers file.
#include <gtest/gtest.h>

#include <set>

#include "telemetry/otlp_json.h"

using namespace ab;
using namespace ab::telemetry;
using nlohmann::json;

namespace {

// attribute key → its value object ({"stringValue": ...} etc.)
std::map<std::string, json> attrs(const json& list) {
  std::map<std::string, json> out;
  for (const auto& a : list) {
    EXPECT_EQ(out.count(a["key"].get<std::string>()), 0u) << "duplicate attribute " << a["key"];
    out[a["key"].get<std::string>()] = a["value"];
  }
  return out;
}

LlmCall sample_call() {
  LlmCall c;
  c.start_unix_ns = 1'700'000'000'000'000'000;
  c.end_unix_ns = 1'700'000'000'250'000'000;
  c.provider = "anthropic";
  c.api = "anthropic";
  c.host = "api.anthropic.com";
  c.method = "POST";
  c.path = "/v1/messages";
  c.model = "claude-sonnet-4";
  c.status = 200;
  c.complete = true;
  c.max_tokens = 1024;
  c.input_tokens = 1200;
  c.output_tokens = 345;
  c.cache_read_tokens = 1000;
  c.cost_usd = 0.0123;
  c.who.pid = 4242;
  c.who.comm = "claude";
  c.who.exe = "/usr/bin/claude";
  c.who.cgroup = "/agents/a";
  return c;
}

}  // namespace

TEST(GenAi, SystemAndOperation) {
  EXPECT_EQ(gen_ai_system("openai", "openai", "api.openai.com"), "openai");
  EXPECT_EQ(gen_ai_system("anthropic", "anthropic", "api.anthropic.com"), "anthropic");
  EXPECT_EQ(gen_ai_system("google", "gemini", "generativelanguage.googleapis.com"), "gcp.gemini");
  EXPECT_EQ(gen_ai_system("google", "gemini", "us-central1-aiplatform.googleapis.com"), "gcp.vertex_ai");
  EXPECT_EQ(gen_ai_system("aws", "bedrock", "bedrock-runtime.us-east-1.amazonaws.com"), "aws.bedrock");
  EXPECT_EQ(gen_ai_system("ollama", "ollama", "localhost:11434"), "ollama");
  EXPECT_EQ(gen_ai_system("127.0.0.1:8443", "openai", "127.0.0.1:8443"), "openai");  // a policy endpoint: its wire
  EXPECT_EQ(gen_ai_system("llm.internal", "anthropic", "llm.internal"), "anthropic");
  EXPECT_EQ(gen_ai_operation("openai", "/v1/chat/completions"), "chat");
  EXPECT_EQ(gen_ai_operation("openai", "/v1/responses"), "chat");
  EXPECT_EQ(gen_ai_operation("anthropic", "/v1/messages"), "chat");
  EXPECT_EQ(gen_ai_operation("openai", "/v1/completions"), "text_completion");
  EXPECT_EQ(gen_ai_operation("openai", "/v1/embeddings"), "embeddings");
  EXPECT_EQ(gen_ai_operation("gemini", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"),
            "generate_content");
  EXPECT_EQ(gen_ai_operation("ollama", "/api/generate"), "text_completion");
  EXPECT_EQ(gen_ai_operation("ollama", "/api/chat"), "chat");
}

TEST(GenAi, SpanCarriesTheConventionsAttributes) {
  const json s = span_json(sample_call(), {"0123456789abcdef0123456789abcdef", "0123456789abcdef"});
  EXPECT_EQ(s["traceId"], "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(s["spanId"], "0123456789abcdef");
  EXPECT_EQ(s["name"], "chat claude-sonnet-4");
  EXPECT_EQ(s["kind"], 3);
  EXPECT_EQ(s["startTimeUnixNano"], "1700000000000000000");
  EXPECT_EQ(s["endTimeUnixNano"], "1700000000250000000");
  EXPECT_FALSE(s.contains("status"));
  auto a = attrs(s["attributes"]);
  EXPECT_EQ(a["gen_ai.system"]["stringValue"], "anthropic");
  EXPECT_EQ(a["gen_ai.operation.name"]["stringValue"], "chat");
  EXPECT_EQ(a["gen_ai.request.model"]["stringValue"], "claude-sonnet-4");
  EXPECT_EQ(a["gen_ai.response.model"]["stringValue"], "claude-sonnet-4");
  EXPECT_EQ(a["gen_ai.request.max_tokens"]["intValue"], "1024");
  EXPECT_EQ(a["gen_ai.usage.input_tokens"]["intValue"], "1200");
  EXPECT_EQ(a["gen_ai.usage.output_tokens"]["intValue"], "345");
  EXPECT_EQ(a["gen_ai.usage.cache_read.input_tokens"]["intValue"], "1000");
  EXPECT_EQ(a.count("gen_ai.usage.cache_creation.input_tokens"), 0u);  // zero: left out
  EXPECT_EQ(a["server.address"]["stringValue"], "api.anthropic.com");
  EXPECT_EQ(a["http.response.status_code"]["intValue"], "200");
  EXPECT_EQ(a["process.pid"]["intValue"], "4242");
  EXPECT_EQ(a["process.executable.name"]["stringValue"], "claude");
  EXPECT_EQ(a["agentbrake.cgroup"]["stringValue"], "/agents/a");
  EXPECT_DOUBLE_EQ(a["agentbrake.cost_usd"]["doubleValue"].get<double>(), 0.0123);
  EXPECT_EQ(a.count("error.type"), 0u);
}

TEST(GenAi, FailedCallIsAnErrorSpanAndPortIsSplit) {
  LlmCall c = sample_call();
  c.host = "127.0.0.1:8443";
  c.status = 429;
  c.error_type = "rate_limit_error";
  c.path = "/v1/messages?beta=true";
  const json s = span_json(c, random_span_ids());
  EXPECT_EQ(s["status"]["code"], 2);
  auto a = attrs(s["attributes"]);
  EXPECT_EQ(a["error.type"]["stringValue"], "rate_limit_error");
  EXPECT_EQ(a["server.address"]["stringValue"], "127.0.0.1");
  EXPECT_EQ(a["server.port"]["intValue"], "8443");
  EXPECT_EQ(a["url.path"]["stringValue"], "/v1/messages");
  c.status = 0;
  c.complete = false;
  c.error_type.clear();
  EXPECT_EQ(attrs(span_json(c, random_span_ids())["attributes"])["error.type"]["stringValue"], "cut_off");
}

TEST(GenAi, IdsAreHexAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; i++) {
    auto ids = random_span_ids();
    ASSERT_EQ(ids.trace_id.size(), 32u);
    ASSERT_EQ(ids.span_id.size(), 16u);
    ASSERT_EQ(ids.trace_id.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_TRUE(seen.insert(ids.trace_id).second);
  }
}

TEST(GenAi, TracesBodyHasResourceAndScope) {
  Resource r;
  r.service_version = "0.1.0";
  r.host_name = "runner-17";
  const json b = json::parse(traces_body(r, {span_json(sample_call(), random_span_ids())}));
  const auto& rs = b["resourceSpans"][0];
  auto ra = attrs(rs["resource"]["attributes"]);
  EXPECT_EQ(ra["service.name"]["stringValue"], "agentbraked");
  EXPECT_EQ(ra["host.name"]["stringValue"], "runner-17");
  EXPECT_EQ(rs["scopeSpans"][0]["scope"]["name"], "agentbrake");
  EXPECT_EQ(rs["scopeSpans"][0]["spans"].size(), 1u);
}

TEST(GenAi, MetricsBody) {
  alerts::CallMetrics m;
  m.add({"openai", "gpt-4o", 100, 20, 0, 0, 0.5, 0.3, false});
  MetricsInput in;
  in.models = m.by_model();
  in.budgets.push_back({"team", "cgroup:/a", "tokens", "1m", 120, 1000});
  in.start_unix_ns = 1;
  in.now_unix_ns = 2;
  const json b = json::parse(metrics_body(Resource{}, in));
  std::map<std::string, json> by_name;
  for (const auto& x : b["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]) by_name[x["name"]] = x;
  ASSERT_EQ(by_name.count("agentbrake.llm.calls"), 1u);
  EXPECT_EQ(by_name["agentbrake.llm.calls"]["sum"]["dataPoints"][0]["asInt"], "1");
  EXPECT_EQ(by_name["agentbrake.llm.calls"]["sum"]["aggregationTemporality"], 2);
  EXPECT_EQ(by_name["agentbrake.llm.tokens"]["sum"]["dataPoints"].size(), 4u);
  const auto& h = by_name["gen_ai.client.operation.duration"]["histogram"]["dataPoints"][0];
  EXPECT_EQ(h["count"], "1");
  EXPECT_EQ(h["bucketCounts"].size(), h["explicitBounds"].size() + 1);
  EXPECT_EQ(by_name["agentbrake.budget.level"]["gauge"]["dataPoints"][0]["asDouble"], 120.0);
  EXPECT_EQ(by_name["agentbrake.budget.limit"]["gauge"]["dataPoints"][0]["asDouble"], 1000.0);
}

TEST(HeadersFile, ParsesAndErrorsNeverShowTheValue) {
  std::string err;
  auto h = parse_headers_file("# comment\n\nAuthorization: Bearer s3cr3t\r\nX-Tenant:  team-a \n", "/h", &err);
  ASSERT_TRUE(h) << err;
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0], std::make_pair(std::string("Authorization"), std::string("Bearer s3cr3t")));
  EXPECT_EQ((*h)[1].second, "team-a");
  EXPECT_FALSE(parse_headers_file("Authorization Bearer s3cr3t\n", "/h", &err));
  EXPECT_EQ(err.find("s3cr3t"), std::string::npos) << err;
  EXPECT_EQ(err.rfind("/h:1:", 0), 0u) << err;
  EXPECT_FALSE(parse_headers_file("ok: 1\nBad Name: s3cr3t\n", "/h", &err));
  EXPECT_EQ(err.rfind("/h:2:", 0), 0u) << err;
  EXPECT_EQ(err.find("s3cr3t"), std::string::npos);
  EXPECT_FALSE(parse_headers_file("X-Empty:\n", "/h", &err));
  EXPECT_FALSE(parse_headers_file("Content-Type: text/plain\n", "/h", &err));
}

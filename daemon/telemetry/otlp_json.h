// otlp_json.h — OTLP/HTTP JSON bodies (opentelemetry-proto's JSON mapping: ids in hex, 64-bit
// integers as decimal strings) for what agentbraked exports: one span per llm_call, named and
// attributed by the OpenTelemetry GenAI semantic conventions, and the call/token/cost/latency
// and budget metrics. Pure functions: unit-tested (tests/unit/telemetry), no I/O.
//
// Span (kind CLIENT, name "{gen_ai.operation.name} {gen_ai.request.model}", start/end = the
// call's first request byte / last response byte). Attributes:
//   gen_ai.system, gen_ai.operation.name, gen_ai.request.model, gen_ai.response.model,
//   gen_ai.request.max_tokens (when the request set it), gen_ai.usage.input_tokens,
//   gen_ai.usage.output_tokens, gen_ai.usage.cache_read.input_tokens and
//   gen_ai.usage.cache_creation.input_tokens (when non-zero), server.address, server.port,
//   http.request.method, http.response.status_code, url.path, error.type (on failure),
//   process.pid, process.executable.name (comm), process.executable.path, and agentbrake.*:
//   provider, cgroup, cost_usd, reasoning_tokens, estimated, estimate_reason, stream, complete.
//   Status ERROR on HTTP >= 400 or a response cut off; unset otherwise.
// Resource: service.name "agentbraked", service.version, host.name.
// No header, body, API key or query string of the call is ever put in a span (url.path is
// the request target the adapters already stripped of key=).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "alerts/metrics.h"
#include "protocol/llm_call.h"

namespace ab::telemetry {

struct Resource {
  std::string service_name = "agentbraked";
  std::string service_version;
  std::string host_name;
};

// gen_ai.system for a call: the product by the conventions' well-known values (openai,
// anthropic, gcp.gemini, gcp.vertex_ai, aws.bedrock) or ollama; an endpoint of the policy
// (provider = its host) by the wire format it speaks.
std::string gen_ai_system(std::string_view provider, std::string_view api, std::string_view host);
// gen_ai.operation.name from the request path: chat, text_completion, generate_content, embeddings.
std::string gen_ai_operation(std::string_view api, std::string_view path);

struct SpanIds {
  std::string trace_id;  // 32 lowercase hex digits
  std::string span_id;   // 16
};
SpanIds random_span_ids();  // from a per-thread generator seeded by std::random_device

// One span (an element of scopeSpans[].spans).
nlohmann::json span_json(const LlmCall& call, const SpanIds& ids);
// A whole ExportTraceServiceRequest for POST /v1/traces.
std::string traces_body(const Resource& resource, const std::vector<nlohmann::json>& spans);

// The metrics to export at one instant; cumulative since `start_unix_ns` (the daemon's start).
struct MetricsInput {
  std::map<std::pair<std::string, std::string>, alerts::ModelAggregate> models;  // (provider, model)
  std::vector<alerts::BudgetGauge> budgets;
  int64_t start_unix_ns = 0;
  int64_t now_unix_ns = 0;
};
// A whole ExportMetricsServiceRequest for POST /v1/metrics: sums agentbrake.llm.calls,
// agentbrake.llm.tokens (attribute gen_ai.token.type: input, output, cache_read, cache_write),
// agentbrake.llm.cost (USD), histogram gen_ai.client.operation.duration (s), gauges
// agentbrake.budget.level / agentbrake.budget.limit. Points carry agentbrake.provider and
// gen_ai.request.model (the bounded labels of /metrics).
std::string metrics_body(const Resource& resource, const MetricsInput& in);

// `headers_file`: one "Name: value" a line; blank lines and lines starting with '#' are
// skipped. A name is an HTTP token; a value is trimmed and may not be empty. On an error,
// `error` names the file and line, never the value (it is a secret), and nullopt is returned.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_headers_file(std::string_view text,
                                                                                   const std::string& path,
                                                                                   std::string* error);

}  // namespace ab::telemetry

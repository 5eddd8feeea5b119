#include "telemetry/otlp_json.h"

#include <algorithm>
#include <cctype>
#include <random>

#include <fmt/format.h>

namespace ab::telemetry {

using nlohmann::json;

namespace {

json str_attr(const char* key, std::string_view v) { return {{"key", key}, {"value", {{"stringValue", std::string(v)}}}}; }
json int_attr(const char* key, int64_t v) { return {{"key", key}, {"value", {{"intValue", std::to_string(v)}}}}; }
json double_attr(const char* key, double v) { return {{"key", key}, {"value", {{"doubleValue", v}}}}; }
json bool_attr(const char* key, bool v) { return {{"key", key}, {"value", {{"boolValue", v}}}}; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

json resource_json(const Resource& r) {
  json attrs = json::array({str_attr("service.name", r.service_name)});
  if (!r.service_version.empty()) attrs.push_back(str_attr("service.version", r.service_version));
  if (!r.host_name.empty()) attrs.push_back(str_attr("host.name", r.host_name));
  return {{"attributes", attrs}};
}

json scope_json(const Resource& r) {
  json s = {{"name", "agentbrake"}};
  if (!r.service_version.empty()) s["version"] = r.service_version;
  return s;
}

// host[:port] of the Host header → (address, port or -1)
std::pair<std::string, int> split_server(std::string_view host) {
  if (host.empty()) return {"", -1};
  size_t colon = host.rfind(':');
  const bool bracketed = host.front() == '[';
  if (colon != std::string_view::npos && (!bracketed || host.find(']') < colon) &&
      (bracketed || host.find(':') == colon)) {
    std::string_view port = host.substr(colon + 1);
    if (!port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      std::string_view addr = host.substr(0, colon);
      if (bracketed && addr.size() >= 2) addr = addr.substr(1, addr.size() - 2);
      return {std::string(addr), std::stoi(std::string(port))};
    }
  }
  if (bracketed && host.back() == ']') return {std::string(host.substr(1, host.size() - 2)), -1};
  return {std::string(host), -1};
}

}  // namespace

std::string gen_ai_system(std::string_view provider, std::string_view api, std::string_view host) {
  const std::string p = lower(provider), a = lower(api), h = lower(host);
  if (p == "openai") return "openai";
  if (p == "anthropic") return "anthropic";
  if (p == "google") return h.find("aiplatform.googleapis.com") != std::string::npos ? "gcp.vertex_ai" : "gcp.gemini";
  if (p == "aws") return "aws.bedrock";
  if (p == "ollama") return "ollama";
  // an endpoint of the policy (its host is the provider): what it speaks
  if (a == "anthropic") return "anthropic";
  if (a == "gemini") return "gcp.gemini";
  if (a == "bedrock") return "aws.bedrock";
  if (a == "ollama") return "ollama";
  return "openai";
}

std::string gen_ai_operation(std::string_view api, std::string_view path) {
  const std::string p = lower(path.substr(0, path.find('?')));
  auto has = [&](std::string_view s) { return p.find(s) != std::string::npos; };
  if (has("embed")) return "embeddings";
  if (has(":generatecontent") || has(":streamgeneratecontent")) return "generate_content";
  if (has("/api/generate")) return "text_completion";
  if (has("/chat/completions") || has("/api/chat") || has("/messages") || has("/responses") || has("/converse"))
    return "chat";
  if (has("/completions") || has("/complete")) return "text_completion";
  return "chat";
}

SpanIds random_span_ids() {
  thread_local std::mt19937_64 gen{[] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }()};
  uint64_t a = gen(), b = gen(), c = gen();
  while (a == 0 && b == 0) a = gen();  // all-zero ids are invalid
  while (c == 0) c = gen();
  return {fmt::format("{:016x}{:016x}", a, b), fmt::format("{:016x}", c)};
}

json span_json(const LlmCall& c, const SpanIds& ids) {
  const std::string op = gen_ai_operation(c.api, c.path);
  const std::string system = gen_ai_system(c.provider, c.api, c.host);
  json attrs = json::array();
  attrs.push_back(str_attr("gen_ai.system", system));
  attrs.push_back(str_attr("gen_ai.operation.name", op));
  if (!c.model.empty()) {
    attrs.push_back(str_attr("gen_ai.request.model", c.model));
    // the adapters keep one model: the response's when it named one, else the request's
    attrs.push_back(str_attr("gen_ai.response.model", c.model));
  }
  if (c.max_tokens >= 0) attrs.push_back(int_attr("gen_ai.request.max_tokens", c.max_tokens));
  attrs.push_back(int_attr("gen_ai.usage.input_tokens", c.input_tokens));
  attrs.push_back(int_attr("gen_ai.usage.output_tokens", c.output_tokens));
  if (c.cache_read_tokens > 0) attrs.push_back(int_attr("gen_ai.usage.cache_read.input_tokens", c.cache_read_tokens));
  if (c.cache_write_tokens > 0)
    attrs.push_back(int_attr("gen_ai.usage.cache_creation.input_tokens", c.cache_write_tokens));
  auto [addr, port] = split_server(c.host);
  if (!addr.empty()) attrs.push_back(str_attr("server.address", addr));
  if (port > 0) attrs.push_back(int_attr("server.port", port));
  if (!c.method.empty()) attrs.push_back(str_attr("http.request.method", c.method));
  if (c.status > 0) attrs.push_back(int_attr("http.response.status_code", c.status));
  if (!c.path.empty()) attrs.push_back(str_attr("url.path", c.path.substr(0, c.path.find('?'))));
  const bool failed = c.status >= 400 || !c.complete;
  std::string error_type;
  if (failed) {
    error_type = !c.error_type.empty() ? c.error_type : c.status >= 400 ? std::to_string(c.status) : "cut_off";
    attrs.push_back(str_attr("error.type", error_type));
  }
  attrs.push_back(int_attr("process.pid", c.who.pid));
  if (!c.who.comm.empty()) attrs.push_back(str_attr("process.executable.name", c.who.comm));
  if (!c.who.exe.empty()) attrs.push_back(str_attr("process.executable.path", c.who.exe));
  attrs.push_back(str_attr("agentbrake.provider", c.provider));
  attrs.push_back(str_attr("agentbrake.cgroup", c.who.cgroup.empty() ? "/" : c.who.cgroup));
  attrs.push_back(double_attr("agentbrake.cost_usd", c.cost_usd));
  if (c.reasoning_tokens > 0) attrs.push_back(int_attr("agentbrake.reasoning_tokens", c.reasoning_tokens));
  attrs.push_back(bool_attr("agentbrake.stream", c.stream));
  attrs.push_back(bool_attr("agentbrake.complete", c.complete));
  attrs.push_back(bool_attr("agentbrake.estimated", c.estimated));
  if (c.estimated && !c.estimate_reason.empty()) attrs.push_back(str_attr("agentbrake.estimate_reason", c.estimate_reason));
  json span = {{"traceId", ids.trace_id},
               {"spanId", ids.span_id},
               {"name", c.model.empty() ? op : op + " " + c.model},
               {"kind", 3},  // SPAN_KIND_CLIENT
               {"startTimeUnixNano", std::to_string(std::max<int64_t>(0, c.start_unix_ns))},
               {"endTimeUnixNano", std::to_string(std::max<int64_t>(c.start_unix_ns, c.end_unix_ns))},
               {"attributes", attrs}};
  if (failed) span["status"] = {{"code", 2}, {"message", error_type}};  // STATUS_CODE_ERROR
  return span;
}

std::string traces_body(const Resource& r, const std::vector<json>& spans) {
  json body = {{"resourceSpans",
                json::array({{{"resource", resource_json(r)},
                              {"scopeSpans", json::array({{{"scope", scope_json(r)}, {"spans", spans}}})}}})}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string metrics_body(const Resource& r, const MetricsInput& in) {
  const std::string start = std::to_string(in.start_unix_ns), now = std::to_string(in.now_unix_ns);
  auto model_attrs = [](const std::pair<std::string, std::string>& k) {
    return json::array({str_attr("agentbrake.provider", k.first), str_attr("gen_ai.request.model", k.second)});
  };
  auto sum = [&](const char* name, const char* unit, const char* description, json points) {
    return json{{"name", name},
                {"unit", unit},
                {"description", description},
                {"sum", {{"dataPoints", std::move(points)}, {"aggregationTemporality", 2}, {"isMonotonic", true}}}};
  };
  json calls = json::array(), tokens = json::array(), cost = json::array(), duration = json::array();
  json bounds = json::array();
  for (double b : alerts::kLatencyBucketsS) bounds.push_back(b);
  for (const auto& [k, m] : in.models) {
    calls.push_back({{"attributes", model_attrs(k)}, {"startTimeUnixNano", start}, {"timeUnixNano", now},
                     {"asInt", std::to_string(m.calls)}});
    const std::pair<const char*, uint64_t> types[] = {
        {"input", m.input_tokens}, {"output", m.output_tokens}, {"cache_read", m.cache_read_tokens}, {"cache_write", m.cache_write_tokens}};
    for (const auto& [type, n] : types) {
      json a = model_attrs(k);
      a.push_back(str_attr("gen_ai.token.type", type));
      tokens.push_back({{"attributes", a}, {"startTimeUnixNano", start}, {"timeUnixNano", now}, {"asInt", std::to_string(n)}});
    }
    cost.push_back({{"attributes", model_attrs(k)}, {"startTimeUnixNano", start}, {"timeUnixNano", now}, {"asDouble", m.cost_usd}});
    json counts = json::array();
    for (uint64_t n : m.latency_buckets) counts.push_back(std::to_string(n));
    counts.push_back(std::to_string(m.latency_over));
    duration.push_back({{"attributes", model_attrs(k)},
                        {"startTimeUnixNano", start},
                        {"timeUnixNano", now},
                        {"count", std::to_string(m.latency_count)},
                        {"sum", m.latency_sum_s},
                        {"bucketCounts", counts},
                        {"explicitBounds", bounds}});
  }
  json metrics = json::array();
  metrics.push_back(sum("agentbrake.llm.calls", "{call}", "Completed LLM API calls", calls));
  metrics.push_back(sum("agentbrake.llm.tokens", "{token}", "Tokens by type: input (billed, cache included), output, cache_read, cache_write", tokens));
  metrics.push_back(sum("agentbrake.llm.cost", "USD", "Spend on LLM calls", cost));
  metrics.push_back({{"name", "gen_ai.client.operation.duration"},
                     {"unit", "s"},
                     {"description", "LLM call latency, request start to response end"},
                     {"histogram", {{"dataPoints", duration}, {"aggregationTemporality", 2}}}});
  json level = json::array(), limit = json::array();
  for (const auto& g : in.budgets) {
    json a = json::array({str_attr("agentbrake.budget", g.budget), str_attr("agentbrake.bucket", g.bucket),
                          str_attr("agentbrake.limit.kind", g.kind), str_attr("agentbrake.limit.window", g.window)});
    level.push_back({{"attributes", a}, {"timeUnixNano", now}, {"asDouble", g.level}});
    limit.push_back({{"attributes", a}, {"timeUnixNano", now}, {"asDouble", g.limit}});
  }
  metrics.push_back({{"name", "agentbrake.budget.level"}, {"unit", "1"}, {"description", "A budget bucket's use in its window now"},
                     {"gauge", {{"dataPoints", level}}}});
  metrics.push_back({{"name", "agentbrake.budget.limit"}, {"unit", "1"}, {"description", "The limit of agentbrake.budget.level"},
                     {"gauge", {{"dataPoints", limit}}}});
  json body = {{"resourceMetrics",
                json::array({{{"resource", resource_json(r)},
                              {"scopeMetrics", json::array({{{"scope", scope_json(r)}, {"metrics", metrics}}})}}})}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<std::vector<std::pair<std::string, std::string>>> parse_headers_file(std::string_view text,
                                                                                   const std::string& path,
                                                                                   std::string* error) {
  std::vector<std::pair<std::string, std::string>> out;
  auto fail = [&](size_t line, const std::string& why) {
    if (error) *error = fmt::format("{}:{}: {}", path, line, why);
    return std::nullopt;
  };
  auto is_tchar = [](unsigned char c) {
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  };
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
  };
  size_t line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    line_no++;
    std::string_view t = trim(line);
    if (t.empty() || t.front() == '#') continue;
    size_t colon = t.find(':');
    if (colon == std::string_view::npos) return fail(line_no, "expected 'Name: value'");
    std::string_view name = trim(t.substr(0, colon)), value = trim(t.substr(colon + 1));
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_tchar))
      return fail(line_no, "the header name is not an HTTP token");
    if (value.empty()) return fail(line_no, fmt::format("header {} has an empty value", name));
    if (std::any_of(value.begin(), value.end(), [](unsigned char c) { return c < 0x20 && c != '\t'; }))
      return fail(line_no, fmt::format("header {} has a control character in its value", name));
    const std::string lname = lower(name);
    if (lname == "content-type" || lname == "content-length" || lname == "host")
      return fail(line_no, fmt::format("header {} is set by the exporter", name));
    out.emplace_back(std::string(name), std::string(value));
  }
  return out;
}

}  // namespace ab::telemetry

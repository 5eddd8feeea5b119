#include "protocol/classify.h"

#include "protocol/strutil.h"

namespace ab::protocol {
using detail::iequals;
using detail::lower;

const char* api_name(ApiKind k) {
  switch (k) {
    case ApiKind::OpenAIChat:
    case ApiKind::OpenAICompletions:
    case ApiKind::OpenAIResponses: return "openai";
    case ApiKind::AnthropicMessages: return "anthropic";
    case ApiKind::GeminiGenerate: return "gemini";
    case ApiKind::OllamaChat:
    case ApiKind::OllamaGenerate: return "ollama";
    case ApiKind::BedrockConverse:
    case ApiKind::BedrockConverseStream:
    case ApiKind::BedrockInvoke:
    case ApiKind::BedrockInvokeStream: return "bedrock";
  }
  return "openai";
}

static std::string_view path_only(std::string_view target) {
  // absolute-form (proxy requests): http://host/path
  if (target.starts_with("http://") || target.starts_with("https://")) {
    auto s = target.find("://");
    auto slash = target.find('/', s + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  auto q = target.find_first_of("?#");
  if (q != std::string_view::npos) target = target.substr(0, q);
  while (target.size() > 1 && target.back() == '/') target.remove_suffix(1);
  return target;
}

static bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::optional<ApiKind> classify_path(std::string_view method, std::string_view target) {
  if (!iequals(method, "POST")) return std::nullopt;
  std::string_view p = path_only(target);
  if (ends_with(p, "/chat/completions")) return ApiKind::OpenAIChat;
  if (ends_with(p, "/v1/completions") || ends_with(p, "/openai/completions") ||
      (p.find("/openai/deployments/") != std::string_view::npos && ends_with(p, "/completions")))
    return ApiKind::OpenAICompletions;
  if (ends_with(p, "/v1/responses") || ends_with(p, "/openai/responses")) return ApiKind::OpenAIResponses;
  if (ends_with(p, "/v1/messages")) return ApiKind::AnthropicMessages;
  if (p.find("/publishers/anthropic/models/") != std::string_view::npos &&
      (ends_with(p, ":rawPredict") || ends_with(p, ":streamRawPredict")))
    return ApiKind::AnthropicMessages;  // Vertex AI: Anthropic's body, the model in the path
  if (p.starts_with("/model/")) {
    auto slash = p.rfind('/');
    if (slash > 7) {
      std::string_view op = p.substr(slash + 1);
      if (op == "converse") return ApiKind::BedrockConverse;
      if (op == "converse-stream") return ApiKind::BedrockConverseStream;
      if (op == "invoke") return ApiKind::BedrockInvoke;
      if (op == "invoke-with-response-stream") return ApiKind::BedrockInvokeStream;
    }
  }
  if (p.find("/models/") != std::string_view::npos &&
      (ends_with(p, ":generateContent") || ends_with(p, ":streamGenerateContent")))
    return ApiKind::GeminiGenerate;
  if (p == "/api/chat") return ApiKind::OllamaChat;
  if (p == "/api/generate") return ApiKind::OllamaGenerate;
  return std::nullopt;
}

// Splits "host:port" / "[v6]:port" / "host" into host and port ("" when absent).
static void split_host_port(std::string_view hp, std::string_view& host, std::string_view& port) {
  hp = detail::trim(hp);
  host = hp;
  port = {};
  if (hp.starts_with('[')) {
    auto close = hp.find(']');
    if (close == std::string_view::npos) return;
    host = hp.substr(0, close + 1);
    if (close + 1 < hp.size() && hp[close + 1] == ':') port = hp.substr(close + 2);
    return;
  }
  auto colon = hp.rfind(':');
  if (colon != std::string_view::npos && hp.find(':') == colon) {
    host = hp.substr(0, colon);
    port = hp.substr(colon + 1);
  }
}

std::string normalize_host(std::string_view host_with_port) {
  std::string_view host, port;
  split_host_port(host_with_port, host, port);
  std::string out = detail::to_lower(host);
  while (!out.empty() && out.back() == '.') out.pop_back();  // FQDN trailing dot
  if (!port.empty() && port != "443" && port != "80") {
    out += ':';
    out += port;
  }
  return out;
}

std::string provider_for_host(std::string_view host_with_port, ApiKind api) {
  std::string_view host, port;
  split_host_port(host_with_port, host, port);
  std::string h = detail::to_lower(host);
  while (!h.empty() && h.back() == '.') h.pop_back();
  if (h == "api.openai.com") return "openai";
  if (h == "api.anthropic.com") return "anthropic";
  if (h == "generativelanguage.googleapis.com" || ends_with(h, "-aiplatform.googleapis.com") ||
      h == "aiplatform.googleapis.com")
    return "google";
  if ((h.starts_with("bedrock-runtime.") || h.starts_with("bedrock-runtime-fips.")) && ends_with(h, ".amazonaws.com"))
    return "aws";
  if (is_bedrock(api)) return "aws";
  if (port == "11434" || api == ApiKind::OllamaChat || api == ApiKind::OllamaGenerate) return "ollama";
  return normalize_host(host_with_port);
}

std::string gemini_model_from_path(std::string_view target) {
  std::string_view p = path_only(target);
  auto m = p.rfind("/models/");
  if (m == std::string_view::npos) return {};
  std::string_view rest = p.substr(m + 8);
  auto colon = rest.find(':');
  if (colon != std::string_view::npos) rest = rest.substr(0, colon);
  return std::string(rest);
}

std::string bedrock_model_from_path(std::string_view target) {
  std::string_view p = path_only(target);
  if (!p.starts_with("/model/")) return {};
  std::string_view id = p.substr(7);
  auto slash = id.rfind('/');
  if (slash == std::string_view::npos) return {};
  id = id.substr(0, slash);
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < id.size(); i++) {
    if (id[i] == '%' && i + 2 < id.size() && hex(id[i + 1]) >= 0 && hex(id[i + 2]) >= 0) {
      out += static_cast<char>(hex(id[i + 1]) * 16 + hex(id[i + 2]));
      i += 2;
    } else {
      out += id[i];
    }
  }
  return out;
}

}  // namespace ab::protocol

// classify.h — which LLM API a request targets, who the provider is, and what must never be kept.
// Pure functions, no state. Used by the HTTP/1.1 layer (connection.h) and by the daemon core.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace ab::protocol {

// The wire format of one endpoint. Several kinds share one `api` name (see api_name()).
enum class ApiKind {
  OpenAIChat,         // POST …/chat/completions (OpenAI, Azure, every OpenAI-compatible server)
  OpenAICompletions,  // POST …/v1/completions (legacy)
  OpenAIResponses,    // POST …/v1/responses
  AnthropicMessages,  // POST …/v1/messages
  GeminiGenerate,     // POST …/models/{model}:generateContent | :streamGenerateContent
  OllamaChat,         // POST /api/chat
  OllamaGenerate,     // POST /api/generate
  BedrockConverse,        // POST /model/{modelId}/converse (AWS Bedrock)
  BedrockConverseStream,  // POST /model/{modelId}/converse-stream
  BedrockInvoke,          // POST /model/{modelId}/invoke (the model's own body)
  BedrockInvokeStream,    // POST /model/{modelId}/invoke-with-response-stream
};

inline bool is_bedrock(ApiKind k) {
  return k == ApiKind::BedrockConverse || k == ApiKind::BedrockConverseStream || k == ApiKind::BedrockInvoke ||
         k == ApiKind::BedrockInvokeStream;
}

// "openai" | "anthropic" | "gemini" | "ollama" | "bedrock": the `api` field of an llm_call.
const char* api_name(ApiKind k);

// The LLM API a request is a call of, from its method and request target (query string allowed),
// or nullopt when it is not an LLM call (GET /v1/models, /v1/messages/count_tokens, …).
// Only POST is a call. Matching is on path suffixes, so any prefix works (proxies, Azure
// /openai/deployments/X/chat/completions, OpenRouter /api/v1/chat/completions).
std::optional<ApiKind> classify_path(std::string_view method, std::string_view path);

// The provider name of an endpoint: api.openai.com → openai, api.anthropic.com → anthropic,
// generativelanguage.googleapis.com and *-aiplatform.googleapis.com → google, port 11434 or an
// Ollama API → ollama, otherwise the host itself (lower-cased, default port 80/443 stripped).
// `host_with_port` is a Host header value ("localhost:11434", "[::1]:8080", "api.openai.com").
std::string provider_for_host(std::string_view host_with_port, ApiKind api);

// Host header value without a default port (":443" / ":80"), lower-cased.
std::string normalize_host(std::string_view host_with_port);

// Secret query parameters and headers: util::redact_target, util::is_secret_header
// (util/redact.h).

// For Gemini paths: the model named in the path ("…/models/gemini-2.0-flash:generateContent").
// Also Vertex's Anthropic paths ("…/publishers/anthropic/models/claude-x@2025:rawPredict").
std::string gemini_model_from_path(std::string_view path);

// For Bedrock paths: the model id, percent-decoded ("/model/anthropic.claude-3-haiku%3A0/converse"
// → "anthropic.claude-3-haiku:0"; an inference-profile ARN stays whole).
std::string bedrock_model_from_path(std::string_view path);

}  // namespace ab::protocol

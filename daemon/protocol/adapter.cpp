#include "protocol/adapter.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "protocol/strutil.h"

namespace ab::protocol {

using nlohmann::json;

int64_t estimate_tokens_from_text(uint64_t bytes) { return int64_t((bytes + 3) / 4); }

const ScanSpec& Adapter::request_spec() {
  static const ScanSpec spec = [] {
    ScanSpec s;
    s.capture = {"model",
                 "stream",
                 "max_tokens",
                 "max_completion_tokens",
                 "max_output_tokens",
                 "stream_options.include_usage",
                 "generationConfig.maxOutputTokens",
                 "generation_config.max_output_tokens",
                 "options.num_predict",
                 "inferenceConfig.maxTokens"};
    s.hash_arrays = {"messages", "contents", "input"};
    s.capture_cap = 4096;
    return s;
  }();
  return spec;
}

bool Adapter::parse(std::string_view raw, json& out) {
  out = json::parse(raw, nullptr, false);
  return !out.is_discarded();
}

void Adapter::on_request(const JsonScanner& req, std::string_view target) {
  if (auto m = req.str("model")) call_.model = *m;
  if (kind_ == ApiKind::GeminiGenerate || kind_ == ApiKind::AnthropicMessages) {
    // Vertex AI names the model in the path (Gemini, and Anthropic's rawPredict)
    if (call_.model.empty()) call_.model = gemini_model_from_path(target);
  }
  if (is_bedrock(kind_)) {
    call_.model = bedrock_model_from_path(target);
    call_.stream = kind_ == ApiKind::BedrockConverseStream || kind_ == ApiKind::BedrockInvokeStream;
  }
  if (auto s = req.boolean("stream")) call_.stream = *s;
  for (const char* k : {"max_completion_tokens", "max_tokens", "max_output_tokens",
                        "generationConfig.maxOutputTokens", "generation_config.max_output_tokens",
                        "options.num_predict", "inferenceConfig.maxTokens"}) {
    if (auto v = req.integer(k)) {
      // a limit past any real one is no limit; a negative one is none (reserving it would
      // overflow the bucket's sums or reserve nothing)
      if (*v >= 0) call_.max_tokens = std::min(*v, kMaxTokenCount);
      break;
    }
  }
  int64_t n = -1;
  for (const char* k : {"messages", "contents"}) {
    n = req.array_len(k);
    if (n >= 0) break;
  }
  if (n < 0) {
    for (const char* k : {"input", "prompt"}) {
      if (req.top_is_string(k)) { n = 1; break; }
      n = req.array_len(k);
      if (n >= 0) break;
    }
  }
  if (n >= 0) call_.message_count = int(n);
}

Framing Adapter::framing(std::string_view content_type, std::string_view) const {
  if (detail::icontains(content_type, "event-stream")) return Framing::Sse;
  return Framing::Json;
}

void Adapter::on_doc(std::string_view event, std::string_view head, const JsonScanner& doc) {
  if (doc.failed() || !doc.done()) {
    return;  // not JSON ("[DONE]", a proxy's HTML page, a document cut by a gap): ignored
  }
  any_doc_ok_ = true;
  handle(event, doc);
}

void Adapter::take_error(const JsonScanner& doc, std::string_view path) {
  auto raw = doc.raw(path);
  if (!raw) return;
  json e;
  if (!parse(*raw, e)) return;
  if (e.is_object()) {
    for (const char* k : {"type", "status", "code"}) {
      auto it = e.find(k);
      if (it == e.end()) continue;
      if (it->is_string() && !it->get<std::string>().empty()) {
        call_.error_type = it->get<std::string>();
        return;
      }
      if (it->is_number_integer() && std::string_view(k) == "code") {
        call_.error_type = "code_" + std::to_string(it->get<int64_t>());
        return;
      }
    }
    if (call_.error_type.empty()) call_.error_type = "error";
  } else if (e.is_string()) {
    if (call_.error_type.empty()) call_.error_type = "error";
  }
}

void Adapter::model_if_missing(const JsonScanner& doc, std::string_view path) {
  if (!call_.model.empty()) return;
  if (auto m = doc.str(path); m && !m->empty()) call_.model = *m;
}

std::optional<int64_t> Adapter::token_count(const json& o, const char* key) {
  if (!o.is_object()) return std::nullopt;
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    if (v <= uint64_t(kMaxTokenCount)) return int64_t(v);
  } else if (it->is_number_integer()) {
    const int64_t v = it->get<int64_t>();
    if (v >= 0 && v <= kMaxTokenCount) return v;
  } else if (it->is_number_float()) {
    const double d = it->get<double>();
    if (std::isfinite(d) && d >= 0 && d <= double(kMaxTokenCount) && d == std::floor(d)) return int64_t(d);
  }
  usage_malformed_ = true;
  return std::nullopt;
}

std::optional<int64_t> Adapter::token_count_raw(std::optional<std::string_view> raw) {
  if (!raw) return std::nullopt;
  json v;
  if (!parse(*raw, v)) {
    usage_malformed_ = true;
    return std::nullopt;
  }
  json o = json::object();
  o["n"] = std::move(v);
  return token_count(o, "n");
}

static const json& sub(const json& o, const char* k) {
  static const json kNull;
  if (!o.is_object()) return kNull;
  auto it = o.find(k);
  return it == o.end() ? kNull : *it;
}

void Adapter::usage_openai(const json& u) {
  if (!u.is_object()) return;
  call_.input_tokens = token_count_or_0(u, "prompt_tokens");
  call_.output_tokens = token_count_or_0(u, "completion_tokens");
  call_.cache_read_tokens = token_count_or_0(sub(u, "prompt_tokens_details"), "cached_tokens");
  // DeepSeek: prompt_tokens = prompt_cache_hit_tokens + prompt_cache_miss_tokens; the hits are
  // the cached input (when it does not also send prompt_tokens_details.cached_tokens).
  if (call_.cache_read_tokens == 0) call_.cache_read_tokens = token_count_or_0(u, "prompt_cache_hit_tokens");
  call_.cache_write_tokens = 0;
  call_.reasoning_tokens = token_count_or_0(sub(u, "completion_tokens_details"), "reasoning_tokens");
  call_.usage_present = true;
  input_known_ = true;
}

void Adapter::usage_responses(const json& u) {
  if (!u.is_object()) return;
  call_.input_tokens = token_count_or_0(u, "input_tokens");
  call_.output_tokens = token_count_or_0(u, "output_tokens");
  call_.cache_read_tokens = token_count_or_0(sub(u, "input_tokens_details"), "cached_tokens");
  call_.cache_write_tokens = 0;
  call_.reasoning_tokens = token_count_or_0(sub(u, "output_tokens_details"), "reasoning_tokens");
  call_.usage_present = true;
  input_known_ = true;
}

int64_t Adapter::input_estimate(const FinishInfo& fi) const {
  int64_t in_est = 0;
  if (fi.request_scan_ok)
    in_est = estimate_tokens_from_text(fi.request_string_bytes) + 3 * int64_t(call_.message_count);
  else
    in_est = estimate_tokens_from_text(fi.request_body_bytes * 3 / 4);
  if (fi.request_body_bytes > 0 && in_est < 1) in_est = 1;
  return in_est;
}

void Adapter::finish(const FinishInfo& fi) {
  header_usage(fi);
  const bool error_status = call_.status >= 400;
  if (usage_malformed_) {  // what the wire said cannot be billed: estimated like a call without usage
    call_.usage_malformed = true;
    call_.usage_present = false;
    call_.input_tokens = call_.output_tokens = 0;
    call_.cache_read_tokens = call_.cache_write_tokens = call_.reasoning_tokens = 0;
    call_.cache_write_1h_tokens = 0;
  }
  if (call_.usage_present && (final_usage_ || fi.complete)) {  // the wire's usage, as billed
    if (!input_known_ && call_.input_tokens == 0) {
      // the part carrying the input side was lost (a gap ate Anthropic's message_start)
      call_.input_tokens = input_estimate(fi);
      call_.estimated = true;
      call_.estimate_reason = "partial_usage";
    }
    return;
  }
  if (fi.have_response && fi.complete && error_status) return;      // an error is not billed

  const int64_t in_est = input_estimate(fi);
  int64_t out_est = estimate_tokens_from_text(text_bytes_);

  if (call_.usage_malformed) {
    call_.estimate_reason = "malformed_usage";
  } else if (!fi.have_response) {
    call_.estimate_reason = "no_response";
  } else if (fi.body_too_large) {
    call_.estimate_reason = "body_too_large";
  } else if (fi.body_unparsed || (!any_doc_ok_ && !call_.usage_present)) {
    call_.estimate_reason = fi.complete ? "unparsed_body" : "cut_off";
  } else if (!fi.complete) {
    call_.estimate_reason = "cut_off";
  } else if (call_.stream) {
    call_.estimate_reason = "stream_without_usage";
  } else {
    call_.estimate_reason = "no_usage";
  }
  call_.estimated = true;
  if (call_.usage_present) {
    // usage seen but not the final one (e.g. Anthropic message_start, then cut off): keep what
    // the wire said, raise output to what was streamed
    if (call_.input_tokens == 0) call_.input_tokens = in_est;
    if (out_est > call_.output_tokens) call_.output_tokens = out_est;
    return;
  }
  call_.input_tokens = in_est;
  call_.output_tokens = out_est;
}

std::unique_ptr<Adapter> make_adapter(ApiKind k, LlmCall& call) {
  switch (k) {
    case ApiKind::OpenAIChat:
    case ApiKind::OpenAICompletions: return make_openai_chat_adapter(k, call);
    case ApiKind::OpenAIResponses: return make_openai_responses_adapter(call);
    case ApiKind::AnthropicMessages: return make_anthropic_adapter(call);
    case ApiKind::GeminiGenerate: return make_gemini_adapter(call);
    case ApiKind::OllamaChat:
    case ApiKind::OllamaGenerate: return make_ollama_adapter(k, call);
    case ApiKind::BedrockConverse:
    case ApiKind::BedrockConverseStream:
    case ApiKind::BedrockInvoke:
    case ApiKind::BedrockInvokeStream: return make_bedrock_adapter(k, call);
  }
  return nullptr;
}

}  // namespace ab::protocol

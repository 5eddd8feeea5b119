// OpenAI Responses (/v1/responses). Non-stream: `usage` on the response object
// {input_tokens, input_tokens_details.cached_tokens, output_tokens,
//  output_tokens_details.reasoning_tokens}. Stream: typed SSE events, no [DONE]; it ends with
// response.completed | response.incomplete | response.failed whose `response.usage` holds the
// usage. Streamed text is counted from `*.delta` events only (the `*.done` events repeat it).
#include <nlohmann/json.hpp>

#include "protocol/adapter.h"

namespace ab::protocol {
namespace {

class ResponsesAdapter final : public Adapter {
 public:
  using Adapter::Adapter;
  const ScanSpec& response_spec() const override {
    static const ScanSpec spec = [] {
      ScanSpec s;
      s.capture = {"type", "model", "usage", "error", "response.model", "response.usage",
                   "response.error"};
      s.text_keys = {"delta", "text", "arguments"};
      return s;
    }();
    return spec;
  }

 protected:
  void handle(std::string_view, const JsonScanner& doc) override {
    const std::string type = doc.str("type").value_or("");
    if (type.empty() || type == "response" || doc.has("usage")) {  // non-stream body
      text_bytes_ += doc.text_bytes();
      model_if_missing(doc, "model");
      take_error(doc);
      usage(doc.raw("usage"));
      return;
    }
    if (type.size() > 6 && type.ends_with(".delta")) text_bytes_ += doc.text_bytes();
    if (type == "error") take_error(doc);  // {"type":"error","code":…} also carries error fields
    if (type.starts_with("response.")) {
      model_if_missing(doc, "response.model");
      take_error(doc, "response.error");
      usage(doc.raw("response.usage"));
    }
    if (type == "error" && call_.error_type.empty()) call_.error_type = "error";
  }

 private:
  void usage(std::optional<std::string_view> raw) {
    if (!raw || *raw == "null") return;
    nlohmann::json u;
    if (parse(*raw, u) && u.is_object()) {
      usage_responses(u);
      final_usage_ = true;
    }
  }
};

}  // namespace

std::unique_ptr<Adapter> make_openai_responses_adapter(LlmCall& call) {
  return std::make_unique<ResponsesAdapter>(ApiKind::OpenAIResponses, call);
}

}  // namespace ab::protocol

// OpenAI Chat Completions (…/chat/completions) and legacy Completions (/v1/completions), and
// every OpenAI-compatible server. Non-stream: one JSON body with `usage`. Stream: SSE chunks,
// `data: [DONE]` at the end; usage only with stream_options.include_usage (one chunk with
// "choices":[] just before [DONE]) — or on every chunk for servers with continuous usage stats:
// the last one wins. prompt_tokens already includes cached_tokens; completion_tokens includes
// reasoning_tokens.
#include <nlohmann/json.hpp>

#include "protocol/adapter.h"

namespace ab::protocol {
namespace {

class OpenAIChatAdapter final : public Adapter {
 public:
  using Adapter::Adapter;
  const ScanSpec& response_spec() const override {
    static const ScanSpec spec = [] {
      ScanSpec s;
      s.capture = {"model", "usage", "error"};
      s.text_keys = {"content", "text", "refusal", "arguments", "reasoning_content", "reasoning"};
      return s;
    }();
    return spec;
  }

 protected:
  void handle(std::string_view, const JsonScanner& doc) override {
    text_bytes_ += doc.text_bytes();
    model_if_missing(doc, "model");
    take_error(doc);
    if (auto u = doc.raw("usage"); u && *u != "null") {
      nlohmann::json j;
      if (parse(*u, j) && j.is_object()) {
        usage_openai(j);
        final_usage_ = true;
      }
    }
  }
};

}  // namespace

std::unique_ptr<Adapter> make_openai_chat_adapter(ApiKind k, LlmCall& call) {
  return std::make_unique<OpenAIChatAdapter>(k, call);
}

}  // namespace ab::protocol

// Ollama (/api/chat, /api/generate; port 11434, plain HTTP). Streams NDJSON by default
// ("stream" absent means true); the final object has "done":true with prompt_eval_count
// (input) and eval_count (output). Errors: {"error":"…"}.
#include "protocol/adapter.h"

namespace ab::protocol {
namespace {

class OllamaAdapter final : public Adapter {
 public:
  using Adapter::Adapter;
  const ScanSpec& response_spec() const override {
    static const ScanSpec spec = [] {
      ScanSpec s;
      s.capture = {"model", "done", "prompt_eval_count", "eval_count", "error"};
      s.text_keys = {"content", "response", "thinking"};
      return s;
    }();
    return spec;
  }

  void on_request(const JsonScanner& req, std::string_view target) override {
    call_.stream = true;  // Ollama's default
    Adapter::on_request(req, target);
    if (kind_ == ApiKind::OllamaGenerate && req.top_is_string("prompt")) call_.message_count = 1;
  }

  Framing framing(std::string_view, std::string_view) const override { return Framing::Json; }

 protected:
  void handle(std::string_view, const JsonScanner& doc) override {
    text_bytes_ += doc.text_bytes();
    model_if_missing(doc, "model");
    take_error(doc);
    if (doc.boolean("done").value_or(false)) {
      call_.input_tokens = token_count_raw(doc.raw("prompt_eval_count")).value_or(0);
      call_.output_tokens = token_count_raw(doc.raw("eval_count")).value_or(0);
      call_.cache_read_tokens = call_.cache_write_tokens = call_.reasoning_tokens = 0;
      call_.usage_present = true;
      input_known_ = true;
      final_usage_ = true;
    }
  }
};

}  // namespace

std::unique_ptr<Adapter> make_ollama_adapter(ApiKind k, LlmCall& call) {
  return std::make_unique<OllamaAdapter>(k, call);
}

}  // namespace ab::protocol

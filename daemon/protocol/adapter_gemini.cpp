// Google Gemini (…/models/{model}:generateContent and :streamGenerateContent, Generative
// Language API and Vertex AI). The model is in the path. Streaming with ?alt=sse is SSE;
// without it the body is ONE JSON array delivered in pieces, each element a chunk. Every chunk
// carries running totals in usageMetadata: the last wins.
// input = promptTokenCount (cached included) + toolUsePromptTokenCount;
// output = candidatesTokenCount + thoughtsTokenCount (thoughts are billed as output);
// cache_read = cachedContentTokenCount.
#include <nlohmann/json.hpp>

#include "protocol/adapter.h"
#include "protocol/strutil.h"

namespace ab::protocol {
namespace {

class GeminiAdapter final : public Adapter {
 public:
  using Adapter::Adapter;
  const ScanSpec& response_spec() const override {
    static const ScanSpec spec = [] {
      ScanSpec s;
      s.capture = {"usageMetadata", "modelVersion", "error"};
      s.text_keys = {"text"};
      return s;
    }();
    return spec;
  }

  void on_request(const JsonScanner& req, std::string_view target) override {
    Adapter::on_request(req, target);
    std::string_view path = target.substr(0, target.find('?'));
    call_.stream = path.ends_with(":streamGenerateContent");
  }

  Framing framing(std::string_view content_type, std::string_view target) const override {
    if (detail::icontains(content_type, "event-stream")) return Framing::Sse;
    std::string_view path = target.substr(0, target.find('?'));
    if (path.ends_with(":streamGenerateContent")) {
      auto q = target.find('?');
      if (q != std::string_view::npos && target.find("alt=sse", q) != std::string_view::npos)
        return Framing::Sse;
      return Framing::JsonArray;
    }
    return Framing::Json;
  }

 protected:
  void handle(std::string_view, const JsonScanner& doc) override {
    text_bytes_ += doc.text_bytes();
    model_if_missing(doc, "modelVersion");
    take_error(doc);
    auto raw = doc.raw("usageMetadata");
    if (!raw) return;
    nlohmann::json u;
    if (!parse(*raw, u) || !u.is_object()) return;
    auto n = [&](const char* k) -> int64_t { return token_count_or_0(u, k); };
    const int64_t thoughts = n("thoughtsTokenCount");
    call_.input_tokens = n("promptTokenCount") + n("toolUsePromptTokenCount");
    call_.output_tokens = n("candidatesTokenCount") + thoughts;
    call_.cache_read_tokens = n("cachedContentTokenCount");
    call_.cache_write_tokens = 0;
    call_.reasoning_tokens = thoughts;
    call_.usage_present = true;
    input_known_ = u.contains("promptTokenCount");
    // Each chunk's totals are complete as of that chunk: the last one seen is final unless
    // the stream is cut (then finish() sees complete=false).
    final_usage_ = true;
  }
};

}  // namespace

std::unique_ptr<Adapter> make_gemini_adapter(LlmCall& call) {
  return std::make_unique<GeminiAdapter>(ApiKind::GeminiGenerate, call);
}

}  // namespace ab::protocol

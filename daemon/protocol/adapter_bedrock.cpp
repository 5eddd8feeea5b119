// AWS Bedrock (bedrock-runtime.{region}.amazonaws.com). The model is in the path.
//  - Converse (/converse): one JSON body; usage {inputTokens, outputTokens, totalTokens,
//    cacheReadInputTokens, cacheWriteInputTokens}.
//  - ConverseStream (/converse-stream): application/vnd.amazon.eventstream; the "metadata"
//    event carries the same usage object; "contentBlockDelta" events carry the text.
//  - InvokeModel (/invoke): the model's own body (Anthropic's Messages shape for Claude); the
//    X-Amzn-Bedrock-Input-Token-Count / -Output-Token-Count headers count every model family.
//  - InvokeModelWithResponseStream: event stream of "chunk" events whose base64 bytes are the
//    model's own stream events (Anthropic's for Claude); the last one carries
//    "amazon-bedrock-invocationMetrics" {inputTokenCount, outputTokenCount}.
// Billed input = inputTokens + cacheRead + cacheWrite (Converse's inputTokens excludes them).
// Exceptions (":message-type" exception) name the error: throttlingException, ….
#include <nlohmann/json.hpp>

#include "protocol/adapter.h"
#include "protocol/strutil.h"

namespace ab::protocol {
namespace {

class BedrockAdapter final : public Adapter {
 public:
  using Adapter::Adapter;
  const ScanSpec& response_spec() const override {
    static const ScanSpec spec = [] {
      ScanSpec s;
      s.capture = {"usage", "message", "type", "error", "message.usage", "amazon-bedrock-invocationMetrics",
                   "Message", "__type"};
      s.text_keys = {"text", "partial_json", "input", "thinking"};
      return s;
    }();
    return spec;
  }

  Framing framing(std::string_view content_type, std::string_view target) const override {
    if (detail::icontains(content_type, "vnd.amazon.eventstream")) return Framing::EventStream;
    if (kind_ == ApiKind::BedrockConverseStream || kind_ == ApiKind::BedrockInvokeStream) {
      // an error answer to a stream request is plain JSON
      if (detail::icontains(content_type, "json")) return Framing::Json;
      return Framing::EventStream;
    }
    return Adapter::framing(content_type, target);
  }

 protected:
  void handle(std::string_view event, const JsonScanner& doc) override {
    text_bytes_ += doc.text_bytes();
    if (event.starts_with("exception:") || event.starts_with("error:")) {
      call_.error_type = std::string(event.substr(event.find(':') + 1));
      if (call_.error_type.empty()) call_.error_type = "error";
      return;
    }
    if (!doc.raw("usage") && !doc.raw("message.usage") && !doc.raw("amazon-bedrock-invocationMetrics")) {
      // an error body: {"message": "..."} with the type in x-amzn-ErrorType or "__type"
      if (call_.status >= 400 && call_.error_type.empty()) {
        if (auto t = doc.str("__type")) call_.error_type = *t;
        else take_error(doc);
      }
    }
    if (auto m = doc.raw("amazon-bedrock-invocationMetrics")) {
      nlohmann::json u;
      if (parse(*m, u) && u.is_object()) {
        in_ = token_count_or_0(u, "inputTokenCount");
        out_ = token_count_or_0(u, "outputTokenCount");
        cr_ = token_count_or_0(u, "cacheReadInputTokenCount");
        cw_ = token_count_or_0(u, "cacheWriteInputTokenCount");
        input_known_ = u.contains("inputTokenCount");
        publish(true);
        metrics_ = true;
      }
      return;
    }
    if (metrics_) return;
    if (kind_ == ApiKind::BedrockConverse || kind_ == ApiKind::BedrockConverseStream) {
      if (auto raw = doc.raw("usage")) converse_usage(*raw);
      return;
    }
    // InvokeModel: the model's own shape; Claude's (Anthropic Messages) is read here
    const std::string type = doc.str("type").value_or("");
    if (type == "message_start") anthropic_usage(doc.raw("message.usage"), false);
    else if (type == "message_delta") anthropic_usage(doc.raw("usage"), true);
    else if (type == "message_stop") { if (call_.usage_present) final_usage_ = true; }
    else if (doc.raw("usage")) anthropic_usage(doc.raw("usage"), true);
  }

  void header_usage(const FinishInfo& fi) override {
    auto count = [&](const std::string& text) {
      return text.empty() ? std::nullopt : token_count_raw(std::string_view(text));
    };
    auto in = count(fi.header_input_tokens), out = count(fi.header_output_tokens);
    if (!in || !out) return;
    // The service's own counts for the whole invocation win over the body's; the cache split
    // comes from its cache headers, else from the body.
    in_ = *in;
    out_ = *out;
    if (auto v = count(fi.header_cache_read_tokens)) cr_ = *v;
    if (auto v = count(fi.header_cache_write_tokens)) cw_ = *v;
    input_known_ = true;
    publish(true);
  }

 private:
  void publish(bool final) {
    call_.input_tokens = in_ + cr_ + cw_;
    call_.output_tokens = out_;
    call_.cache_read_tokens = cr_;
    call_.cache_write_tokens = cw_;
    call_.reasoning_tokens = 0;
    call_.usage_present = true;
    if (final) final_usage_ = true;
  }
  void converse_usage(std::string_view raw) {
    nlohmann::json u;
    if (!parse(raw, u) || !u.is_object()) return;
    auto in = token_count(u, "inputTokens");
    in_ = in.value_or(0);
    out_ = token_count_or_0(u, "outputTokens");
    cr_ = token_count_or_0(u, "cacheReadInputTokens");
    cw_ = token_count_or_0(u, "cacheWriteInputTokens");
    input_known_ = in.has_value();
    publish(true);
  }
  void anthropic_usage(std::optional<std::string_view> raw, bool final) {
    if (!raw) return;
    nlohmann::json u;
    if (!parse(*raw, u) || !u.is_object()) return;
    if (auto v = token_count(u, "input_tokens")) { in_ = *v; input_known_ = true; }
    if (auto v = token_count(u, "cache_creation_input_tokens")) cw_ = *v;
    if (auto v = token_count(u, "cache_read_input_tokens")) cr_ = *v;
    if (auto v = token_count(u, "output_tokens")) out_ = *v;  // cumulative: replace
    publish(final);
  }
  int64_t in_ = 0, out_ = 0, cr_ = 0, cw_ = 0;
  bool metrics_ = false;
};

}  // namespace

std::unique_ptr<Adapter> make_bedrock_adapter(ApiKind k, LlmCall& call) {
  return std::make_unique<BedrockAdapter>(k, call);
}

}  // namespace ab::protocol

// Anthropic Messages (/v1/messages). Non-stream: `usage` on the message. Stream: SSE events
// message_start (message.usage: input side + an initial output_tokens), content_block_*,
// message_delta (usage.output_tokens CUMULATIVE — replace, never add; may also carry cumulative
// input/cache counts with server tools), message_stop, ping, error.
// Billed input = input_tokens + cache_creation_input_tokens + cache_read_input_tokens; of the
// cache writes, usage.cache_creation.ephemeral_1h_input_tokens were written with the 1-hour TTL.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "protocol/adapter.h"

namespace ab::protocol {
namespace {

class AnthropicAdapter final : public Adapter {
 public:
  using Adapter::Adapter;
  const ScanSpec& response_spec() const override {
    static const ScanSpec spec = [] {
      ScanSpec s;
      s.capture = {"type", "model", "usage", "error", "message.model", "message.usage"};
      s.text_keys = {"text", "thinking", "partial_json"};
      return s;
    }();
    return spec;
  }

 protected:
  void handle(std::string_view, const JsonScanner& doc) override {
    const std::string type = doc.str("type").value_or("");
    text_bytes_ += doc.text_bytes();
    take_error(doc);
    if (type == "message_start") {
      model_if_missing(doc, "message.model");
      apply(doc.raw("message.usage"), /*final=*/false);
    } else if (type == "message_delta") {
      apply(doc.raw("usage"), /*final=*/true);
    } else if (type == "message_stop") {
      if (call_.usage_present) final_usage_ = true;
    } else if (doc.has("usage")) {  // non-stream body (or its rescued tail)
      model_if_missing(doc, "model");
      apply(doc.raw("usage"), /*final=*/true);
    }
  }

 private:
  bool field(const nlohmann::json& u, const char* k, int64_t& out) {
    auto v = token_count(u, k);
    if (!v) return false;
    out = *v;
    return true;
  }
  // Every field present replaces the previous value (the counts are cumulative).
  void apply(std::optional<std::string_view> raw, bool final) {
    if (!raw) return;
    nlohmann::json u;
    if (!parse(*raw, u) || !u.is_object()) return;
    if (field(u, "input_tokens", in_)) input_known_ = true;
    field(u, "cache_creation_input_tokens", cw_);
    field(u, "cache_read_input_tokens", cr_);
    field(u, "output_tokens", out_);
    // cache_creation splits the writes by TTL: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}
    if (auto cc = u.find("cache_creation"); cc != u.end() && cc->is_object()) field(*cc, "ephemeral_1h_input_tokens", cw1h_);
    call_.input_tokens = in_ + cw_ + cr_;
    call_.cache_write_tokens = cw_;
    call_.cache_write_1h_tokens = std::min(cw1h_, cw_);
    call_.cache_read_tokens = cr_;
    call_.output_tokens = out_;
    call_.usage_present = true;
    if (final) final_usage_ = true;
  }
  int64_t in_ = 0, cw_ = 0, cw1h_ = 0, cr_ = 0, out_ = 0;
};

}  // namespace

std::unique_ptr<Adapter> make_anthropic_adapter(LlmCall& call) {
  return std::make_unique<AnthropicAdapter>(ApiKind::AnthropicMessages, call);
}

}  // namespace ab::protocol

// adapter.h — provider adapters (internal to the protocol module). One adapter per exchange:
// it reads the request's JSON facts (model, stream, limits, message count), chooses how the
// response body is cut into documents, reads usage/errors from each document, and at the end
// fills the usage fields of the LlmCall, estimating them when the wire carried none.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "protocol/classify.h"
#include "protocol/codec.h"
#include "protocol/json_scan.h"
#include "protocol/llm_call.h"

namespace ab::protocol {

// Facts about the exchange that the HTTP layer knows and the adapter needs at the end.
struct FinishInfo {
  bool have_response = false;    // a status line arrived
  bool complete = false;         // the response ended where its framing said it would
  bool body_too_large = false;   // ... because it decoded to more than ContentDecoder::max_output
  bool body_unparsed = false;    // the body could not be decoded (bad/unsupported encoding, lost sync)
  uint64_t request_body_bytes = 0;
  bool request_scan_ok = false;  // the request JSON was scanned without a gap or syntax error
  uint64_t request_string_bytes = 0;  // string-value bytes of the request JSON
  // Bedrock: the X-Amzn-Bedrock-Input-Token-Count, -Output-Token-Count,
  // -Cache-Read-Input-Token-Count and -Cache-Write-Input-Token-Count response headers, as
  // their text (absent: empty). The adapter validates them like any count.
  std::string header_input_tokens, header_output_tokens, header_cache_read_tokens, header_cache_write_tokens;
};

// Token estimates (documented rule, used when the wire carries no usage):
//  - output ≈ ceil(streamed text bytes / 4): the bytes of the generated text, reasoning and tool
//    arguments read from the response (JSON-escaped length, so a little high for escapes);
//  - input ≈ ceil(string-value bytes of the request JSON / 4) + 3 per message, i.e. the text
//    of the messages without the JSON punctuation and keys; when the request could not be
//    scanned (gap, not JSON), ceil(body bytes × 3/4 / 4) (a quarter of a JSON body is overhead);
//  - a request with a body is never estimated at 0 input tokens (at least 1).
int64_t estimate_tokens_from_text(uint64_t bytes);

// The most tokens one count on the wire may say (a thousand times the largest context window
// sold today): a count outside [0, kMaxTokenCount] is not a count but a malformed response.
inline constexpr int64_t kMaxTokenCount = 1'000'000'000;

class Adapter : public DocSink {
 public:
  Adapter(ApiKind k, LlmCall& call) : kind_(k), call_(call) {}
  ~Adapter() override = default;
  ApiKind kind() const { return kind_; }

  // Request side: the scan spec for request bodies (shared by every adapter) and the facts.
  static const ScanSpec& request_spec();
  virtual void on_request(const JsonScanner& req, std::string_view target);

  // Response side.
  virtual Framing framing(std::string_view content_type, std::string_view target) const;
  virtual const ScanSpec& response_spec() const = 0;
  void on_doc(std::string_view event, std::string_view head, const JsonScanner& doc) override;
  void finish(const FinishInfo& fi);

  uint64_t output_text_bytes() const { return text_bytes_; }
  bool final_usage_seen() const { return final_usage_; }

 protected:
  virtual void handle(std::string_view event, const JsonScanner& doc) = 0;
  // Called first by finish(): usage carried by response headers (Bedrock). Default: none.
  virtual void header_usage(const FinishInfo&) {}
  // Helpers shared by the adapters.
  void take_error(const JsonScanner& doc, std::string_view path = "error");
  void model_if_missing(const JsonScanner& doc, std::string_view path);
  void usage_openai(const nlohmann::json& u);      // chat/completions shape
  void usage_responses(const nlohmann::json& u);   // Responses shape
  static bool parse(std::string_view raw, nlohmann::json& out);
  int64_t input_estimate(const FinishInfo& fi) const;
  // A token count of the usage: o[key] when it is an integer (or an integral number) in
  // [0, kMaxTokenCount]; absent: nullopt. Anything else (negative, fractional, too large, not a
  // number) marks the usage malformed and reads as nullopt: the call is then estimated
  // ("malformed_usage"), never billed what a broken or hostile server said.
  std::optional<int64_t> token_count(const nlohmann::json& o, const char* key);
  int64_t token_count_or_0(const nlohmann::json& o, const char* key) { return token_count(o, key).value_or(0); }
  // The same for a number the scanner found at `raw` (a JSON value's text).
  std::optional<int64_t> token_count_raw(std::optional<std::string_view> raw);

  ApiKind kind_;
  LlmCall& call_;
  uint64_t text_bytes_ = 0;
  bool final_usage_ = false;   // the usage a complete response ends with was seen
  bool input_known_ = false;   // the usage seen carried the input side
  bool any_doc_ok_ = false;
  bool usage_malformed_ = false;  // a token count was out of range or not a count
};

std::unique_ptr<Adapter> make_adapter(ApiKind k, LlmCall& call);

// Factories, one per file.
std::unique_ptr<Adapter> make_openai_chat_adapter(ApiKind k, LlmCall& call);  // chat + legacy
std::unique_ptr<Adapter> make_openai_responses_adapter(LlmCall& call);
std::unique_ptr<Adapter> make_anthropic_adapter(LlmCall& call);
std::unique_ptr<Adapter> make_gemini_adapter(LlmCall& call);
std::unique_ptr<Adapter> make_ollama_adapter(ApiKind k, LlmCall& call);
std::unique_ptr<Adapter> make_bedrock_adapter(ApiKind k, LlmCall& call);

}  // namespace ab::protocol

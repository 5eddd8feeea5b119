// codec.h — incremental Content-Encoding decoders (gzip, deflate zlib/raw, br) and the
// body framers that cut a decoded response body into JSON documents (SSE events, NDJSON
// lines, elements of one streamed JSON array, or one JSON body). Bounded memory throughout.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "protocol/eventstream.h"
#include "protocol/json_scan.h"

namespace ab::protocol {

class ContentDecoder {
 public:
  enum class Kind { Identity, Gzip, Deflate, Brotli, Unsupported };
  // From a Content-Encoding header value ("" / identity / gzip / x-gzip / deflate / br).
  static Kind kind_from_header(std::string_view content_encoding);

  explicit ContentDecoder(Kind k);
  ~ContentDecoder();
  ContentDecoder(const ContentDecoder&) = delete;
  ContentDecoder& operator=(const ContentDecoder&) = delete;

  using Out = std::function<void(std::string_view)>;
  // Decodes one piece, handing every produced byte range to `out`. Returns false (and stays
  // failed, producing nothing more) on corrupt input, an unsupported coding, or more than
  // `max_output` decoded bytes (decompression bombs).
  bool feed(std::string_view in, const Out& out);
  bool failed() const { return failed_; }
  // failed because the body decoded to more than max_output (a bomb, or a body no LLM answer is)
  bool too_large() const { return too_large_; }
  Kind kind() const { return kind_; }
  uint64_t produced() const { return produced_; }
  // 64 MiB: far above any LLM answer, and what one response may cost the event loop to inflate
  static constexpr uint64_t max_output = 64ULL << 20;

 private:
  struct Impl;
  Kind kind_;
  bool failed_ = false;
  bool too_large_ = false;
  uint64_t produced_ = 0;
  std::unique_ptr<Impl> impl_;
};

// How a response body is cut into JSON documents.
enum class Framing {
  Json,       // one JSON value, or several separated by whitespace/newlines (NDJSON)
  JsonArray,  // one JSON array streamed in pieces; each element is a document (Gemini)
  Sse,        // text/event-stream; each event's data is a document
  EventStream,  // application/vnd.amazon.eventstream (Bedrock): each message's payload is a
                // document named by its :event-type; a "chunk" event's base64 "bytes" are
                // decoded and the model's own JSON inside is the document
};

// Receives each document once it is complete. `event` is the SSE event name ("" otherwise);
// `data_head` the first bytes of the document text (to spot "[DONE]").
class DocSink {
 public:
  virtual ~DocSink() = default;
  virtual void on_doc(std::string_view event, std::string_view data_head, const JsonScanner& doc) = 0;
};

class DocStream {
 public:
  DocStream(Framing f, const ScanSpec* spec, DocSink* sink);
  void feed(std::string_view decoded);
  // End of body: dispatches an SSE event without its final blank line, or a bare number.
  void finish();
  // Some bytes were lost: drop the document in progress and restart at the next boundary.
  // For a single JSON body the tail is kept, and at finish() the top-level keys of the scan
  // spec ("usage", "model", …) are looked up in it (usage usually closes the body).
  void resync();
  uint64_t docs() const { return docs_; }       // documents dispatched
  uint64_t bad_docs() const { return bad_; }    // documents that were not valid JSON
  // EventStream framing: messages decoded, and frames dropped (bad CRC, malformed headers,
  // a chunk whose bytes are not base64).
  uint64_t frames() const;
  uint64_t bad_frames() const;

 private:
  void feed_json(std::string_view in);
  void feed_array(std::string_view in);
  void feed_sse(std::string_view in);
  void sse_line_end();
  void sse_dispatch();
  void dispatch(std::string_view event);
  void scan(std::string_view in);  // scanner feed + data_head
  void rescue();                   // Json after a gap: rebuild the captured keys from the tail
  void feed_eventstream(std::string_view in);
  void eventstream_message(const EventStreamMessage& m);

  Framing f_;
  DocSink* sink_;
  JsonScanner sc_;
  std::string head_;
  uint64_t docs_ = 0, bad_ = 0;
  bool skip_to_nl_ = false;  // Json: after an error, skip to the next line
  const ScanSpec* spec_;
  bool rescue_ = false, ok_since_resync_ = false;
  std::string tail_;         // Json after a gap: the last bytes, for rescue()
  // JsonArray
  enum class Arr : uint8_t { Before, BetweenElems, InElem, End, Lost } arr_ = Arr::Before;
  char arr_last_ = 0;
  // SSE
  enum class Sse : uint8_t { LineStart, Field, SpaceAfterColon, Data, Event, Ignore } sse_ = Sse::LineStart;
  std::string field_, event_;
  bool have_data_ = false, after_cr_ = false, sse_lost_ = false;
  // EventStream
  std::unique_ptr<EventStreamDecoder> es_;
  uint64_t es_bad_payloads_ = 0;
};

}  // namespace ab::protocol

// connection.h — HTTP/1.1 and HTTP/2 reassembly of ONE TLS stream (one SSL object of one process) into
// request/response exchanges, with LLM usage read from the bodies. This is the protocol
// module's public entry point; classify.h holds the free functions the daemon also uses.
//
// Contract:
//  - Feed the plaintext in the order the process wrote/read it, in pieces of any size
//    (Dir::Request = bytes the process wrote, SSL_write; Dir::Response = bytes it read).
//    `mono_ns` is a monotonic timestamp of the piece; it only feeds the exchange timings.
//  - gap() says the capture lost `lost_bytes` of one direction at that point. Inside a
//    Content-Length body or a chunk's data the parser skips them exactly and keeps framing;
//    elsewhere (headers, chunk-size lines) it resynchronizes at the next request/status line.
//    Either way the exchange is marked capture_truncated.
//  - Exchanges come out of take_exchanges() in request order once their response ended (or on
//    close()/resync, incomplete). Each has its LlmCall protocol fields filled; the caller fills
//    `who`, wall-clock times, cost. Requests that are not LLM calls come out too (is_llm=false,
//    no body parsing).
//  - Never throws on input; memory per connection is bounded (headers ≤ 64 KiB, a request body
//    is scanned as it streams and never kept whole, response bodies are decoded and scanned
//    incrementally, at most 64 pipelined requests queued).
//  - Secrets: the header lists exclude credential headers (classify.h is_secret_header), the
//    path excludes key= query parameters; raw bytes are never logged.
//  - HTTP/2: a stream that starts with the client preface is read frame by frame (h2_reader.h),
//    HPACK decoded, one exchange per client stream (streams interleave; exchanges come out in
//    the order their responses end; each request's RequestInfo when its END_STREAM is written).
//    A stream whose first bytes are an HTTP/2 frame but no preface (first seen mid-way) cannot
//    be decoded: h2_hpack_desync is set and nothing of it is attributed.
//  - Not thread-safe: one Connection is used by one thread at a time.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/classify.h"
#include "protocol/llm_call.h"

namespace ab::protocol {

class HeaderBudget;

enum class Dir { Request, Response };

using HeaderList = std::vector<std::pair<std::string, std::string>>;  // name lower-cased

struct Exchange {
  LlmCall call;                 // protocol fields filled (see llm_call.h)
  bool is_llm = false;          // the method/path (or the connection's api hint) is an LLM call
  std::optional<ApiKind> kind;  // which adapter parsed it
  uint64_t request_start_ns = 0;   // first request byte
  uint64_t request_end_ns = 0;     // last request byte (0 if the request never completed)
  uint64_t response_start_ns = 0;  // first byte of the final status line (0: no response)
  uint64_t response_end_ns = 0;    // last response byte, or close/resync time when cut
  HeaderList request_headers;   // secrets removed
  HeaderList response_headers;  // secrets removed
  // Fingerprints for loop detection (0 = unknown): a hash of the last element of the request's
  // messages/contents/input array, and the number of output text bytes read (for estimates).
  uint64_t last_message_hash = 0;
  uint64_t output_text_bytes = 0;
  std::string last_message_text;      // raw JSON of the last message (capped; memory only)
  std::string previous_message_text;  // and of the one before it (the previous turn)
};

// What the request side knows once a request is fully written (before any response): enough
// to settle a reservation or feed loop detectors early. See take_requests().
struct RequestInfo {
  std::string method, host, path, provider, api, model;
  bool is_llm = false, stream = false;
  int64_t max_tokens = -1;
  int message_count = 0;
  uint64_t request_bytes = 0;
  uint64_t request_start_ns = 0, request_end_ns = 0;
  uint64_t last_message_hash = 0;
  std::string last_message_text;      // as in Exchange: memory only, for fingerprints
  std::string previous_message_text;
};

struct ConnectionStats {
  uint64_t exchanges = 0;          // exchanges produced (LLM or not)
  uint64_t non_llm_exchanges = 0;
  uint64_t incomplete = 0;         // exchanges with complete=false
  uint64_t truncated = 0;          // exchanges with capture_truncated
  uint64_t http2_detected = 0;     // 1 once the stream was found to be HTTP/2
  uint64_t h2_streams = 0;         // HTTP/2 client streams opened (requests)
  uint64_t h2_hpack_desync = 0;    // 1 when HTTP/2 headers could not be decoded (first seen
                                   // mid-way, or a gap/corruption in a header block)
  uint64_t h2_protocol_errors = 0; // malformed HTTP/2 frames
  uint64_t upgraded = 0;           // 1 once a 101 Switching Protocols was seen (left unparsed)
  uint64_t unparsed_bytes = 0;     // bytes not parsed because of HTTP/2 or an upgrade
  uint64_t garbage_bytes = 0;      // bytes skipped while looking for a request/status line
  uint64_t parse_errors = 0;       // malformed or oversized message heads, bad chunk framing
  uint64_t header_budget_drops = 0;  // heads (HTTP/2: header blocks) dropped: the shared
                                     // header budget (Options::header_budget) was spent
  uint64_t resyncs = 0;            // times parsing restarted at a request/status line
  uint64_t eventstream_frames = 0;      // Bedrock event-stream messages decoded
  uint64_t eventstream_bad_frames = 0;  // ... dropped: bad CRC, malformed headers or payload
  uint64_t gaps = 0, lost_bytes = 0;
};

class Connection {
 public:
  struct Options {
    // Wire format to assume for POSTs whose path classify_path() does not recognize (a policy
    // endpoint declared with `api:`); recognized paths always win, and well-known non-call
    // endpoints (models, embeddings, token counting, files, batches, Ollama management) are
    // never calls.
    std::optional<ApiKind> api_hint;
    // Endpoint fallback when a request has no Host header ("host" or "host:port").
    std::string host_hint;
    size_t max_header_bytes = 64 * 1024;
    size_t max_pipelined = 64;
    // The cap on header bytes buffered by all connections together (header_budget.h), owned
    // by the caller and outliving the connection; null: only the per-connection bounds.
    HeaderBudget* header_budget = nullptr;
  };
  Connection();
  explicit Connection(Options opt);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void feed(Dir d, std::string_view bytes, uint64_t mono_ns);
  void gap(Dir d, uint64_t lost_bytes, uint64_t mono_ns);
  // The stream ended: a response without length ends here (complete); anything else in
  // flight comes out with complete=false.
  void close(uint64_t mono_ns);

  std::vector<Exchange> take_exchanges();
  // Requests fully written since the last call (one per request, in order).
  std::vector<RequestInfo> take_requests();

  // A request has started and is not fully written yet: its start line is partly written,
  // or its headers or body are in progress (HTTP/2: a stream whose END_STREAM is not written).
  bool request_in_progress() const;
  // Requests written whose response has not ended yet.
  size_t awaiting_response() const;
  bool http2() const { return stats_.http2_detected != 0; }
  const ConnectionStats& stats() const { return stats_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ConnectionStats stats_;
};

}  // namespace ab::protocol

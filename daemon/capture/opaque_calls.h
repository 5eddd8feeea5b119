// opaque_calls.h — calls of OPAQUE processes (TLS agentbrake cannot read), from what the
// socket shows (bpf/sock.bpf.c): a request start per connection (a write burst after bytes
// were received), byte counts, and the close. Pure: no kernel, no clock, no I/O.
//
// A request of a connection ends where the next one starts, where the connection closes,
// where its process exits, or after `idle` with nothing new on the connection. Its bytes are
// the TLS bytes sent from its start to the next start, and the bytes received meanwhile.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol/llm_call.h"

namespace ab::capture {

struct OpaqueCall {
  uint32_t pid = 0;
  uint64_t conn = 0;  // socket cookie
  uint64_t request_bytes = 0, response_bytes = 0;
  uint64_t start_ns = 0, end_ns = 0;  // CLOCK_MONOTONIC
  bool complete = false;  // ended by the next request or the close (not by exit or idleness)
};

// Tokens from bytes: what docs/interface.md ("Opaque processes") promises.
struct OpaqueEstimate {
  int64_t input_tokens = 0, output_tokens = 0;
};
// input ≈ (request bytes − kRequestOverhead) / 4, output ≈ (response bytes − kResponseOverhead) / 4:
// about four bytes per token of JSON text, less the TLS record and HTTP header overhead.
// A streamed response wraps each few tokens in an event, so output is an over-estimate there.
constexpr uint64_t kOpaqueRequestOverhead = 512;
constexpr uint64_t kOpaqueResponseOverhead = 384;
OpaqueEstimate estimate_tokens(uint64_t request_bytes, uint64_t response_bytes);

// Fills an LlmCall (estimated, estimate_reason "opaque_tls") for an opaque call; `api` and
// `host` are the endpoint's.
void fill_opaque_call(const OpaqueCall& c, const std::string& api, const std::string& host, LlmCall* out);

class OpaqueTracker {
 public:
  // A request start on `conn`: bytes_out before its first write, bytes_in so far. Returns the
  // previous request of the connection, now ended.
  std::optional<OpaqueCall> on_request(uint32_t pid, uint64_t conn, uint64_t bytes_out, uint64_t bytes_in,
                                       uint64_t ts_ns);
  // The connection closed with these totals.
  std::optional<OpaqueCall> on_close(uint32_t pid, uint64_t conn, uint64_t bytes_out, uint64_t bytes_in,
                                     uint64_t ts_ns);
  // The process exited: its open requests end with what was seen of them.
  std::vector<OpaqueCall> on_exit(uint32_t pid, uint64_t ts_ns);
  // Open requests with nothing new for `idle_ns` end (a kept-alive connection gone quiet).
  std::vector<OpaqueCall> expire(uint64_t now_ns, uint64_t idle_ns);
  size_t open_requests(uint32_t pid) const;
  size_t open_requests() const { return open_.size(); }

 private:
  struct Open {
    uint64_t out_at_start = 0, in_at_start = 0;
    uint64_t start_ns = 0, last_ns = 0;
    // The call from this start to the counts at ts_ns (complete: it ended).
    OpaqueCall ended(uint32_t pid, uint64_t conn, uint64_t bytes_out, uint64_t bytes_in, uint64_t ts_ns) const;
  };
  std::map<std::pair<uint32_t, uint64_t>, Open> open_;  // (pid, conn)
};

}  // namespace ab::capture

// h2_reader.h — HTTP/2 frames of ONE connection, both directions, into per-stream events
// (internal to the protocol module; Connection drives it, see connection.cpp).
//
//  - Request = bytes the client wrote (after the 24-byte preface), Response = bytes it read.
//  - Frames: DATA (padding removed, payload streamed as it arrives, never kept whole),
//    HEADERS + CONTINUATION (padding and priority fields removed), PUSH_PROMISE (its header
//    block is decoded to keep the server's HPACK table in step, then dropped), SETTINGS
//    (SETTINGS_HEADER_TABLE_SIZE bounds the OTHER direction's decoder), RST_STREAM, GOAWAY.
//    PRIORITY, PING, WINDOW_UPDATE and unknown types are skipped.
//  - HPACK: one nghttp2 inflater per direction. Every header block is decoded, on any stream,
//    since the dynamic table is connection state.
//  - Secrets: credential headers (util::is_secret_header) are dropped while decoding; they never
//    reach a HeaderList. Pseudo-headers (":path", ":status", …) are kept, lower-case.
//  - Desync: once a header block cannot be decoded (HPACK error, a gap inside a header block
//    or a frame head, an oversized block), nothing more of the connection is decoded: the
//    reader reports desync() once and counts the rest as unparsed. A gap inside a DATA frame is
//    skipped exactly and reported on that stream.
//  - Bounded memory: a header block (with its CONTINUATIONs) is kept up to 256 KiB, other
//    control frames up to 16 KiB; beyond that the frame is an error (desync for header blocks).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/header_budget.h"

struct nghttp2_hd_inflater;

namespace ab::protocol {

using H2Headers = std::vector<std::pair<std::string, std::string>>;

struct H2Stats {
  uint64_t frames = 0;
  uint64_t header_blocks = 0;
  uint64_t protocol_errors = 0;  // malformed frames (bad padding, wrong stream, oversize…)
  uint64_t desync = 0;           // 1 once header decoding was given up on this connection
  uint64_t unparsed_bytes = 0;   // bytes not decoded after a desync
  uint64_t header_budget_drops = 0;  // desyncs because the shared header budget was spent
};

class H2Reader {
 public:
  enum class Side { Client, Server };  // who wrote the bytes

  struct Events {
    virtual ~Events() = default;
    // A complete header block on `stream` (HEADERS + CONTINUATIONs). `frame_bytes` counts
    // the wire bytes of its frames (heads included).
    virtual void h2_headers(Side s, uint32_t stream, H2Headers&& hs, bool end_stream,
                            uint64_t frame_bytes, uint64_t t) = 0;
    // DATA payload (padding removed), in pieces; wire bytes are reported separately.
    virtual void h2_data(Side s, uint32_t stream, std::string_view data, uint64_t t) = 0;
    virtual void h2_wire_bytes(Side s, uint32_t stream, uint64_t n) = 0;
    // The last DATA frame (END_STREAM) of `stream` ended.
    virtual void h2_end_stream(Side s, uint32_t stream, uint64_t t) = 0;
    // `lost` bytes of a DATA frame's payload were not captured.
    virtual void h2_data_gap(Side s, uint32_t stream, uint64_t lost, uint64_t t) = 0;
    virtual void h2_reset(uint32_t stream, uint64_t t) = 0;
    // GOAWAY sent by `s`: streams opened by the other side above `last_stream` are dropped.
    virtual void h2_goaway(Side s, uint32_t last_stream, uint64_t t) = 0;
    virtual void h2_desync(uint64_t t) = 0;
  };

  // `budget` (may be null): header blocks and control frames are charged to it while they are
  // buffered (header_budget.h); a refusal is a desync, counted in header_budget_drops.
  H2Reader(Events& ev, H2Stats& st, HeaderBudget* budget = nullptr);
  ~H2Reader();
  H2Reader(const H2Reader&) = delete;
  H2Reader& operator=(const H2Reader&) = delete;

  void feed(Side s, std::string_view bytes, uint64_t t);
  void gap(Side s, uint64_t lost, uint64_t t);
  bool desynced() const { return st_.desync != 0; }

  // True when `b` (at least 9 bytes) starts with a plausible HTTP/2 frame head written by
  // `s`: a known type, flags that type allows, a stream id that type allows. HTTP/1 text never
  // passes (its fourth byte would be the type).
  static bool plausible_frame(Side s, std::string_view b);

  static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

 private:
  static constexpr size_t kMaxBlockBytes = 256 * 1024;

  struct Dir {
    explicit Dir(HeaderBudget* b) : payload(b, kMaxBlockBytes), block(b, kMaxBlockBytes) {}
    nghttp2_hd_inflater* inflater = nullptr;
    // frame head
    uint8_t head[9];
    size_t head_have = 0;
    bool in_payload = false;
    uint32_t len = 0, stream = 0;
    uint8_t type = 0, flags = 0;
    uint32_t left = 0;  // payload bytes still to come
    // DATA streaming
    int data_phase = 0;  // 0 pad-length byte, 1 data, 2 padding
    uint32_t data_left = 0, pad_left = 0;
    // buffered control / header payload
    BudgetedString payload;
    bool skip = false;  // payload skipped (not kept)
    // header block across CONTINUATIONs
    BudgetedString block;
    uint32_t block_stream = 0;
    bool block_open = false, block_end_stream = false, block_push = false;
    uint64_t block_wire = 0;
  };

  Dir& dir(Side s) { return s == Side::Client ? c_ : s_; }
  void frame_start(Side s, Dir& d, uint64_t t);
  void frame_end(Side s, Dir& d, uint64_t t);
  void header_fragment(Side s, Dir& d, std::string_view frag, uint64_t t);
  bool inflate(Dir& d, H2Headers& out);
  void desync(uint64_t t);
  void budget_refused(uint64_t t);

  Events& ev_;
  H2Stats& st_;
  Dir c_, s_;
};

}  // namespace ab::protocol

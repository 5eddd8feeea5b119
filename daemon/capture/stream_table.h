// stream_table.h — turns the kernel's TLS records into HTTP exchanges.
//
// One stream per (pid, SSL*): the plaintext an SSL object wrote (requests) and read
// (responses), fed in ring-buffer order to a protocol::Connection. SSL pointers are reused
// after SSL_free, so SSL_NEW and SSL_FREE both end the stream that had the pointer. A stream
// seen first in the middle (the daemon started after the connection opened) is created on
// its first record; Connection resynchronises at the next request line.
//
// Not thread-safe: the event loop owns it.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "agentbrake_events.h"
#include "protocol/connection.h"
#include "protocol/header_budget.h"

namespace ab::capture {

struct CapturedExchange {
  uint32_t pid = 0;
  uint32_t tid = 0;  // the thread that wrote the request
  uint64_t ssl = 0;
  protocol::Exchange exchange;
};

struct CapturedRequest {
  uint32_t pid = 0;
  uint64_t ssl = 0;
  protocol::RequestInfo request;
};

struct StreamStats {
  uint64_t records = 0;          // TLS records decoded
  uint64_t bytes = 0;            // plaintext bytes fed
  uint64_t gaps = 0;             // gap records (capture cap): the middle of a call not captured
  uint64_t lost_bytes = 0;       // bytes those gaps stand for
  uint64_t malformed = 0;        // records shorter than their header says (counted, dropped)
  uint64_t streams_opened = 0;
  uint64_t streams_closed = 0;
  uint64_t streams_evicted = 0;  // closed because the table was full (oldest first)
  uint64_t parse_errors = 0;     // from closed streams' Connection stats
  uint64_t unparsed_bytes = 0;   // HTTP/2 or upgraded streams (left unparsed), closed streams
  // HTTP/2 (counted as they happen, open streams included)
  uint64_t h2_connections = 0;   // streams found to be HTTP/2
  uint64_t h2_streams = 0;       // HTTP/2 requests (client streams) read
  uint64_t h2_hpack_desync = 0;  // HTTP/2 connections whose headers could not be decoded
  uint64_t h2_protocol_errors = 0;
  uint64_t eventstream_frames = 0;      // Bedrock event-stream messages decoded
  uint64_t eventstream_bad_frames = 0;  // ... dropped (bad CRC, malformed)
};

class StreamTable {
 public:
  // Chooses the Connection options (api/host hints) for a new stream of pid.
  using OptionsFn = std::function<protocol::Connection::Options(uint32_t pid)>;

  // `header_budget_bytes`: the cap on message heads buffered by all streams together
  // (header_budget.h); a head past it is dropped and counted (header_budget().refused()).
  explicit StreamTable(OptionsFn options, size_t max_streams = 16384,
                       size_t header_budget_bytes = protocol::HeaderBudget::kDefaultLimit);
  ~StreamTable();
  StreamTable(const StreamTable&) = delete;
  StreamTable& operator=(const StreamTable&) = delete;

  // One ring-buffer record of type AB_EV_TLS_DATA, AB_EV_TLS_GAP, AB_EV_SSL_NEW or
  // AB_EV_SSL_FREE. `size` is the record's size as the ring buffer reported it. Returns false
  // (and counts it as malformed) when the record is too short for what it claims.
  bool on_record(const void* record, size_t size);

  // The process is gone: every stream of it is closed (a response in progress is cut off).
  void on_process_exit(uint32_t pid, uint64_t mono_ns);

  // Exchanges completed since the last call (LLM or not; the caller filters on is_llm).
  std::vector<CapturedExchange> take_exchanges();

  // Requests whose head was parsed since the last call (for admission and loop detectors).
  std::vector<CapturedRequest> take_requests();

  size_t open_streams() const { return streams_.size(); }
  // Streams of one process with a request written and its response not finished.
  size_t in_flight(uint32_t pid) const;
  const StreamStats& stats() const { return stats_; }
  const protocol::HeaderBudget& header_budget() const { return budget_; }

 private:
  struct Stream {
    std::unique_ptr<protocol::Connection> conn;
    uint32_t last_writer_tid = 0;
    uint64_t touched = 0;
    protocol::ConnectionStats counted;  // the HTTP/2 counts already added to stats_
  };
  using Key = std::pair<uint32_t, uint64_t>;  // (pid, SSL*)

  Stream& stream(const Key& key);
  void close_stream(std::map<Key, Stream>::iterator it, uint64_t mono_ns);
  void drain(const Key& key, Stream& s);
  void count_h2(Stream& s);
  void evict_oldest(uint64_t mono_ns);

  OptionsFn options_;
  size_t max_streams_;
  protocol::HeaderBudget budget_;  // before streams_: their buffers give it back as they go
  std::map<Key, Stream> streams_;
  std::vector<CapturedExchange> done_;
  std::vector<CapturedRequest> requests_;
  StreamStats stats_;
  uint64_t clock_ = 0;
};

}  // namespace ab::capture

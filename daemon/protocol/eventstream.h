// eventstream.h — the binary framing AWS calls application/vnd.amazon.eventstream (Bedrock's
// ConverseStream and InvokeModelWithResponseStream responses). Each message is
//   total length u32 BE | headers length u32 BE | CRC32 of those 8 bytes u32 BE |
//   headers | payload | CRC32 of everything before it u32 BE
// and a header is  name length u8 | name | value type u8 | value  (types 0..9: true, false,
// byte, short, int, long, bytes, string, timestamp, uuid; bytes and string carry a u16 BE
// length). docs/wire-formats.md, "AWS Bedrock".
//
// Incremental and bounded: any split of the input gives the same messages; a message longer
// than kMaxMessage or failing a CRC is counted bad, and the decoder looks for the next
// position whose prelude checks out (a frame boundary) instead of giving up.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace ab::protocol {

struct EventStreamMessage {
  std::string event_type;      // ":event-type" (e.g. "contentBlockDelta", "metadata", "chunk")
  std::string message_type;    // ":message-type": "event", "exception" or "error"
  std::string exception_type;  // ":exception-type" of an exception message
  std::string error_code;      // ":error-code" of an error message
  std::string_view payload;    // valid only during the callback
};

class EventStreamDecoder {
 public:
  static constexpr uint32_t kMinMessage = 16;        // prelude 12 + message CRC 4
  static constexpr uint32_t kMaxMessage = 16u << 20;  // larger than any Bedrock event
  using Sink = std::function<void(const EventStreamMessage&)>;

  explicit EventStreamDecoder(Sink sink) : sink_(std::move(sink)) {}
  void feed(std::string_view in);

  uint64_t messages() const { return messages_; }     // decoded with both CRCs good
  uint64_t bad_frames() const { return bad_; }        // bad prelude/CRC/headers: skipped
  uint64_t skipped_bytes() const { return skipped_; } // bytes passed over looking for a frame
  bool mid_message() const { return !buf_.empty(); }  // ended inside a message (cut off)
  // Bytes were lost (a capture gap): drop the partial message; the next frame is found by
  // its prelude. Counts one bad frame.
  void lose_sync();

 private:
  bool prelude_ok(const unsigned char* p) const;
  bool decode_one(std::string_view msg);  // false: headers malformed
  std::string buf_;
  Sink sink_;
  uint64_t messages_ = 0, bad_ = 0, skipped_ = 0;
  bool resyncing_ = false;
};

// CRC-32 (IEEE 802.3, as zlib's crc32) of `s`.
uint32_t eventstream_crc32(std::string_view s, uint32_t crc = 0);

// Standard base64 (RFC 4648, padding optional) → bytes; false on any other character.
bool base64_decode(std::string_view in, std::string& out);

}  // namespace ab::protocol

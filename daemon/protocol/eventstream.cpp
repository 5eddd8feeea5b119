#include "protocol/eventstream.h"

#include <zlib.h>

namespace ab::protocol {

namespace {
uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
}  // namespace

uint32_t eventstream_crc32(std::string_view s, uint32_t crc) {
  return static_cast<uint32_t>(
      ::crc32(crc, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

bool EventStreamDecoder::prelude_ok(const unsigned char* p) const {
  const uint32_t total = be32(p), hlen = be32(p + 4);
  if (total < kMinMessage || total > kMaxMessage || hlen > total - kMinMessage) return false;
  return eventstream_crc32({reinterpret_cast<const char*>(p), 8}) == be32(p + 8);
}

void EventStreamDecoder::feed(std::string_view in) {
  buf_.append(in);
  size_t pos = 0;
  while (buf_.size() - pos >= 12) {
    const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + pos);
    if (!prelude_ok(p)) {
      // Not a frame boundary: count the loss once, then slide a byte at a time to the next
      // prelude whose CRC checks out (1 in 2^32 by chance).
      if (!resyncing_) ++bad_;
      resyncing_ = true;
      ++skipped_;
      ++pos;
      continue;
    }
    const uint32_t total = be32(p);
    if (buf_.size() - pos < total) break;  // the rest of this message has not arrived
    std::string_view msg(buf_.data() + pos, total);
    const uint32_t want = be32(p + total - 4);
    if (eventstream_crc32(msg.substr(0, total - 4)) != want || !decode_one(msg)) {
      if (!resyncing_) ++bad_;
      resyncing_ = true;
      ++skipped_;
      ++pos;  // the prelude may have matched by chance: look again one byte on
      continue;
    }
    resyncing_ = false;
    pos += total;
  }
  buf_.erase(0, pos);
}

void EventStreamDecoder::lose_sync() {
  buf_.clear();
  if (!resyncing_) ++bad_;
  resyncing_ = true;
}

bool EventStreamDecoder::decode_one(std::string_view msg) {
  const auto* p = reinterpret_cast<const unsigned char*>(msg.data());
  const uint32_t total = be32(p), hlen = be32(p + 4);
  EventStreamMessage m;
  size_t i = 12;
  const size_t hend = 12 + size_t(hlen);
  while (i < hend) {
    const size_t nlen = p[i++];
    if (nlen == 0 || i + nlen + 1 > hend) return false;
    std::string_view name(msg.data() + i, nlen);
    i += nlen;
    const unsigned char type = p[i++];
    std::string_view str;
    size_t vlen = 0;
    switch (type) {
      case 0: case 1: vlen = 0; break;
      case 2: vlen = 1; break;
      case 3: vlen = 2; break;
      case 4: vlen = 4; break;
      case 5: case 8: vlen = 8; break;
      case 9: vlen = 16; break;
      case 6: case 7: {
        if (i + 2 > hend) return false;
        vlen = (size_t(p[i]) << 8) | p[i + 1];
        i += 2;
        if (type == 7 && i + vlen <= hend) str = std::string_view(msg.data() + i, vlen);
        break;
      }
      default: return false;
    }
    if (i + vlen > hend) return false;
    i += vlen;
    if (name == ":event-type") m.event_type = str;
    else if (name == ":message-type") m.message_type = str;
    else if (name == ":exception-type") m.exception_type = str;
    else if (name == ":error-code") m.error_code = str;
  }
  m.payload = msg.substr(hend, total - 4 - hend);
  ++messages_;
  if (sink_) sink_(m);
  return true;
}

bool base64_decode(std::string_view in, std::string& out) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  out.clear();
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = val(c);
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return bits < 6;  // one leftover base64 digit is not a whole byte: malformed
}

}  // namespace ab::protocol

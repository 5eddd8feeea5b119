// Builds HTTP/2 wire bytes for tests: frames and HPACK header blocks (nghttp2's deflater, one
// per direction, so later blocks are indexed against earlier ones as real peers do).
#pragma once
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ab::protocol::test {

struct H2Writer {
  nghttp2_hd_deflater* def = nullptr;
  explicit H2Writer(size_t table = 4096) {
    if (nghttp2_hd_deflate_new(&def, table) != 0) throw std::runtime_error("deflate_new");
  }
  ~H2Writer() { nghttp2_hd_deflate_del(def); }
  H2Writer(const H2Writer&) = delete;
  H2Writer& operator=(const H2Writer&) = delete;

  static std::string preface() { return "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"; }

  static std::string frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
    std::string f;
    const size_t n = payload.size();
    f += char((n >> 16) & 0xff);
    f += char((n >> 8) & 0xff);
    f += char(n & 0xff);
    f += char(type);
    f += char(flags);
    f += char((stream >> 24) & 0x7f);
    f += char((stream >> 16) & 0xff);
    f += char((stream >> 8) & 0xff);
    f += char(stream & 0xff);
    return f + payload;
  }

  // HPACK block; `never` names are sent as never-indexed literals (as clients send secrets).
  std::string block(const std::vector<std::pair<std::string, std::string>>& hs) {
    std::vector<nghttp2_nv> nv;
    for (auto& [k, v] : hs) {
      nghttp2_nv x;
      x.name = (uint8_t*)k.data();
      x.namelen = k.size();
      x.value = (uint8_t*)v.data();
      x.valuelen = v.size();
      x.flags = (k == "authorization" || k == "x-api-key") ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
      nv.push_back(x);
    }
    std::string out(nghttp2_hd_deflate_bound(def, nv.data(), nv.size()), '\0');
    ssize_t n = nghttp2_hd_deflate_hd(def, (uint8_t*)out.data(), out.size(), nv.data(), nv.size());
    if (n < 0) throw std::runtime_error("deflate");
    out.resize(size_t(n));
    return out;
  }

  // HEADERS (with padding and priority when asked), split into CONTINUATIONs of `cont` bytes.
  std::string headers(uint32_t stream, const std::vector<std::pair<std::string, std::string>>& hs,
                      bool end_stream, uint8_t pad = 0, bool priority = false, size_t cont = 0) {
    std::string b = block(hs);
    std::string first = b, rest;
    if (cont && b.size() > cont) {
      first = b.substr(0, cont);
      rest = b.substr(cont);
    }
    uint8_t flags = end_stream ? 0x1 : 0;
    std::string p;
    if (pad) { flags |= 0x8; p += char(pad); }
    if (priority) { flags |= 0x20; p += std::string("\x00\x00\x00\x00\x0f", 5); }
    p += first;
    p += std::string(pad, '\0');
    if (rest.empty()) flags |= 0x4;
    std::string out = frame(0x1, flags, stream, p);
    while (!rest.empty()) {
      std::string piece = rest.substr(0, cont);
      rest.erase(0, piece.size());
      out += frame(0x9, rest.empty() ? 0x4 : 0, stream, piece);
    }
    return out;
  }

  static std::string data(uint32_t stream, const std::string& d, bool end_stream, uint8_t pad = 0) {
    uint8_t flags = end_stream ? 0x1 : 0;
    std::string p;
    if (pad) { flags |= 0x8; p += char(pad); }
    p += d;
    p += std::string(pad, '\0');
    return frame(0x0, flags, stream, p);
  }

  static std::string settings(std::vector<std::pair<uint16_t, uint32_t>> s = {}) {
    std::string p;
    for (auto [id, v] : s) {
      p += char(id >> 8); p += char(id & 0xff);
      p += char(v >> 24); p += char((v >> 16) & 0xff); p += char((v >> 8) & 0xff); p += char(v & 0xff);
    }
    return frame(0x4, 0, 0, p);
  }
  static std::string settings_ack() { return frame(0x4, 0x1, 0, ""); }
  static std::string window_update(uint32_t stream, uint32_t inc) {
    std::string p{char(inc >> 24), char((inc >> 16) & 0xff), char((inc >> 8) & 0xff), char(inc & 0xff)};
    return frame(0x8, 0, stream, p);
  }
  static std::string ping() { return frame(0x6, 0, 0, std::string(8, 'p')); }
  static std::string rst(uint32_t stream, uint32_t code = 8) {
    std::string p{char(code >> 24), char((code >> 16) & 0xff), char((code >> 8) & 0xff), char(code & 0xff)};
    return frame(0x3, 0, stream, p);
  }
  static std::string goaway(uint32_t last) {
    std::string p{char(last >> 24), char((last >> 16) & 0xff), char((last >> 8) & 0xff), char(last & 0xff)};
    return frame(0x7, 0, 0, p + std::string(4, '\0'));
  }
};

}  // namespace ab::protocol::test

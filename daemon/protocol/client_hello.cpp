#include "protocol/client_hello.h"

namespace ab::protocol {

namespace {

// A cursor over bytes that never reads past its end: every read fails once short.
struct Reader {
  std::span<const uint8_t> b;
  size_t at = 0;
  bool ok = true;

  size_t left() const { return ok ? b.size() - at : 0; }
  uint32_t num(size_t n) {
    if (left() < n) {
      ok = false;
      return 0;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | b[at + i];
    at += n;
    return v;
  }
  void skip(size_t n) {
    if (left() < n) ok = false;
    else at += n;
  }
  Reader sub(size_t n) {  // the next n bytes as their own reader (as many as there are)
    Reader r{b.subspan(at, std::min(n, left())), 0, ok};
    skip(std::min(n, left()));
    return r;
  }
};

bool host_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

}  // namespace

std::optional<std::string> client_hello_server_name(std::span<const uint8_t> bytes) {
  Reader r{bytes};
  if (r.num(1) != 22) return std::nullopt;  // handshake record
  r.skip(2);                                // legacy record version
  const size_t record_len = r.num(2);
  Reader rec = r.sub(record_len);           // may be cut short: reads fail where it ends
  if (!r.ok || rec.num(1) != 1) return std::nullopt;  // ClientHello
  const size_t hello_len = rec.num(3);
  Reader h = rec.sub(hello_len);
  h.skip(2 + 32);          // client_version, random
  h.skip(h.num(1));        // session id
  h.skip(h.num(2));        // cipher suites
  h.skip(h.num(1));        // compression methods
  const size_t ext_len = h.num(2);
  if (!h.ok) return std::nullopt;
  Reader exts = h.sub(ext_len);
  while (exts.ok && exts.left() >= 4) {
    const uint32_t type = exts.num(2);
    const size_t len = exts.num(2);
    Reader ext = exts.sub(len);
    if (!exts.ok) return std::nullopt;
    if (type != 0) continue;  // not server_name
    Reader list = ext.sub(ext.num(2));
    while (list.ok && list.left() >= 3) {
      const uint32_t name_type = list.num(1);
      const size_t name_len = list.num(2);
      if (name_type != 0) {  // host_name is the only type defined
        list.skip(name_len);
        continue;
      }
      if (name_len == 0 || name_len > 254 || list.left() < name_len) return std::nullopt;
      std::string name(reinterpret_cast<const char*>(list.b.data() + list.at), name_len);
      for (auto& c : name) c = static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
      if (name.back() == '.') name.pop_back();
      if (name.empty() || name.size() > 253) return std::nullopt;
      for (char c : name)
        if (!host_name_char(c)) return std::nullopt;
      return name;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace ab::protocol

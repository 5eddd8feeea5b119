#include "util/printable.h"

#include <cstdio>

namespace ab::util {

std::string control_escaped(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  auto esc = [&](unsigned v) {
    char b[8];
    std::snprintf(b, sizeof b, "\\x%02x", v);
    out += b;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      esc(c);
    } else if (c == 0xC2 && i + 1 < s.size() && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9F) {
      esc((unsigned char)s[++i]);  // U+0080..U+009F (CSI is U+009B)
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace ab::util

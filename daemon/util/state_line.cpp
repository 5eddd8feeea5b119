#include "util/state_line.h"

namespace ab::util {

namespace {
bool needs_escape(unsigned char c) { return c <= 0x20 || c == 0x7f || c == '%'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}
}  // namespace

std::string state_field(std::string_view raw) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(raw.size());
  for (unsigned char c : raw) {
    if (needs_escape(c)) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string state_line(const std::vector<std::string>& fields) {
  std::string out;
  for (size_t i = 0; i < fields.size(); i++) {
    if (i) out += ' ';
    out += state_field(fields[i]);
  }
  return out;
}

std::optional<std::vector<std::string>> parse_state_line(std::string_view line) {
  std::vector<std::string> fields;
  if (line.empty()) return fields;
  std::string cur;
  for (size_t i = 0; i <= line.size(); i++) {
    if (i == line.size() || line[i] == ' ') {
      if (cur.empty()) return std::nullopt;
      fields.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    char c = line[i];
    if (c == '%') {
      int hi = i + 1 < line.size() ? hex_value(line[i + 1]) : -1;
      int lo = i + 2 < line.size() ? hex_value(line[i + 2]) : -1;
      if (hi < 0 || lo < 0) return std::nullopt;
      cur += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return std::nullopt;  // a raw control byte: not written by state_line
    } else {
      cur += c;
    }
  }
  return fields;
}

}  // namespace ab::util

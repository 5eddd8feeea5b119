// strutil.h — small string helpers shared by the protocol module (internal).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace ab::protocol::detail {

inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c + 32) : c; }

inline std::string to_lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = lower(c);
  return r;
}

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

inline bool icontains(std::string_view hay, std::string_view needle) {
  if (needle.empty()) return true;
  if (hay.size() < needle.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (iequals(hay.substr(i, needle.size()), needle)) return true;
  return false;
}

inline bool istarts_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && iequals(s.substr(0, p.size()), p);
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Parses a non-negative decimal; false on anything else or overflow.
inline bool parse_u64(std::string_view s, uint64_t& out) {
  s = trim(s);
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + uint64_t(c - '0');
  }
  out = v;
  return true;
}

}  // namespace ab::protocol::detail

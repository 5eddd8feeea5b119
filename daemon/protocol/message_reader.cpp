#include "protocol/message_reader.h"

namespace ab::protocol {

bool LineSeeker::maybe_request_start() const {
  if (line_.empty() || discard_) return false;
  static constexpr std::string_view kMethods[] = {"GET ", "POST ", "PUT ", "DELETE ", "PATCH ",
                                                  "HEAD ", "OPTIONS ", "CONNECT ", "TRACE "};
  for (auto m : kMethods) {
    size_t n = std::min(m.size(), line_.size());
    if (std::string_view(line_).substr(0, n) == m.substr(0, n)) return true;
  }
  return false;
}

size_t find_head_end(const std::string& s, size_t from) {
  for (size_t i = from; i < s.size(); ++i) {
    if (s[i] != '\n') continue;
    if (i + 1 < s.size() && s[i + 1] == '\n') return i + 2;
    if (i + 2 < s.size() && s[i + 1] == '\r' && s[i + 2] == '\n') return i + 3;
  }
  return std::string::npos;
}

}  // namespace ab::protocol

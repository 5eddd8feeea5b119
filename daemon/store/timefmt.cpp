#include "store/timefmt.h"

#include <chrono>
#include <ctime>
#include <limits>
#include <stdexcept>

namespace ab::store {

int64_t now_unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::optional<int64_t> parse_duration_ns(std::string_view s) {
  if (s.empty()) return std::nullopt;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    int64_t n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      int d = s[i] - '0';
      if (n > (kMax - d) / 10) return std::nullopt;
      n = n * 10 + d;
      ++i;
    }
    int64_t unit = 0;
    if (s.substr(i, 2) == "ms") {
      unit = 1'000'000;
      i += 2;
    } else if (i < s.size()) {
      switch (s[i]) {
        case 's': unit = kNsPerSec; break;
        case 'm': unit = 60 * kNsPerSec; break;
        case 'h': unit = 3600 * kNsPerSec; break;
        case 'd': unit = 86400 * kNsPerSec; break;
        case 'w': unit = 7 * 86400 * kNsPerSec; break;
        default: return std::nullopt;
      }
      ++i;
    } else {
      return std::nullopt;  // bare number: ambiguous, refuse
    }
    if (n > kMax / unit) return std::nullopt;
    int64_t part = n * unit;
    if (total > kMax - part) return std::nullopt;
    total += part;
  }
  return total;
}

int64_t parse_duration_or_throw(std::string_view text) {
  auto v = parse_duration_ns(text);
  if (!v)
    throw std::invalid_argument("invalid duration '" + std::string(text) +
                                "': expected a number and a unit (30s, 10m, 2h, 7d)");
  return *v;
}

std::string format_rfc3339(int64_t unix_ns, bool millis) {
  // floor division so that times before the epoch still format sensibly
  int64_t secs = unix_ns / kNsPerSec;
  int64_t rem = unix_ns % kNsPerSec;
  if (rem < 0) {
    rem += kNsPerSec;
    secs -= 1;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  if (millis) {
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(rem / 1'000'000));
  } else {
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  }
  return buf;
}

std::string format_duration_short(int64_t s) {
  if (s < 0) s = 0;
  int64_t d = s / 86400, h = (s % 86400) / 3600, m = (s % 3600) / 60, sec = s % 60;
  char buf[64];
  if (d > 0)
    std::snprintf(buf, sizeof buf, "%lldd %lldh", (long long)d, (long long)h);
  else if (h > 0)
    std::snprintf(buf, sizeof buf, "%lldh %lldm", (long long)h, (long long)m);
  else if (m > 0)
    std::snprintf(buf, sizeof buf, "%lldm %llds", (long long)m, (long long)sec);
  else
    std::snprintf(buf, sizeof buf, "%llds", (long long)sec);
  return buf;
}

}  // namespace ab::store

#include "util/timefmt.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <fmt/format.h>

namespace ab::util {

namespace {

// The whole second at or before `unix_ns` (so times before the epoch round down too), and the
// nanoseconds past it. Integer division: std::chrono::floor would overflow near INT64_MIN.
struct Split {
  int64_t secs;
  int64_t ns;  // 0..999'999'999
};
Split split(int64_t unix_ns) {
  Split s{unix_ns / kNsPerSec, unix_ns % kNsPerSec};
  if (s.ns < 0) {
    s.ns += kNsPerSec;
    s.secs -= 1;
  }
  return s;
}

std::string strftime_utc(int64_t secs, const char* format) {
  const std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[128];
  const size_t n = std::strftime(buf, sizeof buf, format, &tm);
  return std::string(buf, n);
}

}  // namespace

int64_t now_unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_utc(int64_t unix_ns, const char* strftime_format) {
  return strftime_utc(split(unix_ns).secs, strftime_format);
}

std::string format_rfc3339(int64_t unix_ns, bool millis) {
  const Split t = split(unix_ns);
  std::string s = strftime_utc(t.secs, "%Y-%m-%dT%H:%M:%S");
  if (millis) s += fmt::format(".{:03}", t.ns / 1'000'000);
  return s + "Z";
}

int64_t parse_rfc3339_ns(const std::string& s) {
  std::tm tm{};
  const char* p = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) return -1;
  double frac = 0;
  if (*p == '.') {
    char* end = nullptr;
    frac = std::strtod(p, &end);
    p = end;
  }
  int64_t offset_s = 0;
  if (*p == '+' || *p == '-') {
    int hh = 0, mm = 0;
    if (std::sscanf(p + 1, "%d:%d", &hh, &mm) >= 1) offset_s = (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
  }
  const int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset_s;
  return secs * kNsPerSec + static_cast<int64_t>(frac * 1e9);
}

}  // namespace ab::util

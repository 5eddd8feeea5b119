// timefmt.h — wall-clock timestamps: the clock, RFC 3339 in and out, and the UTC date/time
// people read. Shared by the daemon (events, alerts, pacing) and the CLI (event output, the
// HTML report). Pure functions apart from now_unix_ns(); times are Unix-epoch nanoseconds.
// Durations ("30s", "6m0s") are in util/duration.h.
#pragma once
#include <cstdint>
#include <string>

namespace ab::util {

constexpr int64_t kNsPerSec = 1'000'000'000;

// Wall clock, Unix epoch, nanoseconds.
int64_t now_unix_ns();

// "2026-11-29T10:00:01.250Z" (millis=true) or "2026-11-29T10:00:01Z" (millis=false). UTC;
// times before the epoch round down ("1969-12-31T23:59:59.999Z" for -1 ms).
std::string format_rfc3339(int64_t unix_ns, bool millis = true);

// The UTC calendar time of the second at or before `unix_ns` as strftime(3) writes
// `strftime_format`: format_utc(t, "%Y-%m-%d %H:%M:%S") == "2026-11-29 10:00:01".
std::string format_utc(int64_t unix_ns, const char* strftime_format);

// "2026-12-01T04:00:00Z" / "...+01:00" / fractional seconds (Anthropic's rate-limit resets)
// → Unix nanoseconds; -1 when unreadable.
int64_t parse_rfc3339_ns(const std::string& s);

}  // namespace ab::util

// timefmt.h — durations ("30s", "10m", "2h", "7d") and RFC 3339 timestamps, shared by the
// daemon (retention) and the CLI (--since, event output). Pure functions, no I/O.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ab::store {

constexpr int64_t kNsPerSec = 1'000'000'000;

// Wall clock, Unix epoch, nanoseconds.
int64_t now_unix_ns();

// Parses a duration: one or more <digits><unit> groups, unit one of ms, s, m, h, d, w
// ("30s", "10m", "2h", "7d", "1h30m"). No sign, no spaces, no bare numbers, no overflow.
// Returns nanoseconds, or nullopt when the text is not a duration.
std::optional<int64_t> parse_duration_ns(std::string_view text);

// Like parse_duration_ns but throws std::invalid_argument naming the value:
// "invalid duration '5x': expected a number and a unit (30s, 10m, 2h, 7d)".
int64_t parse_duration_or_throw(std::string_view text);

// "2026-11-29T10:00:01.250Z" (millis=true) or "2026-11-29T10:00:01Z" (millis=false). UTC.
std::string format_rfc3339(int64_t unix_ns, bool millis = true);

// Human duration for uptimes and windows: "3d 4h", "2h 5m", "5m 3s", "42s".
std::string format_duration_short(int64_t seconds);

}  // namespace ab::store

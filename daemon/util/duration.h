// duration.h — durations as people and providers write them, in one place. Three spellings
// with their own rules, one function each:
//  - parse_duration_ns: the CLI's and the database's ("30s", "10m", "2h", "7d", "1w", "1h30m")
//  - parse_policy_duration / format_policy_duration: the policy language ("500ms" … "7d"),
//    millisecond precision, no weeks
//  - parse_go_duration_ns: Go's time.Duration text in OpenAI's rate-limit resets ("6m0s", "1.5s")
// and two renderings for people (format_duration_short, format_uptime). Pure functions.
// Wall-clock timestamps are in util/timefmt.h.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ab::util {

// Parses a duration: one or more <digits><unit> groups, unit one of ms, s, m, h, d, w
// ("30s", "10m", "2h", "7d", "1h30m"). No sign, no spaces, no bare numbers, no overflow.
// Returns nanoseconds, or nullopt when the text is not a duration.
std::optional<int64_t> parse_duration_ns(std::string_view text);

// Like parse_duration_ns but throws std::invalid_argument naming the value:
// "invalid duration '5x': expected a number and a unit (30s, 10m, 2h, 7d)".
int64_t parse_duration_or_throw(std::string_view text);

// Policy durations: "500ms", "30s", "10m", "2h", "7d", also compounds like "1h30m"; the same
// grammar as parse_duration_ns without "w", at most 2^53 ms. Non-negative.
std::optional<std::chrono::milliseconds> parse_policy_duration(std::string_view text);
// The largest unit that writes the value exactly: 300000ms → "5m", 90000ms → "90s", 0 → "0s".
std::string format_policy_duration(std::chrono::milliseconds d);

// Go durations: "6m0s", "1.5s", "20ms", "1h2m3s", "250us" (also "µs", "ns"; a bare number is
// seconds) → nanoseconds; -1 when unreadable.
int64_t parse_go_duration_ns(const std::string& s);

// Human duration for windows: "3d 4h", "2h 5m", "5m 3s", "42s" (two units at most).
std::string format_duration_short(int64_t seconds);
// Human uptime: "3d 4h 5m", "2h 5m", "5m 3s", "42s".
std::string format_uptime(int64_t seconds);

}  // namespace ab::util

#include "util/duration.h"

#include <cctype>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace ab::util {

namespace {

struct Unit {
  std::string_view name;
  int64_t mult;
};

// <digits><unit> groups, the unit a run of lower-case letters found in `units`; the sum of
// number × mult, nullopt when anything else is in the text or the sum would exceed `max`.
std::optional<int64_t> parse_unit_groups(std::string_view s, std::initializer_list<Unit> units, int64_t max) {
  if (s.empty()) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;  // a unit without a number, or a sign
    int64_t n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      const int d = s[i] - '0';
      if (n > (std::numeric_limits<int64_t>::max() - d) / 10) return std::nullopt;
      n = n * 10 + d;
      ++i;
    }
    size_t k = i;
    while (k < s.size() && s[k] >= 'a' && s[k] <= 'z') ++k;
    const std::string_view name = s.substr(i, k - i);
    int64_t mult = 0;
    for (const Unit& u : units)
      if (u.name == name) mult = u.mult;
    if (mult == 0) return std::nullopt;  // no unit (a bare number is ambiguous), or an unknown one
    if (n > max / mult) return std::nullopt;
    const int64_t part = n * mult;
    if (total > max - part) return std::nullopt;
    total += part;
    i = k;
  }
  return total;
}

}  // namespace

std::optional<int64_t> parse_duration_ns(std::string_view s) {
  constexpr int64_t kSec = 1'000'000'000;
  return parse_unit_groups(s,
                           {{"ms", 1'000'000},
                            {"s", kSec},
                            {"m", 60 * kSec},
                            {"h", 3600 * kSec},
                            {"d", 86400 * kSec},
                            {"w", 7 * 86400 * kSec}},
                           std::numeric_limits<int64_t>::max());
}

int64_t parse_duration_or_throw(std::string_view text) {
  auto v = parse_duration_ns(text);
  if (!v)
    throw std::invalid_argument("invalid duration '" + std::string(text) +
                                "': expected a number and a unit (30s, 10m, 2h, 7d)");
  return *v;
}

std::optional<std::chrono::milliseconds> parse_policy_duration(std::string_view s) {
  auto ms = parse_unit_groups(
      s, {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}}, int64_t(1) << 53);
  if (!ms) return std::nullopt;
  return std::chrono::milliseconds(*ms);
}

std::string format_policy_duration(std::chrono::milliseconds d) {
  const int64_t ms = d.count();
  if (ms == 0) return "0s";
  for (const Unit& u : {Unit{"d", 86'400'000}, Unit{"h", 3'600'000}, Unit{"m", 60'000}, Unit{"s", 1000}})
    if (ms % u.mult == 0) return fmt::format("{}{}", ms / u.mult, u.name);
  return fmt::format("{}ms", ms);
}

int64_t parse_go_duration_ns(const std::string& s) {
  if (s.empty()) return -1;
  double total = 0;
  size_t i = 0;
  while (i < s.size()) {
    char* end = nullptr;
    double v = std::strtod(s.c_str() + i, &end);
    if (end == s.c_str() + i) return -1;
    i = static_cast<size_t>(end - s.c_str());
    std::string unit;
    while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) unit += s[i++];
    double mul = unit == "h" ? 3600e9 : unit == "m" ? 60e9 : unit == "s" || unit.empty() ? 1e9
               : unit == "ms" ? 1e6 : unit == "us" || unit == "µs" ? 1e3 : unit == "ns" ? 1 : -1;
    if (mul < 0) return -1;
    total += v * mul;
  }
  return static_cast<int64_t>(total);
}

std::string format_duration_short(int64_t s) {
  if (s < 0) s = 0;
  const int64_t d = s / 86400, h = (s % 86400) / 3600, m = (s % 3600) / 60, sec = s % 60;
  if (d > 0) return fmt::format("{}d {}h", d, h);
  if (h > 0) return fmt::format("{}h {}m", h, m);
  if (m > 0) return fmt::format("{}m {}s", m, sec);
  return fmt::format("{}s", sec);
}

std::string format_uptime(int64_t u) {
  const int64_t d = u / 86400, h = (u % 86400) / 3600, m = (u % 3600) / 60, sec = u % 60;
  if (d) return fmt::format("{}d {}h {}m", d, h, m);
  if (h) return fmt::format("{}h {}m", h, m);
  if (m) return fmt::format("{}m {}s", m, sec);
  return fmt::format("{}s", sec);
}

}  // namespace ab::util

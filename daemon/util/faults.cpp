#include "util/faults.h"

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <vector>

namespace ab::util {

namespace {

Faults g_faults;

struct Switch {
  std::string_view name;
  int64_t Faults::*field;
  int64_t max;
};

// Bounded so a typo cannot stop the daemon for hours.
constexpr Switch kSwitches[] = {
    {"attach_delay_ms", &Faults::attach_delay_ms, 600'000},
    {"no_socket_capture", &Faults::no_socket_capture, 1},
    {"record_cost_us", &Faults::record_cost_us, 10'000},
};

}  // namespace

std::string Faults::describe() const {
  std::string out;
  for (const auto& s : kSwitches) {
    if (this->*s.field == 0) continue;
    if (!out.empty()) out += ',';
    out += std::string(s.name) + "=" + std::to_string(this->*s.field);
  }
  return out;
}

std::optional<Faults> parse_faults(std::string_view spec, std::string* error) {
  Faults f;
  while (!spec.empty()) {
    size_t comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      if (error) *error = "'" + std::string(item) + "': expected key=value";
      return std::nullopt;
    }
    std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    const Switch* sw = nullptr;
    for (const auto& s : kSwitches)
      if (s.name == key) sw = &s;
    if (!sw) {
      std::string known;
      for (const auto& s : kSwitches) known += (known.empty() ? "" : ", ") + std::string(s.name);
      if (error) *error = "unknown fault '" + std::string(key) + "' (known: " + known + ")";
      return std::nullopt;
    }
    int64_t v = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc{} || p != value.data() + value.size() || v < 0 || v > sw->max) {
      if (error)
        *error = "fault " + std::string(key) + ": '" + std::string(value) + "' is not a number from 0 to " +
                 std::to_string(sw->max);
      return std::nullopt;
    }
    f.*(sw->field) = v;
  }
  return f;
}

const Faults& faults() { return g_faults; }

int init_faults_from_env(std::string* error) {
  const char* spec = std::getenv("AGENTBRAKE_TEST_FAULTS");
  if (!spec) return 0;
  auto f = parse_faults(spec, error);
  if (!f) return -EINVAL;
  g_faults = *f;
  return 0;
}

void set_faults_for_test(const Faults& f) { g_faults = f; }

}  // namespace ab::util

// Shared helpers for the loop detector tests: a fake monotonic clock and members.
#pragma once

#include <cstdint>
#include <string>

#include "loops/finding.h"

namespace ab::loops::testing {

inline constexpr int64_t kMs = 1'000'000;
inline constexpr int64_t kSecond = 1000 * kMs;
inline constexpr int64_t kMinute = 60 * kSecond;

// Monotonic time that moves only when a test says so.
struct FakeClock {
  int64_t now = 1'000 * kSecond;
  int64_t advance(int64_t ns) { return now += ns; }
};

inline Member member(uint32_t pid, uint32_t root = 0, std::string cgroup = "/agents/a", std::string comm = "python3") {
  return {pid, root ? root : pid, std::move(cgroup), std::move(comm)};
}

}  // namespace ab::loops::testing

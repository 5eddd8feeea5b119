// manual_pause_file.h — the run directory's record of manual pauses in force ("manual-paused"),
// so that `agentbraked --release-all` after a crash undoes them too. One record per line,
// written with util/state_line, so a cgroup name holding a space or a newline survives.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ab::core {

struct ManualPauseRecord {
  bool cgroup = false;    // true: target is a cgroup path (frozen); false: a pid (SIGSTOPped)
  std::string target;     // the cgroup path, or the pid in decimal
  uint64_t start_ns = 0;  // for a pid: its start time, so a reused pid is never continued
};

// The file's content for these records (empty when there are none).
std::string format_manual_pauses(const std::vector<ManualPauseRecord>& records);

// The records of a file written by format_manual_pauses. A line that is not a record (bad
// escape, unknown kind, missing field) is skipped and counted in *malformed when given.
std::vector<ManualPauseRecord> parse_manual_pauses(std::string_view content, size_t* malformed = nullptr);

}  // namespace ab::core

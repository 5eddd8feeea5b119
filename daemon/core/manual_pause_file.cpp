#include "core/manual_pause_file.h"

#include <charconv>

#include "util/state_line.h"

namespace ab::core {

std::string format_manual_pauses(const std::vector<ManualPauseRecord>& records) {
  std::string out;
  for (const auto& r : records) {
    out += r.cgroup ? util::state_line({"cgroup", r.target})
                    : util::state_line({"pid", r.target, std::to_string(r.start_ns)});
    out += '\n';
  }
  return out;
}

std::vector<ManualPauseRecord> parse_manual_pauses(std::string_view content, size_t* malformed) {
  std::vector<ManualPauseRecord> out;
  size_t bad = 0;
  while (!content.empty()) {
    const size_t nl = content.find('\n');
    std::string_view line = content.substr(0, nl);
    content.remove_prefix(nl == std::string_view::npos ? content.size() : nl + 1);
    if (line.empty()) continue;
    auto fields = util::parse_state_line(line);
    ManualPauseRecord r;
    bool ok = fields.has_value();
    if (ok && fields->size() == 2 && (*fields)[0] == "cgroup") {
      r.cgroup = true;
      r.target = (*fields)[1];
    } else if (ok && fields->size() == 3 && (*fields)[0] == "pid") {
      r.target = (*fields)[1];
      const std::string& s = (*fields)[2];
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), r.start_ns);
      ok = ec == std::errc() && p == s.data() + s.size();
      int pid = 0;
      auto [q, ec2] = std::from_chars(r.target.data(), r.target.data() + r.target.size(), pid);
      ok = ok && ec2 == std::errc() && q == r.target.data() + r.target.size() && pid > 0;
    } else {
      ok = false;
    }
    if (ok) out.push_back(std::move(r));
    else bad++;
  }
  if (malformed) *malformed = bad;
  return out;
}

}  // namespace ab::core

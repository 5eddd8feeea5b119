// format.h — how the `agentbrake` CLI shows what the daemon and the database return. Pure
// functions from JSON (the same JSON `--json` prints) to text, so they are unit-tested
// without a daemon or a terminal.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ab::cli {

// ---- primitives ----
// Text with control characters (C0, DEL, C1) shown as \xNN: what the CLI prints of names,
// models and cgroups that agents choose.
std::string terminal_safe(const std::string& s);

// A plain-text table: columns padded to their widest cell, two spaces apart; `right` lists the
// right-aligned (numeric) column indexes. `footer` rows come after a dashed rule.
std::string render_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows,
                         const std::vector<size_t>& right = {},
                         const std::vector<std::vector<std::string>>& footer = {});
// money: util::format_usd (util/money.h)
std::string format_count(int64_t n);    // 1234567 -> "1,234,567"
std::string format_rate(double per_min);  // tokens per minute: "0", "12", "3.4k", "1.2M"
// A JSON value for a "key=value" summary: strings bare (quoted when they contain spaces),
// numbers and booleans as JSON, arrays/objects compact.
std::string format_scalar(const nlohmann::json& v);

// ---- commands ----
// `status` (human): every field of the status object, loss counters listed one per line.
std::string format_status(const nlohmann::json& status);
// `fleet status` (human): the fleet's state and hosts, then one row per fleet limit in use.
std::string format_fleet_status(const nlohmann::json& fleet);
// `agents` (human): one table row per agent; "no agents tracked" when empty.
std::string format_agents(const nlohmann::json& agents);
// `usage` (human) from the `usage --json` object: a table and a TOTAL row.
std::string format_usage(const nlohmann::json& usage);
// `events` (human): one line for one `events --json` object.
std::string format_event(const nlohmann::json& event);
// `pause`/`resume`/`kill` (human): what the daemon did.
std::string format_action(const std::string& cmd, const std::string& target, const nlohmann::json& result);

// ---- manual brake targets ----
// A TARGET is a cgroup path ("/agents/a", relative to the cgroup v2 mount) or a pid. Returns
// the normalized target (duplicate and trailing slashes removed), or nullopt with `error` set.
// Refuses the root cgroup "/", pid 0 and pid 1, "." and ".." components, control characters.
std::optional<std::string> normalize_target(const std::string& target, std::string& error);

// ---- top ----
struct TopRow {
  std::string cgroup;
  uint32_t tree_root_pid = 0;
  size_t pids = 0;
  std::string comm, provider, model, state, reason;
  int64_t calls = 0, input_tokens = 0, output_tokens = 0;
  double cost_usd = 0;
  double tokens_per_min = 0;
  double cost_per_hour = 0;  // the daemon's cost rate if it reports one, else measured here
  std::string trend;         // the last kTrendLen cost rates, oldest first, as ASCII levels
};

inline constexpr size_t kTrendLen = 16;
// Rates as a small ASCII chart (" .:-=+*#%@", scaled to the largest): one character each.
std::string spark(const std::deque<double>& rates);

// Keeps the previous snapshot of `agents` so rates can be measured between refreshes.
class TopModel {
 public:
  // `agents` is the result of the "agents" command; `now_s` a monotonic time in seconds.
  void update(const nlohmann::json& agents, double now_s);
  // Sorted by cost rate, then token rate, then total cost (all descending).
  const std::vector<TopRow>& rows() const { return rows_; }

 private:
  struct Prev {
    double cost = 0;
    double t = 0;
    double rate = 0;
    std::deque<double> history;  // cost rates of the last refreshes
  };
  std::map<std::string, Prev> prev_;
  std::vector<TopRow> rows_;
};

// One screen: a header line, then the table cut to `height` lines and `width` columns.
std::string render_top(const std::vector<TopRow>& rows, const std::string& title, size_t width,
                       size_t height);

}  // namespace ab::cli

// The manual brake (pause, resume, kill from the CLI) and the record of manual pauses that
// `--release-all` reads after a crash.

#include "core/daemon.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "accounting/live_usage.h"
#include "accounting/prices.h"
#include "capture/socket_scan.h"
#include "capture/stream_table.h"
#include "control/control.h"
#include "core/daemon_impl.h"
#include "loader/bpf_runtime.h"
#include "loader/tls_attach.h"
#include "policy/policy.h"
#include "process/cgroup.h"
#include "process/lineage.h"
#include "process/procfs.h"
#include "store/store.h"
#include "core/manual_pause_file.h"
#include "util/faults.h"

namespace ab::core {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Manual brake. TARGET is a cgroup path ("/agents/a": frozen with cgroup.freeze, killed with
// cgroup.kill) or a pid (SIGSTOP / SIGCONT / SIGKILL, checked against pid reuse).
json Daemon::cmd_brake(const std::string& what, const json& args) {
  if (!args.is_object() || !args.contains("target") || !args["target"].is_string())
    throw std::invalid_argument("missing \"target\" (a cgroup path starting with / or a pid)");
  const std::string target = args["target"].get<std::string>();
  const bool dry = opts_.dry_run || policy_->dry_run();
  json detail{{"target", target}, {"reason", "manual"}, {"dry_run", dry}};
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  auto note_held_ms = [&] {  // a resume: how long the pause in force lasted
    auto it = paused_.find(target);
    if (what == "resume" && it != paused_.end())
      detail["held_ms"] = double((now - it->second.since_mono_ns) / 1000) / 1000.0;
  };
  std::string cgroup;
  uint32_t pid = 0;
  std::string comm;
  if (!target.empty() && target[0] == '/') {
    if (cg_mount_.empty()) throw control::ControlError(control::codes::kNotFound, "no cgroup v2 mount on this host");
    if (!process::valid_cgroup_path(target) || !fs::is_directory(process::cgroup_abs_path(cg_mount_, target)))
      throw control::ControlError(control::codes::kNotFound, "no such cgroup: " + target);
    cgroup = target;
    auto procs = process::cgroup_procs_recursive(cg_mount_, target);
    detail["pids"] = procs;
    if (!dry) {
      process::CgResult r{};
      if (what == "pause") r = process::cgroup_freeze(cg_mount_, target, true);
      else if (what == "resume") r = process::cgroup_freeze(cg_mount_, target, false);
      else {
        r = process::cgroup_kill(cg_mount_, target);
        if (!r) r = process::cgroup_kill_by_signal(cg_mount_, target);
      }
      if (!r) throw control::ControlError(control::codes::kInternal, what + " " + target + ": " + strerror(r.err));
    }
    note_held_ms();
    if (what == "pause") paused_[target] = {target, "manual", true, 0, now};
    else paused_.erase(target);
    save_manual_pauses();
  } else {
    char* end = nullptr;
    unsigned long v = std::strtoul(target.c_str(), &end, 10);
    if (target.empty() || *end || v == 0 || v > 4194304)
      throw std::invalid_argument("target must be a cgroup path starting with / or a pid: " + target);
    pid = static_cast<uint32_t>(v);
    auto pi = process::read_proc(static_cast<int>(pid));
    if (!pi) throw control::ControlError(control::codes::kNotFound, "no such process: " + target);
    comm = pi->comm;
    cgroup = pi->cgroup;
    const uint64_t start_ns = pi->start_ticks * (1'000'000'000ull / static_cast<uint64_t>(process::clock_ticks_per_sec()));
    if (!dry) {
      int sig = what == "pause" ? SIGSTOP : what == "resume" ? SIGCONT : SIGKILL;
      int rc = process::signal_same_process(static_cast<int>(pid), start_ns, sig);
      if (rc < 0) throw control::ControlError(control::codes::kInternal, what + " " + target + ": " + strerror(-rc));
    }
    note_held_ms();
    if (what == "pause") paused_[target] = {target, "manual", false, start_ns, now};
    else paused_.erase(target);
    save_manual_pauses();
  }
  const std::string kind = what == "pause" ? "paused" : what == "resume" ? "resumed" : "killed";
  if (kind == "paused" && !dry) count_hold(cgroup, "manual");
  record_event(kind, pid, cgroup, comm, detail);
  spdlog::info("{} {} (manual{})", kind, target, dry ? ", dry run" : "");
  return json{{"ok", true}, {"target", target}, {"action", kind}, {"dry_run", dry}};
}

// Manual pauses in force, one per line ("cgroup PATH" / "pid PID START_NS"), so that
// `--release-all` after a crash undoes them too.
void Daemon::save_manual_pauses() {
  const std::string path = run_dir_for(opts_) + "/manual-paused";
  if (paused_.empty()) {
    unlink(path.c_str());
    return;
  }
  const std::string tmp = path + ".tmp";
  std::vector<ManualPauseRecord> records;
  for (const auto& [t, p] : paused_) records.push_back({p.cgroup, t, p.start_ns});
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << format_manual_pauses(records);
  }
  std::rename(tmp.c_str(), path.c_str());
}

// Returns the targets released.
std::vector<std::string> release_manual_pauses(const std::string& run_dir, const std::string& cg_mount) {
  const std::string path = run_dir + "/manual-paused";
  std::ifstream in(path);
  std::vector<std::string> out;
  if (!in) return out;
  std::stringstream content;
  content << in.rdbuf();
  size_t malformed = 0;
  for (const auto& r : parse_manual_pauses(content.str(), &malformed)) {
    if (r.cgroup) {
      if (!cg_mount.empty() && process::valid_cgroup_path(r.target) && process::cgroup_freeze(cg_mount, r.target, false))
        out.push_back(r.target);
    } else if (process::signal_same_process(std::atoi(r.target.c_str()), r.start_ns, SIGCONT) == 0) {
      out.push_back(r.target);
    }
  }
  if (malformed) spdlog::warn("{}: {} malformed line(s) skipped", path, malformed);
  unlink(path.c_str());
  return out;
}

}  // namespace ab::core

// `agentbraked --release-all`: undo every hold, freeze and manual pause a crashed daemon left.

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

namespace {

constexpr const char* kDefaultPinDir = "/sys/fs/bpf/agentbrake";
constexpr const char* kDefaultRunDir = "/run/agentbrake";

}  // namespace

std::string run_dir_for(const DaemonOptions& opts) {
  return opts.state_dir ? *opts.state_dir : std::string(kDefaultRunDir);
}

std::string pin_dir_for(const DaemonOptions& opts) {
  if (!opts.state_dir) return kDefaultPinDir;
  return loader::pin_dir_for_state_dir(*opts.state_dir, false);
}

int release_all(const DaemonOptions& opts) {
  std::vector<std::string> manual;
  std::string what;
  (void)loader::ensure_kernel_filesystems(&what);
  if (auto host_mount = process::find_cgroup2_mount()) {
    // Recorded cgroups are relative to the daemon's --cgroup-scope: its directory is the mount.
    const auto mount = std::optional<std::string>(process::cgroup_abs_path(*host_mount, cgroup_scope_for_release(opts)));
    if (size_t t = CaptureFreezer::thaw_recorded(*mount, run_dir_for(opts) + "/capture-frozen"))
      spdlog::info("thawed {} cgroup(s) frozen for capture", t);
    if (size_t t = CaptureFreezer::thaw_recorded(*mount, run_dir_for(opts) + "/budget-frozen"))
      spdlog::info("thawed {} cgroup(s) frozen by a budget", t);
    manual = release_manual_pauses(run_dir_for(opts), *mount);
    if (!manual.empty()) spdlog::info("released {} manual pause(s)", manual.size());
  }
  std::vector<int> pids;
  int n = loader::release_pinned_holds(pin_dir_for(opts), &pids);
  int rc = 0;
  if (n == -ENOENT) {
    spdlog::info("no holds recorded in {}", pin_dir_for(opts));
  } else if (n < 0) {
    spdlog::error("cannot read the holds map in {}: {}", pin_dir_for(opts), strerror(-n));
    rc = 1;
  } else {
    spdlog::info("released {} hold(s)", n);
    // A private state dir (tests, several daemons) leaves nothing pinned once all is released;
    // the default pin stays, a running daemon may still rely on it.
    if (opts.state_dir) {
      unlink((pin_dir_for(opts) + "/holds").c_str());
      rmdir(pin_dir_for(opts).c_str());
    }
  }
  if (pids.empty() && manual.empty()) return rc;
  try {
    auto store = store::Store::open(opts.db_path, store::OpenMode::ReadWrite);
    for (int pid : pids) {
      store::Event e;
      e.kind = "resumed";
      e.pid = static_cast<uint32_t>(pid);
      e.detail = {{"target", std::to_string(pid)}, {"reason", "release_all"}, {"dry_run", false}};
      store->add_event(e);
    }
    for (const auto& t : manual) {
      store::Event e;
      e.kind = "resumed";
      if (t[0] == '/') e.cgroup = t;
      else e.pid = static_cast<uint32_t>(std::stoul(t));
      e.detail = {{"target", t}, {"reason", "release_all"}, {"dry_run", false}, {"was", "manual pause"}};
      store->add_event(e);
    }
    store->flush();
  } catch (const std::exception& e) {
    spdlog::warn("could not record the releases in {}: {}", opts.db_path, e.what());
  }
  return rc;
}

}  // namespace ab::core

// --cgroup-scope at start-up (docs/interface.md, docs/enforcement.md "Cgroup scope"): the scope
// is checked, made process-wide (process/cgroup_scope.h: /proc reads name cgroups relative to
// it and hide processes outside it) and handed to the kernel side (rodata: the host-wide
// programs ignore tasks outside it). The scope is also written to <run dir>/cgroup-scope so
// that --release-all, run without the flag by the unit's stop path, thaws the right cgroups.
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "core/daemon_impl.h"
#include "loader/bpf_runtime.h"
#include "process/cgroup.h"
#include "process/cgroup_scope.h"

namespace ab::core {

namespace {
std::string scope_file(const DaemonOptions& o) { return run_dir_for(o) + "/cgroup-scope"; }
}  // namespace

bool Daemon::set_up_cgroup_scope(loader::RuntimeOptions& ro) {
  std::error_code ec;
  if (opts_.cgroup_scope == "/") {
    std::filesystem::remove(scope_file(opts_), ec);
    return true;
  }
  auto mount = process::find_cgroup2_mount();
  if (!mount) {
    spdlog::error("--cgroup-scope {}: no cgroup v2 hierarchy is mounted on this host", opts_.cgroup_scope);
    return false;
  }
  std::string why;
  auto root = process::open_cgroup_scope(*mount, opts_.cgroup_scope, &why);
  if (!root) {
    spdlog::error("--cgroup-scope {}: {}", opts_.cgroup_scope, why);
    return false;
  }
  process::set_cgroup_scope(opts_.cgroup_scope);
  ro.scope_cgroup_id = root->id;
  ro.scope_level = root->level;
  std::filesystem::create_directories(run_dir_for(opts_), ec);
  std::ofstream(scope_file(opts_), std::ios::trunc) << opts_.cgroup_scope << "\n";
  spdlog::info("cgroup scope {} ({}, id {}): processes outside it are not watched, and cgroups are named relative to it",
               opts_.cgroup_scope, root->dir, root->id);
  return true;
}

std::string cgroup_scope_for_release(const DaemonOptions& opts) {
  if (opts.cgroup_scope != "/") return opts.cgroup_scope;
  std::ifstream in(scope_file(opts));
  std::string s;
  if (in && std::getline(in, s) && process::valid_cgroup_path(s)) return s;
  return "/";
}

}  // namespace ab::core

#include "core/capture_freeze.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <vector>

#include <spdlog/spdlog.h>

#include "process/cgroup.h"
#include "util/state_line.h"

namespace ab::core {

CaptureFreezer::CaptureFreezer(std::string mount, std::string state_file, std::string self_cgroup)
    : mount_(std::move(mount)), state_file_(std::move(state_file)), self_(std::move(self_cgroup)) {}

int CaptureFreezer::freeze_for(uint32_t pid, const std::string& cgroup, uint64_t now_ns) {
  if (mount_.empty() || cgroup.empty() || cgroup == "/") return -EPERM;
  // Never the daemon's own cgroup or one above it: it would freeze the daemon.
  if (self_ == cgroup || self_.rfind(cgroup + "/", 0) == 0) return -EPERM;
  auto it = frozen_.find(cgroup);
  if (it != frozen_.end()) {
    it->second.waiting.insert(pid);
    return 0;
  }
  int err = 0;
  auto procs = process::cgroup_procs_recursive(mount_, cgroup, &err);
  if (err) return err;
  if (procs.size() > kMaxProcesses) return -EPERM;
  Frozen f;
  f.waiting.insert(pid);
  f.since_ns = now_ns;
  {
    // Frozen already by someone else (a manual pause, `systemctl freeze`): held as it is, and
    // left frozen when we are done; it is theirs to thaw.
    std::ifstream state(process::cgroup_abs_path(mount_, cgroup) + "/cgroup.freeze");
    std::string v;
    if (state >> v && v == "1") {
      f.ours = false;
      frozen_[cgroup] = f;
      return 0;
    }
  }
  frozen_[cgroup] = f;
  save();  // recorded before the freeze: a crash in between leaves a harmless thaw to do
  if (auto r = process::cgroup_freeze(mount_, cgroup, true); !r) {
    frozen_.erase(cgroup);
    save();
    return r.err;
  }
  return 0;
}

void CaptureFreezer::thaw(const std::string& cgroup) {
  auto it = frozen_.find(cgroup);
  if (it != frozen_.end() && !it->second.ours) return;
  if (auto r = process::cgroup_freeze(mount_, cgroup, false); !r && r.err != -ENOENT)
    spdlog::warn("thawing {}: {}", cgroup, std::strerror(-r.err));
}

void CaptureFreezer::release(uint32_t pid) {
  bool changed = false;
  for (auto it = frozen_.begin(); it != frozen_.end();) {
    if (it->second.waiting.erase(pid) && it->second.waiting.empty()) {
      thaw(it->first);
      it = frozen_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  if (changed) save();
}

size_t CaptureFreezer::sweep(uint64_t now_ns, uint64_t max_ns) {
  size_t n = 0;
  for (auto it = frozen_.begin(); it != frozen_.end();) {
    if (now_ns > it->second.since_ns && now_ns - it->second.since_ns > max_ns) {
      thaw(it->first);
      it = frozen_.erase(it);
      n++;
    } else {
      ++it;
    }
  }
  if (n) save();
  return n;
}

void CaptureFreezer::release_all() {
  for (const auto& [cg, f] : frozen_) thaw(cg);
  frozen_.clear();
  save();
}

void CaptureFreezer::save() const {
  if (state_file_.empty()) return;
  if (frozen_.empty()) {
    unlink(state_file_.c_str());
    return;
  }
  std::string tmp = state_file_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [cg, f] : frozen_)
      if (f.ours) out << util::state_line({cg}) << '\n';
    if (!out) {
      spdlog::warn("cannot record frozen cgroups in {}", state_file_);
      return;
    }
  }
  std::rename(tmp.c_str(), state_file_.c_str());
}

size_t CaptureFreezer::thaw_recorded(const std::string& mount, const std::string& state_file) {
  std::ifstream in(state_file);
  if (!in) return 0;
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) {
    auto fields = util::parse_state_line(line);
    if (!fields || fields->size() != 1) continue;
    const std::string& cg = fields->front();
    if (cg[0] != '/' || !process::valid_cgroup_path(cg)) continue;
    if (process::cgroup_freeze(mount, cg, false)) n++;
  }
  unlink(state_file.c_str());
  return n;
}

}  // namespace ab::core

#include "core/capture_freeze.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <fstream>
#include <vector>

#include <spdlog/spdlog.h>

#include "process/cgroup.h"
#include "process/procfs.h"
#include "util/state_line.h"

namespace ab::core {

HoldChoice choose_hold(const HoldSite& s) {
  auto no = [](std::string why) { return HoldChoice{HoldMethod::Ptrace, std::move(why)}; };
  if (s.cgroup.empty() || s.cgroup == "/") return no("the root cgroup, or its cgroup is unknown");
  // Never the daemon's own cgroup or one above it: it would freeze the daemon.
  if (s.self_cgroup == s.cgroup || s.self_cgroup.rfind(s.cgroup + "/", 0) == 0) return no("it holds the daemon");
  if (!s.members) return no("its processes could not be read");
  const auto& m = *s.members;
  if (m.size() > s.max_processes) return no("more than " + std::to_string(s.max_processes) + " processes");
  std::map<int, int> parent;
  bool found = false;
  for (const auto& p : m) {
    parent[p.pid] = p.ppid;
    found = found || p.pid == s.held.pid;
  }
  if (!found) return no("the process is not in it");
  for (const auto& p : m) {
    if (p.pid == s.held.pid) continue;
    if (s.held.pgrp > 0 && p.pgrp == s.held.pgrp) continue;  // its job
    bool below = false;  // a descendant, through members of the cgroup
    int at = p.ppid;
    for (size_t steps = 0; steps <= m.size() && at > 0 && !below; steps++) {
      if (at == s.held.pid) below = true;
      auto it = parent.find(at);
      if (it == parent.end()) break;
      at = it->second;
    }
    if (!below) return no("it shares the cgroup with process " + std::to_string(p.pid) + ", not of its job");
  }
  return HoldChoice{HoldMethod::Freeze, ""};
}

namespace {

std::optional<ProcIds> read_ids_from_proc(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  process::ProcInfo pi;
  if (content.empty() || !process::parse_proc_stat(content, pi)) return std::nullopt;
  return ProcIds{pi.pid, pi.ppid, pi.pgrp};
}

}  // namespace

CaptureFreezer::CaptureFreezer(std::string mount, std::string state_file, std::string self_cgroup,
                               std::shared_ptr<PtraceHolder> tracer, ReadIds read_ids)
    : mount_(std::move(mount)),
      state_file_(std::move(state_file)),
      self_(std::move(self_cgroup)),
      tracer_(std::move(tracer)),
      read_ids_(read_ids ? std::move(read_ids) : ReadIds(read_ids_from_proc)) {}

int CaptureFreezer::freeze_for(uint32_t pid, const std::string& cgroup, uint64_t now_ns, uint64_t start_ns,
                               HoldMethod* how) {
  if (how) *how = HoldMethod::Freeze;
  if (traced_.count(pid)) {
    if (how) *how = HoldMethod::Ptrace;
    return 0;
  }
  auto it = frozen_.find(cgroup);
  if (it != frozen_.end()) {  // frozen for another process of its job
    it->second.waiting.insert(pid);
    return 0;
  }
  HoldSite site;
  site.cgroup = cgroup;
  site.self_cgroup = self_;
  site.held.pid = static_cast<int>(pid);
  site.max_processes = kMaxProcesses;
  if (auto ids = read_ids_(static_cast<int>(pid))) site.held = *ids;
  if (!mount_.empty() && !cgroup.empty() && cgroup != "/") {
    int err = 0;
    auto procs = process::cgroup_procs_recursive(mount_, cgroup, &err);
    if (!err && procs.size() <= kMaxProcesses) {
      site.members.emplace();
      for (int p : procs) {
        if (p == static_cast<int>(pid)) site.members->push_back(site.held);
        else if (auto ids = read_ids_(p)) site.members->push_back(*ids);  // gone since: not there
      }
    } else if (!err) {
      site.members.emplace(procs.size());  // too many: the count is all that matters
    }
  }
  const HoldChoice choice = choose_hold(site);
  if (choice.method == HoldMethod::Ptrace) {
    if (how) *how = HoldMethod::Ptrace;
    if (!tracer_) return -EPERM;
    Traced t;
    t.since_ns = now_ns;
    if (int rc = tracer_->hold(pid, start_ns, &t.hold); rc < 0) {
      spdlog::debug("pid {}: not held (cgroup {} not frozen: {}; ptrace: {})", pid, cgroup, choice.why,
                    std::strerror(-rc));
      return rc;
    }
    spdlog::debug("pid {}: held by ptrace (cgroup {} not frozen: {})", pid, cgroup, choice.why);
    traced_[pid] = std::move(t);
    return 0;
  }
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
  traced_.erase(pid);  // its handle ends: detached
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
  size_t n = std::erase_if(traced_, [&](const auto& t) {
    return now_ns > t.second.since_ns && now_ns - t.second.since_ns > max_ns;
  });
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
  traced_.clear();
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

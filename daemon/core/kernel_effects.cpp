#include "core/kernel_effects.h"

#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "process/cgroup.h"
#include "process/procfs.h"

namespace ab::core {

namespace {

int64_t mono_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

bool is_capture(gate::HoldReason r) { return r == gate::HoldReason::Capture; }

// Whether `path` is `ancestor` or lies below it ("/" is above everything).
bool within(std::string_view path, std::string_view ancestor) {
  if (ancestor == "/" || ancestor.empty()) return true;
  return path == ancestor || (path.size() > ancestor.size() && path.substr(0, ancestor.size()) == ancestor &&
                              path[ancestor.size()] == '/');
}

}  // namespace

std::string_view to_string(KernelCounter c) {
  switch (c) {
    case KernelCounter::HoldRecordsRestored: return "budget_hold_records_restored";
    case KernelCounter::CaptureFreezes: return "capture_freezes";
    case KernelCounter::CaptureFreezesSkipped: return "capture_freezes_skipped";
    case KernelCounter::HoldFreezes: return "budget_freezes";
    case KernelCounter::HoldFreezesSkipped: return "budget_holds_not_taken_foreground";
    case KernelCounter::ActionsRefused: return "actions_refused";
    case KernelCounter::KillErrors: return "kill_errors";
    case KernelCounter::ReleasesOfGoneProcesses: return "releases_of_gone_processes";
    case KernelCounter::ForegroundPtraceHolds: return "foreground_ptrace_holds";
    case KernelCounter::ForegroundNotHeldTraced: return "foreground_not_held_traced";
    case KernelCounter::ForegroundNotHeldPtrace: return "foreground_not_held_ptrace_denied";
  }
  return "unknown";
}

KernelEffects::KernelEffects(loader::BpfRuntime& rt, CaptureFreezer* capture_freezer, CaptureFreezer* hold_freezer,
                             std::string cg_mount, std::string self_cgroup, Hooks hooks)
    : rt_(rt),
      capture_freezer_(capture_freezer),
      hold_freezer_(hold_freezer),
      cg_mount_(std::move(cg_mount)),
      self_cgroup_(self_cgroup.empty() ? "/" : std::move(self_cgroup)),
      hooks_(std::move(hooks)) {}

void KernelEffects::apply(const gate::Effect& e) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, gate::WriteCredit>) {
          ab_gate g{};
          g.credits = x.credits;
          g.since_ns = static_cast<uint64_t>(mono_now());
          if (int rc = rt_.gate().update(x.pid, g); rc < 0)
            spdlog::warn("gate entry of pid {}: {}", x.pid, strerror(-rc));
        } else if constexpr (std::is_same_v<T, gate::RemoveGate>) {
          rt_.gate().erase(x.pid);
        } else if constexpr (std::is_same_v<T, gate::Hold>) {
          hold(x);
        } else if constexpr (std::is_same_v<T, gate::Release>) {
          release(x);
        } else if constexpr (std::is_same_v<T, gate::Deny>) {
          deny(x.entity);
        } else if constexpr (std::is_same_v<T, gate::Undeny>) {
          undeny(x.entity);
        } else if constexpr (std::is_same_v<T, gate::Kill>) {
          kill(x.entity);
        } else if constexpr (std::is_same_v<T, gate::ForgetProcess>) {
          forget(x.pid);
        } else if constexpr (std::is_same_v<T, gate::Record>) {
          record(x.event);
        }
      },
      e);
}

void KernelEffects::hold(const gate::Hold& h) {
  const bool capture = is_capture(h.reason);
  if (h.via == gate::HoldVia::Freeze) {
    CaptureFreezer* f = capture ? capture_freezer_ : hold_freezer_;
    const std::string cg = hooks_.cgroup_of ? hooks_.cgroup_of(h.pid) : "";
    HoldMethod how = HoldMethod::Freeze;
    const int rc = f ? f->freeze_for(h.pid, cg, static_cast<uint64_t>(mono_now()), h.start_time, &how) : -ENOTSUP;
    if (rc != 0) {
      count(capture ? KernelCounter::CaptureFreezesSkipped : KernelCounter::HoldFreezesSkipped);
      if (rc == -EBUSY) count(KernelCounter::ForegroundNotHeldTraced);
      else if (rc == -EPERM && how == HoldMethod::Ptrace) count(KernelCounter::ForegroundNotHeldPtrace);
      spdlog::debug("pid {}: foreground job not held ({} of cgroup {}: {})", h.pid,
                    how == HoldMethod::Ptrace ? "ptrace" : "freeze", cg, strerror(-rc));
      not_taken_.insert({h.pid, capture});
      return;
    }
    if (how == HoldMethod::Ptrace) {
      count(KernelCounter::ForegroundPtraceHolds);
      by_ptrace_.insert({h.pid, capture});
    } else {
      count(capture ? KernelCounter::CaptureFreezes : KernelCounter::HoldFreezes);
      by_ptrace_.erase({h.pid, capture});
    }
  } else if (!capture) {
    // The kernel stopped it and made the record; the record must be there for the release (and
    // for --release-all if we die). It can be gone when the kernel took over a capture hold's
    // record just as that was deleted.
    ab_hold_value hv{};
    hv.start_time_ns = h.start_time;
    hv.since_ns = static_cast<uint64_t>(mono_now());
    hv.reason = AB_HOLD_BUDGET;
    if (rt_.holds().update(h.pid, hv, loader::MapUpdate::NoExist) == 0) count(KernelCounter::HoldRecordsRestored);
  }
  not_taken_.erase({h.pid, capture});
  if (hooks_.hold_taken) hooks_.hold_taken(h.pid, h.reason);
}

void KernelEffects::release(const gate::Release& r) {
  const bool capture = is_capture(r.reason);
  if (r.via == gate::HoldVia::Freeze) {
    if (CaptureFreezer* f = capture ? capture_freezer_ : hold_freezer_) f->release(r.pid);
    return;
  }
  // SIGCONT before the record goes, so a daemon that dies in between leaves a record (released
  // at the next start), never a stopped process nobody knows of. A capture release lets go
  // only a capture record: a request start without credit in between turned it into a budget
  // hold (tls.bpf.c), and that one stays until the ledger lets it go.
  const uint32_t want = capture ? AB_HOLD_CAPTURE : AB_HOLD_BUDGET;
  auto hv = rt_.holds().lookup(r.pid);
  if (!hv || hv->reason != want) return;
  int rc = process::signal_same_process(static_cast<int>(r.pid), r.start_time ? r.start_time : hv->start_time_ns, SIGCONT);
  if (rc == -ESRCH) count(KernelCounter::ReleasesOfGoneProcesses);
  else if (rc < 0) spdlog::warn("releasing pid {}: {}", r.pid, strerror(-rc));
  if (auto again = rt_.holds().lookup(r.pid); again && again->reason == want) rt_.holds().erase(r.pid);
}

bool KernelEffects::refused(const gate::EntityKey& e) const {
  using K = gate::EntityKey::Kind;
  if (e.kind == K::Cgroup) {
    const std::string& p = e.cgroup.empty() ? std::string("/") : e.cgroup;
    // the daemon's cgroup now (a unit may be moved): kills and denies are rare, read it each time
    const std::string self = process::read_cgroup_path(getpid()).value_or(self_cgroup_);
    return p == "/" || within(p, "/init.scope") || within(self, p);
  }
  const uint32_t self = static_cast<uint32_t>(getpid());
  if (e.pid == self || e.pid <= 1) return true;
  if (e.kind == K::Tree && hooks_.members)
    for (const auto& [pid, start] : hooks_.members(e))
      if (static_cast<uint32_t>(pid) == self) return true;
  return false;
}

void KernelEffects::deny(const gate::EntityKey& e) {
  if (denied_.count(e)) return;
  if (refused(e)) {
    count(KernelCounter::ActionsRefused);
    spdlog::error("deny of {} refused: it holds the daemon, init or the root cgroup", e.str());
    return;
  }
  DeniedIds ids;
  if (e.kind == gate::EntityKey::Kind::Cgroup) {
    if (!cg_mount_.empty()) {
      auto add = [&](const std::string& rel) {
        if (auto id = process::cgroup_id_of(cg_mount_, rel)) ids.cgroups.push_back(*id);
      };
      add(e.cgroup);
      std::error_code ec;
      const std::string abs = process::cgroup_abs_path(cg_mount_, e.cgroup);
      for (auto it = std::filesystem::recursive_directory_iterator(abs, ec);
           !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
        if (it->is_directory(ec)) add(e.cgroup + "/" + std::filesystem::relative(it->path(), abs, ec).string());
    }
  } else if (hooks_.members) {
    for (const auto& [pid, start] : hooks_.members(e)) ids.pids.push_back(static_cast<uint32_t>(pid));
  }
  const uint32_t one = 1;
  for (auto id : ids.cgroups) rt_.denied_cgroups().update(id, one);
  for (auto p : ids.pids) rt_.denied_pids().update(p, one);
  spdlog::warn("denied {}: new connections to LLM endpoints fail{}", e.str(),
               deny_available_ ? "" : " (connect programs unavailable: requests are held instead)");
  denied_[e] = std::move(ids);
}

void KernelEffects::undeny(const gate::EntityKey& e) {
  auto it = denied_.find(e);
  if (it == denied_.end()) return;
  for (auto id : it->second.cgroups) rt_.denied_cgroups().erase(id);
  for (auto p : it->second.pids) rt_.denied_pids().erase(p);
  denied_.erase(it);
}

void KernelEffects::kill(const gate::EntityKey& e) {
  if (refused(e)) {
    count(KernelCounter::ActionsRefused);
    spdlog::error("kill of {} refused: it holds the daemon, init or the root cgroup", e.str());
    return;
  }
  if (e.kind == gate::EntityKey::Kind::Cgroup) {
    if (cg_mount_.empty()) return;
    auto r = process::cgroup_kill(cg_mount_, e.cgroup);
    if (!r) r = process::cgroup_kill_by_signal(cg_mount_, e.cgroup);
    if (!r) {
      count(KernelCounter::KillErrors);
      spdlog::error("killing cgroup {}: {}", e.cgroup, strerror(-r.err));
    }
    return;
  }
  if (!hooks_.members) return;
  const uint32_t self = static_cast<uint32_t>(getpid());
  for (const auto& [pid, start] : hooks_.members(e)) {
    if (static_cast<uint32_t>(pid) == self) continue;
    // through a pidfd, checked against its start time: a pid reused since is never hit
    uint64_t start_ns = start;
    if (!start_ns)
      if (auto ticks = process::read_start_ticks(pid)) start_ns = *ticks * (1'000'000'000ull / uint64_t(sysconf(_SC_CLK_TCK)));
    if (!start_ns) continue;  // gone already
    int rc = process::signal_same_process(pid, start_ns, SIGKILL);
    if (rc < 0 && rc != -ESRCH) {
      count(KernelCounter::KillErrors);
      spdlog::error("killing pid {}: {}", pid, strerror(-rc));
    }
  }
}

void KernelEffects::forget(uint32_t pid) {
  rt_.gate().erase(pid);
  rt_.denied_pids().erase(pid);
  for (auto& [e, ids] : denied_) std::erase(ids.pids, pid);
  not_taken_.erase({pid, true});
  not_taken_.erase({pid, false});
  by_ptrace_.erase({pid, true});
  by_ptrace_.erase({pid, false});
}

void KernelEffects::record(const gate::Event& e) {
  // what was not held is not reported as held
  if (const auto* p = std::get_if<gate::Paused>(&e.what); p && !e.dry_run && not_taken_.count({e.pid, is_capture(p->reason)}))
    return;
  if (const auto* r = std::get_if<gate::Resumed>(&e.what)) {
    if (not_taken_.erase({e.pid, is_capture(r->reason)})) return;
  }
  if (!hooks_.record) return;
  // a foreground job held by ptrace: its events say so (the ledger knows only "freeze")
  if (const auto* p = std::get_if<gate::Paused>(&e.what); p && p->via == gate::HoldVia::Freeze &&
                                                          by_ptrace_.count({e.pid, is_capture(p->reason)})) {
    gate::Event copy = e;
    std::get<gate::Paused>(copy.what).via = gate::HoldVia::Ptrace;
    hooks_.record(copy);
    return;
  }
  if (const auto* r = std::get_if<gate::Resumed>(&e.what); r && r->via == gate::HoldVia::Freeze &&
                                                           by_ptrace_.erase({e.pid, is_capture(r->reason)})) {
    gate::Event copy = e;
    std::get<gate::Resumed>(copy.what).via = gate::HoldVia::Ptrace;
    hooks_.record(copy);
    return;
  }
  hooks_.record(e);
}

}  // namespace ab::core

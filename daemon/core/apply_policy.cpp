// Applying a policy: the first one, a reload, and what follows from it (the endpoints map,
// which cgroups and processes the rules select, the scan for processes already connected).

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
#include "process/cgroup_scope.h"
#include "process/lineage.h"
#include "process/procfs.h"
#include "store/store.h"
#include "core/manual_pause_file.h"
#include "util/faults.h"

namespace ab::core {

using json = nlohmann::json;
namespace fs = std::filesystem;

bool Daemon::load_initial_policy() {
  policy::LoadResult r;
  if (opts_.policy_path) {
    r = policy::load_path(*opts_.policy_path);
  } else {
    r = policy::load_default_location();
  }
  if (!r.ok()) {
    for (const auto& e : r.errors) spdlog::error("policy: {}", e);
    spdlog::error("no valid policy at {}: not starting", r.source.empty() ? "the default location" : r.source);
    return false;
  }
  policy_ = r.policy;
  return true;
}

void Daemon::apply_policy(std::shared_ptr<const policy::Policy> p) {
  policy_ = std::move(p);
  prices_ = accounting::PriceTable::for_policy(*policy_);
  // Names are resolved by a worker (getaddrinfo can block for seconds: CI has no DNS); their
  // addresses join the endpoints when on_resolved() takes them, and are learned from DNS too.
  const std::vector<std::string> names = endpoints_.set_policy(policy_->endpoints);
  if (!names.empty()) {
    if (!resolver_) resolver_ = std::make_unique<Resolver>();
    spdlog::info("resolving {} endpoint name(s) off the event loop: {}", names.size(), fmt::join(names, ", "));
    resolver_->submit(names);
  }
  sync_endpoints_map();
  refresh_matches();
  if (rt_) brake_policy_changed();
  fleet_policy_changed();
  retention_ms_ = policy_->retention.count();
  loops_.set_policy(*policy_);
  operate_policy_changed();
}

void Daemon::sync_endpoints_map() {
  std::set<ab_endpoint_key, EndpointKeyLess> want;
  for (const auto& k : endpoints_.keys()) want.insert(k);
  const auto map = rt_->endpoints();
  // the value says whether it speaks plain HTTP (its connects go into plain_socks); written
  // for every key, so a reload that flips `tls:` takes effect
  for (const auto& k : want) {
    const auto* info = endpoints_.find(k);
    (void)map.update(k, AB_EP_KNOWN | (info && !info->tls ? AB_EP_PLAIN : 0u));
  }
  for (const auto& k : kernel_endpoints_)
    if (!want.count(k)) (void)map.erase(k);
  kernel_endpoints_ = std::move(want);
  // One uid's unconfirmed addresses (endpoint_hints: seen by that uid's connects only).
  std::set<EndpointHint, EndpointHintLess> hints;
  for (const auto& h : endpoints_.hint_keys()) hints.insert(h);
  const auto hint_map = rt_->endpoint_hints();
  for (const auto& h : hints)
    if (!kernel_hints_.count(h)) {
      const ab_endpoint_hint_key key{h.uid, h.key};
      if (hint_map.update(key, 1) != 0) stats_[DaemonCounter::EndpointHintsDropped]++;
    }
  for (const auto& h : kernel_hints_)
    if (!hints.count(h)) hint_map.erase(ab_endpoint_hint_key{h.uid, h.key});
  kernel_hints_ = std::move(hints);
}

// Budget and loop rules with a `match:` select processes before their first LLM byte: the
// kernel holds those at their first outbound connect. Cgroup matches become cgroup ids
// (walked here, refreshed by the timer so new cgroups are picked up); process facts (exe,
// comm, uid) become pids.
std::vector<const policy::Match*> Daemon::selecting_rules() const {
  std::vector<const policy::Match*> rules;
  for (const auto& b : policy_->budgets)
    if (!b.match.empty()) rules.push_back(&b.match);
  for (const policy::LoopRule* r : {static_cast<const policy::LoopRule*>(&policy_->loops.ping_pong),
                                    static_cast<const policy::LoopRule*>(&policy_->loops.repetition),
                                    static_cast<const policy::LoopRule*>(&policy_->loops.fan_out),
                                    static_cast<const policy::LoopRule*>(&policy_->loops.retry_storm)})
    if (r->enabled && !r->match.empty()) rules.push_back(&r->match);
  return rules;
}

// A rule that names process facts (exe, comm, uid) selects processes, not cgroups.
static bool needs_process(const policy::Match& m) { return m.exe || m.comm || m.uid; }

bool Daemon::selected_as_process(const std::vector<const policy::Match*>& rules, policy::ProcessFacts f) const {
  if (auto u = process::systemd_unit_of(f.cgroup)) f.unit = *u;
  for (const auto* m : rules)
    if (needs_process(*m) && policy::matches(*m, f)) return true;
  return false;
}

void Daemon::refresh_matches() {
  const std::vector<const policy::Match*> rules = selecting_rules();

  std::set<uint64_t> cg_want;
  std::set<uint32_t> pid_want;
  if (!rules.empty() && !cg_mount_.empty()) {
    std::error_code ec;
    std::vector<std::pair<std::string, uint64_t>> dirs{{"/", 0}};
    struct stat st{};
    if (stat(cg_mount_.c_str(), &st) == 0) dirs[0].second = st.st_ino;
    for (auto it = fs::recursive_directory_iterator(cg_mount_, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_directory(ec)) continue;
      if (it.depth() > 32) {
        it.disable_recursion_pending();
        continue;
      }
      std::string rel = "/" + fs::relative(it->path(), cg_mount_, ec).string();
      if (stat(it->path().c_str(), &st) == 0) dirs.emplace_back(rel, st.st_ino);
    }
    for (const auto& [rel, id] : dirs) {
      policy::ProcessFacts f;
      f.cgroup = rel;
      if (auto u = process::systemd_unit_of(rel)) f.unit = *u;
      for (const auto* m : rules) {
        if (needs_process(*m)) continue;  // matched per pid below
        if (policy::matches(*m, f)) {
          cg_want.insert(id);
          break;
        }
      }
    }
    for (int pid : procs_.pids()) {
      const auto* e = procs_.find(pid);
      if (e && selected_as_process(rules, {e->cgroup, "", e->exe, e->comm, e->uid}))
        pid_want.insert(static_cast<uint32_t>(pid));
    }
  }
  const auto cg_map = rt_->matched_cgroups();
  const auto pid_map = rt_->matched_pids();
  for (auto id : cg_want)
    if (!matched_cgroups_.count(id)) (void)cg_map.update(id, 1);
  for (auto id : matched_cgroups_)
    if (!cg_want.count(id)) (void)cg_map.erase(id);
  for (auto pid : pid_want)
    if (!matched_pids_.count(pid)) (void)pid_map.update(pid, 1);
  for (auto pid : matched_pids_)
    if (!pid_want.count(pid)) (void)pid_map.erase(pid);
  matched_cgroups_ = std::move(cg_want);
  matched_pids_ = std::move(pid_want);
}

// Processes that connected before we started: attach to them now (no hold; their next
// request is parsed from its request line on).
void Daemon::scan_existing(const std::vector<ab_endpoint_key>* only) {
  auto among = [only](const ab_endpoint_key& k) {
    if (!only) return true;
    for (const auto& o : *only)
      if (o.family == k.family && (o.port == 0 || o.port == k.port) && std::memcmp(o.addr, k.addr, sizeof o.addr) == 0)
        return true;
    return false;
  };
  auto found = capture::processes_connected_to(
      [this, &among](const ab_endpoint_key& k) { return endpoints_.find(k) != nullptr && among(k); });
  for (const auto& c : found) {
    if (static_cast<pid_t>(c.pid) == getpid()) continue;
    if (!process::cgroup_scope_is_host() && !process::pid_in_cgroup_scope(static_cast<int>(c.pid)))
      continue;  // outside the --cgroup-scope: another daemon's (another host's) process
    if (only) {
      auto it = watched_.find(c.pid);
      if (it != watched_.end() && (it->second.attached || it->second.attaching)) continue;
    }
    auto& w = watched_[c.pid];
    if (const auto* info = endpoints_.find(c.remote)) {
      w.endpoint_host = info->host;
      w.endpoint_api = info->api;
      // its later plain connects are read; this one, made before the daemon ran, is not
      // (its fd was never put in plain_socks)
      if (!info->tls) w.plain_wanted = true;
    }
    if (auto pi = process::read_proc(c.pid)) {
      procs_.upsert(*pi);
      w.start_ns = 0;
    }
    set_watch(c.pid, AB_WATCH_PENDING);
    request_attach(c.pid, "connected before start");
  }
  if (only) spdlog::info("{} process(es) already connected to endpoint addresses just resolved", found.size());
  else spdlog::info("start-up scan: {} process(es) already connected to LLM endpoints", found.size());
}

void Daemon::reload_policy(const std::string& why) {
  policy::LoadResult r = opts_.policy_path ? policy::load_path(*opts_.policy_path) : policy::load_default_location();
  if (!r.ok()) {
    spdlog::error("policy reload ({}) rejected; the policy in force stays:", why);
    for (const auto& e : r.errors) spdlog::error("  {}", e);
    record_event("policy_rejected", 0, "", "", {{"source", r.source}, {"errors", r.errors}});
    throw control::ControlError(control::codes::kBadRequest,
                                "policy rejected: " + (r.errors.empty() ? std::string("?") : r.errors.front()));
  }
  apply_policy(r.policy);
  spdlog::info("policy reloaded ({}): {} ({})", why, policy_->source, policy_->digest);
  record_event("policy_loaded", 0, "", "", {{"source", policy_->source}, {"digest", policy_->digest}, {"errors", json::array()}});
}

}  // namespace ab::core

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

int64_t clock_ns(clockid_t c) {
  timespec ts{};
  clock_gettime(c, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

static std::vector<std::string> release_manual_pauses(const std::string& run_dir, const std::string& cg_mount);

namespace {

constexpr int64_t kTickMs = 100;                  // timer period
constexpr const char* kDefaultPinDir = "/sys/fs/bpf/agentbrake";
constexpr const char* kDefaultRunDir = "/run/agentbrake";

// The C library the getaddrinfo probes attach to: the one this daemon maps (the host's).
std::string find_libc() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    auto base = path.substr(path.rfind('/') + 1);
    if (base.rfind("libc.so", 0) == 0 || base.rfind("libc-", 0) == 0) return path;
  }
  return {};
}

std::string counter_name(int i) {
  switch (i) {
    case AB_CNT_RB_RESERVE_FAIL: return "ring_buffer_lost";
    case AB_CNT_TLS_TRUNCATED: return "tls_truncated_calls";
    case AB_CNT_TLS_LOST_BYTES: return "tls_truncated_lost_bytes";
    case AB_CNT_HOLDS_TAKEN: return "holds_taken";
    case AB_CNT_HOLDS_SKIPPED_FG: return "holds_skipped_foreground";
    case AB_CNT_HOLDS_NO_RECORD: return "holds_skipped_ring_full";
    case AB_CNT_TLS_READ_ERR: return "tls_read_errors";
    case AB_CNT_DNS_PARSE: return "dns_parse_errors";
    case AB_CNT_GATE_PASSED: return "gate_requests_passed";
    case AB_CNT_GATE_HELD: return "gate_requests_held";
    case AB_CNT_GATE_FG_LATE: return "gate_foreground_not_held";
    case AB_CNT_DENIED_CONNECT: return "denied_connects";
    case AB_CNT_GATE_H2_UNSYNCED: return "gate_h2_unsynced";
    case AB_CNT_OPAQUE_REQUESTS: return "opaque_request_starts";
    case AB_CNT_OPAQUE_REFUSED: return "opaque_requests_refused_kernel";
    case AB_CNT_OPAQUE_SOCKETS: return "opaque_sockets";
    case AB_CNT_OPAQUE_EXE_SKIPS: return "opaque_exe_holds_skipped";
    default: return "counter_" + std::to_string(i);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// start-up

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
  retention_ms_ = policy_->retention.count();
  loops_.set_policy(*policy_);
  operate_policy_changed();
}

void Daemon::sync_endpoints_map() {
  std::set<ab_endpoint_key, EndpointKeyLess> want;
  for (const auto& k : endpoints_.keys()) want.insert(k);
  uint32_t one = 1;
  for (const auto& k : want)
    if (!kernel_endpoints_.count(k)) bpf_map_update_elem(rt_->endpoints_fd(), &k, &one, BPF_ANY);
  for (const auto& k : kernel_endpoints_)
    if (!want.count(k)) bpf_map_delete_elem(rt_->endpoints_fd(), &k);
  kernel_endpoints_ = std::move(want);
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
  uint32_t one = 1;
  for (auto id : cg_want)
    if (!matched_cgroups_.count(id)) bpf_map_update_elem(rt_->matched_cgroups_fd(), &id, &one, BPF_ANY);
  for (auto id : matched_cgroups_)
    if (!cg_want.count(id)) bpf_map_delete_elem(rt_->matched_cgroups_fd(), &id);
  for (auto pid : pid_want)
    if (!matched_pids_.count(pid)) bpf_map_update_elem(rt_->matched_pids_fd(), &pid, &one, BPF_ANY);
  for (auto pid : matched_pids_)
    if (!pid_want.count(pid)) bpf_map_delete_elem(rt_->matched_pids_fd(), &pid);
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
    if (only) {
      auto it = watched_.find(c.pid);
      if (it != watched_.end() && (it->second.attached || it->second.attaching)) continue;
    }
    auto& w = watched_[c.pid];
    if (const auto* info = endpoints_.find(c.remote)) {
      w.endpoint_host = info->host;
      w.endpoint_api = info->api;
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

int Daemon::start() {
  started_mono_ = clock_ns(CLOCK_MONOTONIC);
  resolver_ = std::make_unique<Resolver>();
  unix_minus_mono_ = clock_ns(CLOCK_REALTIME) - started_mono_;
  {
    std::string why;
    if (util::init_faults_from_env(&why) < 0) {
      spdlog::error("AGENTBRAKE_TEST_FAULTS: {}", why);
      return 1;
    }
    if (util::faults().any())
      spdlog::warn("test fault injection is on (AGENTBRAKE_TEST_FAULTS={}): not for production",
                   util::faults().describe());
  }
  if (!load_initial_policy()) return 1;
  if (opts_.dry_run) spdlog::info("dry run: decisions are recorded, nothing is enforced");

  std::string what;
  if (int rc = loader::ensure_kernel_filesystems(&what); rc < 0) {
    spdlog::error("kernel filesystems: {}", what);
    return 1;
  }
  try {
    store_ = store::Store::open(opts_.db_path, store::OpenMode::ReadWrite);
  } catch (const std::exception& e) {
    spdlog::error("database {}: {}", opts_.db_path, e.what());
    return 1;
  }

  pin_dir_ = pin_dir_for(opts_);
  std::vector<int> released;
  if (int n = loader::release_pinned_holds(pin_dir_, &released); n > 0)
    spdlog::warn("released {} hold(s) left by a previous daemon", n);
  for (int pid : released) record_event("resumed", pid, "", "", {{"target", std::to_string(pid)}, {"reason", "release_all"}, {"dry_run", false}});

  loader::RuntimeOptions ro;
  ro.pin_dir = pin_dir_;
  ro.daemon_tgid = static_cast<uint32_t>(getpid());
  ro.capture_holds = true;
  ro.ring_bytes = opts_.ring_buffer_mb << 20;
  std::string err;
  rt_ = loader::BpfRuntime::create(ro, &err);
  if (!rt_) {
    spdlog::error("loading BPF programs: {}", err);
    return 1;
  }
  if (auto libc = find_libc(); !libc.empty()) {
    if (int rc = rt_->attach_dns(libc); rc < 0)
      spdlog::warn("DNS probes on {} failed ({}): provider addresses are learned only from the policy", libc,
                   strerror(-rc));
  }
  if (auto m = process::find_cgroup2_mount()) {
    cg_mount_ = *m;
    cgroups_ = std::make_unique<process::CgroupResolver>(cg_mount_);
  } else {
    spdlog::warn("no cgroup v2 mount: calls are attributed to processes only");
  }
  {
    std::error_code ec;
    fs::create_directories(run_dir_for(opts_), ec);
    const std::string frozen_file = run_dir_for(opts_) + "/capture-frozen";
    if (!cg_mount_.empty()) {
      if (size_t n = CaptureFreezer::thaw_recorded(cg_mount_, frozen_file); n > 0)
        spdlog::warn("thawed {} cgroup(s) a previous daemon froze for capture", n);
      std::string self_cg = process::read_cgroup_path(getpid()).value_or("/");
      tracer_ = std::make_shared<PtraceHolder>();
      freezer_ = std::make_unique<CaptureFreezer>(cg_mount_, frozen_file, self_cg, tracer_);
      const std::string budget_file = run_dir_for(opts_) + "/budget-frozen";
      CaptureFreezer::thaw_recorded(cg_mount_, budget_file);
      for (const auto& t : release_manual_pauses(run_dir_for(opts_), cg_mount_)) {
        spdlog::warn("released manual pause of {} left by a previous daemon", t);
        record_event("resumed", t[0] == '/' ? 0 : std::stoul(t), t[0] == '/' ? t : "", "",
                     {{"target", t}, {"reason", "release_all"}, {"dry_run", false}});
      }
      budget_freezer_ = std::make_unique<CaptureFreezer>(cg_mount_, budget_file, self_cg, tracer_);
    }
  }
  procs_.scan("/proc", cgroups_.get());
  streams_ = std::make_unique<capture::StreamTable>([this](uint32_t pid) {
    protocol::Connection::Options o;
    auto it = watched_.find(pid);
    if (it != watched_.end()) {
      o.api_hint = api_kind_for(it->second.endpoint_api);
      o.host_hint = it->second.endpoint_host;
    }
    return o;
  });
  worker_ = std::make_unique<loader::AttachWorker>(*rt_);
  worker_->set_locator_cache_dir(run_dir_for(opts_));  // TLS entry points found by scanning, kept across restarts
  ring_ = ring_buffer__new(rt_->events_fd(), &Daemon::on_ring_record, this, nullptr);
  if (!ring_) {
    spdlog::error("ring buffer: {}", strerror(errno));
    return 1;
  }
  if (!cg_mount_.empty()) {
    int rc = rt_->attach_deny(cg_mount_);
    deny_available_ = rc == 0;
    if (rc < 0) spdlog::warn("deny programs (cgroup connect4/6) unavailable: {}; deny holds requests instead", strerror(-rc));
    opaque_start();
  }
  apply_policy(policy_);
  restore_budgets();
  scan_existing();

  // Signals arrive through the signalfd only (blocked in main() before any thread started).
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  sigfd_ = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  timerfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  itimerspec its{};
  its.it_interval.tv_nsec = kTickMs * 1'000'000;
  its.it_value = its.it_interval;
  timerfd_settime(timerfd_, 0, &its, nullptr);
  epfd_ = epoll_create1(EPOLL_CLOEXEC);

  // The socket answers only once the probes are attached (docs/interface.md, "agentbraked").
  try {
    server_ = std::make_unique<control::Server>(opts_.socket_path);
  } catch (const std::exception& e) {
    spdlog::error("control socket: {}", e.what());
    return 1;
  }
  register_commands();
  auto add = [this](int fd, int tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(tag);
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  };
  add(ring_buffer__epoll_fd(ring_), 1);
  add(sigfd_, 2);
  add(timerfd_, 3);
  add(server_->fd(), 4);
  add(worker_->notify_fd(), 5);
  add(resolver_->notify_fd(), 7);
  if (alerts_) add(alerts_->notify_fd(), 6);
  start_pruner();

  record_event("policy_loaded", 0, "", "", {{"source", policy_->source}, {"digest", policy_->digest}, {"errors", json::array()}});
  store_->flush();
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_usec_ = usec;
  sd_notify(0, "READY=1\nSTATUS=watching LLM calls");
  spdlog::info("agentbraked {} ready: policy {} ({}), {} host-wide probes, uprobe_multi={}, socket {}",
               opts_.version, policy_->source, policy_->digest, rt_->host_links(), rt_->uprobe_multi(),
               opts_.socket_path);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// the loop

int Daemon::loop() {
  epoll_event evs[16];
  while (!stop_) {
    int n = epoll_wait(epfd_, evs, 16, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("epoll_wait: {}", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      switch (evs[i].data.u32) {
        case 1: drain_ring(); break;
        case 2: on_signal(); break;
        case 3: {
          uint64_t expirations;
          while (read(timerfd_, &expirations, sizeof expirations) > 0) {}
          drain_ring();
          on_tick();
          break;
        }
        case 4: server_->on_readable(); break;
        case 5: on_attach_done(); break;
        case 6: on_alert_results(); break;
        case 7: on_resolved(); break;
      }
    }
  }
  shutdown();
  return 0;
}

// One pass over the ring reads at most kDrainMaxRecords records or for kDrainMaxNs, then goes
// back to the loop: a producer as fast as the daemon (a flood, or a slow pass) would otherwise
// keep ring_buffer__consume() going forever, and nothing else (control socket, timer, watchdog,
// attach results) would run. What is left is read at the next pass: the ring's epoll fd stays
// readable while it holds records (level-triggered), and every tick drains too.
namespace {
constexpr uint32_t kDrainMaxRecords = 8192;
constexpr int64_t kDrainMaxNs = 20'000'000;
constexpr int kDrainCut = -ECANCELED;  // the callback's "stop here" (libbpf returns it as is)
}  // namespace

void Daemon::drain_ring() {
  unix_minus_mono_ = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
  drain_records_ = 0;
  drain_deadline_ns_ = clock_ns(CLOCK_MONOTONIC) + kDrainMaxNs;
  int n = ring_buffer__consume(ring_);
  if (n == kDrainCut) stats_["ring_drain_passes_cut"]++;
  else if (n < 0 && n != -EINTR) stats_["ring_buffer_consume_errors"]++;
  process_exchanges();
}

int Daemon::on_ring_record(void* ctx, void* data, size_t size) {
  auto* d = static_cast<Daemon*>(ctx);
  if (int64_t us = util::faults().record_cost_us) {  // tests only: a slower consumer
    const int64_t until = clock_ns(CLOCK_MONOTONIC) + us * 1000;
    while (clock_ns(CLOCK_MONOTONIC) < until) {}
  }
  d->on_record(data, size);
  // libbpf has moved past this record already: a cut loses nothing
  if (++d->drain_records_ >= kDrainMaxRecords ||
      ((d->drain_records_ & 31) == 0 && clock_ns(CLOCK_MONOTONIC) >= d->drain_deadline_ns_))
    return kDrainCut;
  return 0;
}

void Daemon::on_record(const void* data, size_t size) {
  if (size < sizeof(ab_event_header)) {
    stats_["malformed_records"]++;
    return;
  }
  ab_event_header h;
  std::memcpy(&h, data, sizeof h);
  if (h.layout != AB_EVENT_LAYOUT_VERSION) {
    stats_["malformed_records"]++;
    return;
  }
  switch (h.type) {
    case AB_EV_EXEC:
    case AB_EV_FORK:
    case AB_EV_EXIT:
      if (size < sizeof(ab_proc_event)) break;
      {
        ab_proc_event e;
        std::memcpy(&e, data, sizeof e);
        on_proc_event(e);
      }
      return;
    case AB_EV_CONNECT:
    case AB_EV_HOLD:
      if (size < sizeof(ab_hold_event)) break;
      {
        ab_hold_event e;
        std::memcpy(&e, data, sizeof e);
        on_connect(e);
      }
      return;
    case AB_EV_ACCEPT:
    case AB_EV_CLOSE:
      if (size < sizeof(ab_sock_event)) break;
      return;  // channels between agents: used by the loop detectors
    case AB_EV_OPAQUE:
      if (size < sizeof(ab_opaque_event)) break;
      {
        ab_opaque_event e;
        std::memcpy(&e, data, sizeof e);
        on_opaque_event(e);
      }
      return;
    case AB_EV_DNS:
      if (size < sizeof(ab_dns_event)) break;
      {
        ab_dns_event e;
        std::memcpy(&e, data, sizeof e);
        on_dns(e);
      }
      return;
    case AB_EV_TLS_DATA:
    case AB_EV_TLS_GAP:
    case AB_EV_SSL_NEW:
    case AB_EV_SSL_FREE:
      streams_->on_record(data, size);
      if (h.type == AB_EV_TLS_DATA && size >= sizeof(ab_tls_event)) note_tls_bytes(data);  // attach health
      return;
    default:
      break;
  }
  stats_["malformed_records"]++;
}

void Daemon::on_proc_event(const ab_proc_event& e) {
  const uint32_t pid = e.hdr.pid;
  std::string comm(e.comm, strnlen(e.comm, sizeof e.comm));
  switch (e.hdr.type) {
    case AB_EV_FORK:
      procs_.on_fork(static_cast<int>(e.ppid), static_cast<int>(pid), e.start_time_ns);
      if (loops_enabled() && policy_->loops.fan_out.enabled) loops_.on_spawn(loop_info(pid), static_cast<int64_t>(e.hdr.ts_ns));
      break;
    case AB_EV_EXEC: {
      std::string exe;
      char buf[4096];
      ssize_t n = readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
      if (n > 0) exe.assign(buf, static_cast<size_t>(n));
      else exe.assign(e.filename, strnlen(e.filename, sizeof e.filename));
      std::string cg;
      if (cgroups_) {
        if (auto p = cgroups_->path_for_id(e.hdr.cgroup_id)) cg = *p;
      }
      procs_.on_exec(static_cast<int>(pid), comm, exe, e.uid, e.hdr.cgroup_id, cg, e.start_time_ns,
                     static_cast<int>(e.ppid));
      // A new image: its TLS library may differ; the kernel judges it afresh at its next connect.
      auto it = watched_.find(pid);
      if (it != watched_.end()) {
        streams_->on_process_exit(pid, e.hdr.ts_ns);
        if (it->second.attached || it->second.attaching) worker_->request_detach(static_cast<int>(pid));
        watched_.erase(it);
      }
      // Per-process rule matches (exe, comm, uid) for the new image.
      if (selected_as_process(selecting_rules(), {cg, "", exe, comm, e.uid}) && matched_pids_.insert(pid).second) {
        uint32_t one = 1;
        bpf_map_update_elem(rt_->matched_pids_fd(), &pid, &one, BPF_ANY);
      }
      break;
    }
    case AB_EV_EXIT: {
      streams_->on_process_exit(pid, e.hdr.ts_ns);
      process_exchanges();  // attribute the cut-off calls while the process is still known
      auto it = watched_.find(pid);
      if (it != watched_.end()) {
        if (it->second.attached || it->second.attaching) worker_->request_detach(static_cast<int>(pid));
        watched_.erase(it);
      }
      if (matched_pids_.erase(pid)) bpf_map_delete_elem(rt_->matched_pids_fd(), &pid);
      brake_forget(pid);  // its holds end (a frozen cgroup is thawed), its reservations go
      if (freezer_) freezer_->release(pid);
      opaque_on_exit(pid);
      loops_.on_exit(pid);
      storm_until_.erase(pid);
      for (auto it = call_ids_.lower_bound({pid, 0}); it != call_ids_.end() && it->first.first == pid;)
        it = call_ids_.erase(it);
      for (auto& [root, a] : agents_) a.pids.erase(pid);
      procs_.on_exit(static_cast<int>(pid), e.start_time_ns);
      break;
    }
  }
}

void Daemon::on_connect(const ab_hold_event& e) {
  const uint32_t pid = e.hdr.pid;
  if (e.hdr.type == AB_EV_HOLD && e.reason == AB_HOLD_BUDGET) {
    // Decide on everything the ring carried before this hold: a response of the held process
    // that ended just before it (same consume batch) is still counted in flight otherwise, and
    // its place would be taken twice (CI: another tree of 3 held under max_concurrent 4).
    process_exchanges();
    on_budget_hold(e);
    return;
  }
  ab_endpoint_key k{};
  k.family = e.sock.family;
  k.port = e.sock.port;
  std::memcpy(k.addr, e.sock.addr, sizeof k.addr);
  auto& w = watched_[pid];
  if (!w.start_ns) w.start_ns = e.start_time_ns;
  if (const auto* info = endpoints_.find(k)) {
    w.endpoint_host = info->host;
    w.endpoint_api = info->api;
    if (w.opaque) opaque_track_socket(pid, e.sock.fd);  // no-op unless it connected mid-verdict
    else if (!w.opaque && w.endpoint_fds.size() < 8 && e.sock.fd >= 0) w.endpoint_fds.push_back(e.sock.fd);
  }
  if (w.opaque) return;  // judged: counted at the socket, never held or rescanned again
  if (e.sock.flags & AB_SOCK_OPAQUE) {  // its executable is known opaque: not scanned
    if (e.hdr.type == AB_EV_HOLD) {
      // held by the kernel until gated (not scanned): gated now, which lets it go
      stats_["opaque_gate_holds"]++;
      report_capture_hold(e, gate::HoldReport::Taken::Stopped);
    }
    opaque_from_kernel(pid);
    return;
  }
  if (procs_.find(static_cast<int>(pid)) == nullptr) {
    if (auto pi = process::read_proc(static_cast<int>(pid))) procs_.upsert(*pi);
  }
  // Held until its probes are attached: stopped by the kernel (AB_SOCK_HELD), or, for a
  // terminal's foreground job (its shell would notice a stop), its cgroup frozen when safe.
  const bool stopped = e.hdr.type == AB_EV_HOLD;
  const bool foreground = (e.sock.flags & AB_SOCK_FOREGROUND) && !w.attached && !w.attaching;
  if (stopped) stats_["capture_holds"]++;
  if (stopped || foreground)
    report_capture_hold(e, stopped ? gate::HoldReport::Taken::Stopped : gate::HoldReport::Taken::Foreground);
  if (!w.attached && !w.attaching) request_attach(pid, e.hdr.type == AB_EV_HOLD ? "first connect (held)" : "first connect");
}

void Daemon::report_capture_hold(const ab_hold_event& e, gate::HoldReport::Taken taken) {
  if (!gate_) return;
  gate::HoldReport r;
  r.pid = e.hdr.pid;
  r.start_time = e.start_time_ns;
  r.capture = true;
  r.taken = taken;
  r.at_ns = static_cast<int64_t>(e.hdr.ts_ns);
  apply_gate(gate_->hold_reported(r, clock_ns(CLOCK_MONOTONIC)));
}

void Daemon::on_dns(const ab_dns_event& e) {
  std::string name(e.name, strnlen(e.name, sizeof e.name));
  std::vector<ab_endpoint_key> addrs;
  for (uint32_t i = 0; i < e.naddrs && i < AB_DNS_MAX_ADDRS; i++) {
    ab_endpoint_key k{};
    k.family = e.family[i];
    std::memcpy(k.addr, e.addr[i], 16);
    addrs.push_back(k);
  }
  auto added = endpoints_.on_dns(name, addrs);
  if (!added.empty()) {
    spdlog::debug("learned {} address(es) of {} from DNS", added.size(), name);
    sync_endpoints_map();
  }
}

void Daemon::on_resolved() {
  if (!resolver_) return;
  std::vector<ab_endpoint_key> added;
  for (const auto& r : resolver_->take_results()) {
    if (!r.error.empty()) {
      stats_["endpoint_names_unresolved"]++;
      spdlog::warn("endpoint not resolved now (learned from DNS later): {}", r.error);
      continue;
    }
    auto keys = endpoints_.on_resolved(r.name, r.addrs);
    spdlog::info("endpoint {} resolved: {} address(es), {} new", r.name, r.addrs.size(), keys.size());
    added.insert(added.end(), keys.begin(), keys.end());
  }
  if (added.empty()) return;
  sync_endpoints_map();
  scan_existing(&added);  // processes that connected before their addresses were known
}

void Daemon::request_attach(uint32_t pid, const char* why) {
  auto& w = watched_[pid];
  if (w.attaching || w.attached) return;
  w.attaching = true;
  spdlog::debug("attach pid {}: {}", pid, why);
  worker_->request_attach(static_cast<int>(pid));
}

void Daemon::set_watch(uint32_t pid, uint32_t state) {
  ab_watch_value v{};
  v.state = state;
  v.since_ns = static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC));
  bpf_map_update_elem(rt_->watch_fd(), &pid, &v, BPF_ANY);
}

void Daemon::release_kernel_capture_hold(uint32_t pid) {
  if (effects_) effects_->apply(gate::Release{pid, 0, gate::HoldReason::Capture, gate::HoldVia::Stop});
}

void Daemon::on_attach_done() {
  for (auto& r : worker_->take_completed()) {
    const uint32_t pid = static_cast<uint32_t>(r.pid);
    auto it = watched_.find(pid);
    if (it == watched_.end()) {
      // The process exited or exec'd while we attached: undo.
      if (r.err == 0) worker_->request_detach(r.pid);
      if (gate_) apply_gate(gate_->attach_failed(pid, clock_ns(CLOCK_MONOTONIC)));
      release_kernel_capture_hold(pid);
      continue;
    }
    auto& w = it->second;
    w.attaching = false;
    const Attribution who = attribute(pid);
    if (r.err == 0) {
      w.attached = true;
      w.objects = r.objects;
      set_watch(pid, AB_WATCH_ATTACHED);
      stats_["attaches"]++;
      spdlog::info("probes attached to pid {} ({}) in {:.1f} ms: {} ({})", pid, who.comm, r.duration_ms,
                   fmt::join(r.objects, ", "), fmt::join(r.stacks, ", "));
      record_event("probe_attached", pid, who.cgroup, who.comm,
                   {{"pid", pid}, {"object", fmt::format("{}", fmt::join(r.objects, ","))},
                    {"duration_ms", r.duration_ms}, {"tls", fmt::format("{}", fmt::join(r.stacks, ","))}});
      // its gate is written before its capture hold lets its first request start go
      if (gate_) apply_gate(gate_->process_attached(gate_info(pid), clock_ns(CLOCK_MONOTONIC)));
      scan_channels();  // its pipes and loopback peers, before its first turn
    } else if (r.err == -ENOENT && judge_unreadable(pid, r.blind.empty() ? r.error : r.blind)) {
      stats_["processes_without_openssl"]++;  // opaque: capture_blind recorded, counted at the socket
    } else {
      set_watch(pid, AB_WATCH_IGNORED);
      if (r.err == -ENOENT) {
        stats_["processes_without_openssl"]++;
        if (!r.blind.empty()) {  // a TLS library it could not read: say so, once (one attach per process)
          stats_["capture_blind"]++;
          spdlog::warn("pid {} ({}) capture blind: {}", pid, who.comm, r.blind);
          record_event("capture_blind", pid, who.cgroup, who.comm,
                       {{"pid", pid}, {"exe", who.exe}, {"why", r.blind}});
        } else {
          spdlog::info("pid {} ({}) maps no TLS library agentbrake reads ({}): not watched", pid, who.comm, r.error);
        }
      } else {
        stats_["attach_failures"]++;
        if (r.err == -ETIMEDOUT) stats_["attach_deadline_exceeded"]++;
        spdlog::warn("attaching to pid {} ({}) failed: {}", pid, who.comm, r.error);
        record_event("probe_failed", pid, who.cgroup, who.comm, {{"pid", pid}, {"error", r.error}});
      }
    }
    if (r.err != 0 && gate_) apply_gate(gate_->attach_failed(pid, clock_ns(CLOCK_MONOTONIC)));
    release_kernel_capture_hold(pid);  // one whose ring event was lost (watch map recovery)
  }
}

Attribution Daemon::attribute(uint32_t pid) {
  Attribution a;
  a.pid = pid;
  const auto* e = procs_.find(static_cast<int>(pid));
  if (!e) {
    if (auto pi = process::read_proc(static_cast<int>(pid))) {
      procs_.upsert(*pi);
      e = procs_.find(static_cast<int>(pid));
    }
  }
  if (e) {
    a.comm = e->comm;
    a.exe = e->exe;
    a.cgroup = e->cgroup;
    a.cgroup_id = e->cgroup_id;
    a.uid = e->uid;
    a.tree_root_pid = static_cast<uint32_t>(procs_.tree_root(static_cast<int>(pid)));
  }
  if (!a.tree_root_pid) a.tree_root_pid = pid;
  return a;
}

void Daemon::process_exchanges() {
  for (const auto& r : streams_->take_requests()) {
    // counted in flight first, so the credits dealt on seeing it leave its place taken
    if (r.request.is_llm) {
      const uint64_t id = next_call_id_++;
      call_ids_[{r.pid, r.ssl}].push_back(id);
      loops_on_request(r, id);
    }
    on_request_seen(r);
  }
  for (auto& c : streams_->take_exchanges()) {
    if (auto w = watched_.find(c.pid); w != watched_.end()) w->second.exchanges++;
    if (!c.exchange.is_llm) {
      confirm_endpoint(c.pid, c.exchange);
      continue;
    }
    const auto& ex = c.exchange;
    const uint64_t end = ex.response_end_ns ? ex.response_end_ns : (ex.request_end_ns ? ex.request_end_ns : ex.request_start_ns);
    record_call(std::move(c.exchange.call), c.pid, c.ssl, ex.request_start_ns, end, ex.response_end_ns);
  }
}

// One LLM call, read from the wire or estimated at the socket (opaque.cpp): accounted,
// stored, settled against its reservation, fed to pacing and the loop detectors.
void Daemon::record_call(LlmCall call, uint32_t pid, uint64_t ssl, uint64_t start_mono, uint64_t end_mono,
                         uint64_t response_end_mono, const Attribution* who) {
  {
    const uint32_t cpid = pid;
    if (auto w = watched_.find(cpid); w != watched_.end()) w->second.llm_calls++;
    call.who = who ? *who : attribute(cpid);
    call.start_unix_ns = mono_to_unix(start_mono);
    call.end_unix_ns = mono_to_unix(end_mono);
    call.latency_ms = response_end_mono > start_mono ? double(response_end_mono - start_mono) / 1e6 : 0;
    accounting::price_call(call, prices_);
    if (!call.price_known) stats_["unpriced_calls"]++;
    if (call.estimated) stats_["estimated_calls"]++;
    if (!call.complete) stats_["incomplete_calls"]++;
    if (call.usage_malformed) stats_["malformed_usage"]++;
    stats_["calls"]++;
    const int64_t now = clock_ns(CLOCK_MONOTONIC);
    live_.record(call, now);
    auto& ag = agents_[call.who.tree_root_pid];
    ag.root = call.who.tree_root_pid;
    ag.cgroup = call.who.cgroup;
    if (const auto* root = procs_.find(static_cast<int>(ag.root))) ag.comm = root->comm;
    if (ag.comm.empty()) ag.comm = call.who.comm;
    ag.provider = call.provider;
    if (!call.model.empty()) ag.model = call.model;
    ag.pids.insert(call.who.pid);
    ag.calls++;
    ag.input += call.input_tokens;
    ag.output += call.output_tokens;
    ag.cost += call.cost_usd;
    ag.last_unix_ns = call.end_unix_ns;
    spdlog::debug("llm call pid {} {} {} {} status {} in {} out {} ${:.6f}{}", call.who.pid, call.provider,
                  call.model, call.path, call.status, call.input_tokens, call.output_tokens, call.cost_usd,
                  call.complete ? "" : " (cut off)");
    store_->add_call(call);
    settle_call(call, cpid, ssl);
    pace_on_response(call, cpid);
    project_spend(call, cpid);
    uint64_t call_id = 0;
    if (auto it = call_ids_.find({cpid, ssl}); it != call_ids_.end()) {
      call_id = it->second.front();
      it->second.pop_front();
      if (it->second.empty()) call_ids_.erase(it);
    }
    loops_on_response(call, cpid, call_id, start_mono, response_end_mono ? response_end_mono : static_cast<uint64_t>(now));
  }
}

// A process watched because it connected to an endpoint's address is confirmed by the Host
// it talks to: an address shared with other sites (a CDN) brings processes that never call
// an LLM. After two exchanges with another Host and no LLM call, its probes are detached.
void Daemon::confirm_endpoint(uint32_t pid, const protocol::Exchange& ex) {
  auto it = watched_.find(pid);
  if (it == watched_.end() || !it->second.attached || it->second.llm_calls > 0) return;
  Watched& w = it->second;
  ab_endpoint_key literal;
  if (w.endpoint_host.empty() || endpoint_key_for(w.endpoint_host, 0, &literal) || w.endpoint_host == "localhost")
    return;  // watched by address or by a budget: nothing to confirm by name
  std::string host = protocol::normalize_host(ex.call.host);
  if (auto colon = host.rfind(':'); colon != std::string::npos && host.find(']') == std::string::npos)
    host.resize(colon);
  if (host.empty() || host == w.endpoint_host) return;
  if (++w.host_mismatches < 2 || matched_pids_.count(pid)) return;
  stats_["detached_host_mismatch"]++;
  spdlog::info("pid {}: talks to {} not {} — probes detached", pid, host, w.endpoint_host);
  worker_->request_detach(static_cast<int>(pid));
  w.attached = false;
  set_watch(pid, AB_WATCH_IGNORED);
  if (gate_) apply_gate(gate_->process_detached(pid, clock_ns(CLOCK_MONOTONIC)));
}

void Daemon::on_tick() {
  tick_++;
  sweep_watch_map();
  brake_tick();
  opaque_tick();
  if (tracer_) tracer_->poll();  // reaps held threads that were killed; finishes releases
  if (tick_ % 5 == 0) sweep_stale_holds();
  if (tick_ % 20 == 0) refresh_matches();  // new cgroups get their budgets within ~2 s
  if (tick_ % 10 == 0) publish_metrics();
  if (tick_ % 10 == 5) scan_channels();
  if (tick_ % 600 == 0) {
    live_.expire(clock_ns(CLOCK_MONOTONIC), int64_t(3600) * 1'000'000'000);
    // agent trees with no live member and no call for a day leave `agents` (the store keeps them)
    const int64_t day_ago = clock_ns(CLOCK_REALTIME) - int64_t(24) * 3600 * 1'000'000'000;
    std::erase_if(agents_, [&](const auto& a) { return a.second.pids.empty() && a.second.last_unix_ns < day_ago; });
  }
  if (watchdog_usec_ && tick_ % std::max<uint64_t>(1, watchdog_usec_ / 2000 / kTickMs) == 0)
    sd_notify(0, "WATCHDOG=1");
}

// A connect event lost to a full ring buffer must not leave a process held or unwatched: the
// watch map is the kernel's own record of who asked for probes.
void Daemon::sweep_watch_map() {
  uint32_t key = 0, next = 0;
  const void* prev = nullptr;
  int guard = 0;
  while (bpf_map_get_next_key(rt_->watch_fd(), prev, &next) == 0 && guard++ < 100000) {
    key = next;
    prev = &key;
    ab_watch_value v{};
    if (bpf_map_lookup_elem(rt_->watch_fd(), &key, &v) != 0) continue;
    if (v.state != AB_WATCH_PENDING) continue;
    auto it = watched_.find(key);
    if (it == watched_.end() || (!it->second.attaching && !it->second.attached)) {
      stats_["connects_recovered_from_map"]++;
      request_attach(key, "pending in the watch map");
    }
  }
}

void Daemon::sweep_stale_holds() {
  const uint64_t now = static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC));
  if (freezer_) {
    if (size_t n = freezer_->sweep(now, kStaleCaptureHoldNs)) {
      stats_["stale_capture_freezes_thawed"] += n;
      spdlog::warn("{} capture freeze(s) outlived {} s: thawed", n, kStaleCaptureHoldNs / 1'000'000'000);
    }
  }
  uint32_t key = 0, next = 0;
  const void* prev = nullptr;
  std::vector<uint32_t> stale;
  while (bpf_map_get_next_key(rt_->holds_fd(), prev, &next) == 0) {
    key = next;
    prev = &key;
    ab_hold_value hv{};
    if (bpf_map_lookup_elem(rt_->holds_fd(), &key, &hv) != 0) continue;
    if (hv.reason == AB_HOLD_CAPTURE && now > hv.since_ns && now - hv.since_ns > kStaleCaptureHoldNs)
      stale.push_back(key);
  }
  for (uint32_t pid : stale) {  // records the gate does not know of (it bounds its own)
    stats_["stale_capture_holds_released"]++;
    spdlog::warn("capture hold of pid {} outlived {} s: released", pid, kStaleCaptureHoldNs / 1'000'000'000);
    release_kernel_capture_hold(pid);
  }
}

void Daemon::on_signal() {
  signalfd_siginfo si;
  while (read(sigfd_, &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGHUP) {
      try {
        reload_policy("SIGHUP");
      } catch (const std::exception&) {
        // logged and recorded as policy_rejected; the old policy stays in force
      }
    } else {
      spdlog::info("signal {}: stopping", strsignal(static_cast<int>(si.ssi_signo)));
      stop_ = true;
    }
  }
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

void Daemon::record_event(const std::string& kind, uint32_t pid, const std::string& cgroup,
                          const std::string& comm, json detail) {
  if (!store_) return;
  store::Event e;
  e.kind = kind;
  e.pid = pid;
  e.cgroup = cgroup;
  e.comm = comm;
  e.detail = std::move(detail);
  store_->add_event(e);
  on_event_recorded(e);
}

void Daemon::shutdown() {
  if (rt_) release_all_brakes();  // every hold let go and recorded, every deny lifted, every gate gone
  if (freezer_) freezer_->release_all();
  if (rt_) {
    std::vector<int> released;
    int n = loader::release_pinned_holds(pin_dir_, &released);
    if (n > 0) spdlog::info("released {} hold(s) on the way out", n);
    // Nothing is held any more: the pin is not needed after a clean stop.
    unlink((pin_dir_ + "/holds").c_str());
    if (opts_.state_dir) rmdir(pin_dir_.c_str());
  }
  for (auto& [target, p] : paused_) {
    if (p.cgroup) (void)process::cgroup_freeze(cg_mount_, p.target, false);
    else process::signal_same_process(std::stoi(p.target), p.start_ns, SIGCONT);
    record_event("resumed", p.cgroup ? 0 : static_cast<uint32_t>(std::stoul(p.target)), p.cgroup ? p.target : "", "",
                 {{"target", p.target}, {"reason", "release_all"}, {"dry_run", false}, {"hold_reason", "manual"},
                  {"held_ms", double((clock_ns(CLOCK_MONOTONIC) - p.since_mono_ns) / 1000) / 1000.0},
                  {"released", "daemon stopping"}});
  }
  paused_.clear();
  save_manual_pauses();
  server_.reset();  // no more commands
  resolver_.reset();  // a look-up in progress is let go (see resolver.h)
  stop_pruner();
  metrics_.reset();
  if (alerts_) {
    on_alert_results();
    alerts_.reset();
  }
  if (streams_) {
    const uint64_t now = static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC));
    for (auto& [pid, w] : watched_) streams_->on_process_exit(pid, now);
  }
  if (store_) store_->flush();  // before the slow part: detaching can take a while
  worker_.reset();  // detaches every per-process link
  if (ring_) {
    ring_buffer__free(ring_);
    ring_ = nullptr;
  }
  rt_.reset();
  if (store_) {
    store_->flush();
    store_.reset();
  }
  for (int* fd : {&epfd_, &sigfd_, &timerfd_})
    if (*fd >= 0) {
      close(*fd);
      *fd = -1;
    }
}

// ---------------------------------------------------------------------------------------------
// control commands

void Daemon::register_commands() {
  using control::Access;
  server_->add_command("status", Access::ReadOnly, [this](const json&, const control::Peer&) { return cmd_status(); });
  server_->add_command("agents", Access::ReadOnly, [this](const json&, const control::Peer&) { return cmd_agents(); });
  server_->add_command("policy_show", Access::ReadOnly, [this](const json&, const control::Peer&) {
    json j = policy::to_json(*policy_);
    // A webhook URL's path is its secret: shown as scheme://host[:port] only.
    if (j.contains("alerts") && j["alerts"].is_array())
      for (auto& a : j["alerts"])
        if (a.contains("webhook") && a["webhook"].is_string())
          a["webhook"] = util::redact_webhook_url(a["webhook"].get<std::string>());
    return j;
  });
  server_->add_command("policy_reload", Access::Mutating, [this](const json&, const control::Peer&) {
    reload_policy("policy reload");
    return json{{"source", policy_->source}, {"digest", policy_->digest}};
  });
  for (std::string what : {"pause", "resume", "kill"})
    server_->add_command(what, Access::Mutating,
                         [this, what](const json& args, const control::Peer&) { return cmd_brake(what, args); });
}

json Daemon::cmd_status() {
  json counters = json::object();
  auto k = rt_->read_counters();
  for (int i = 0; i < AB_CNT_MAX; i++) counters[counter_name(i)] = k[i];
  const auto& ss = streams_->stats();
  counters["tls_records"] = ss.records;
  counters["capture_gaps"] = ss.gaps;
  counters["capture_gap_bytes"] = ss.lost_bytes;
  counters["malformed_tls_records"] = ss.malformed;
  counters["unparsed_http_errors"] = ss.parse_errors;
  counters["unparsed_bytes"] = ss.unparsed_bytes;
  counters["streams_evicted"] = ss.streams_evicted;
  counters["header_budget_drops"] = streams_->header_budget().refused();
  counters["h2_connections"] = ss.h2_connections;
  counters["h2_streams"] = ss.h2_streams;
  counters["h2_hpack_desync"] = ss.h2_hpack_desync;
  counters["h2_protocol_errors"] = ss.h2_protocol_errors;
  counters["eventstream_frames"] = ss.eventstream_frames;
  counters["eventstream_bad_frames"] = ss.eventstream_bad_frames;
  if (cgroups_) counters["cgroup_rescans_deferred"] = cgroups_->stats().rescans_deferred;
  counters["store_dropped_writes"] = store_->dropped();
  counters["store_write_errors"] = store_->write_errors();
  if (alerts_) {
    auto ac = alerts_->counters();
    counters["alerts_dropped"] = ac.dropped;
    counters["alerts_failed"] = ac.failed;
    counters["alerts_suppressed"] = ac.suppressed;
    counters["alerts_sent"] = ac.sent;
  }
  for (const auto& [name, v] : stats_) counters[name] = v;
  if (gate_)
    for (size_t i = 0; i < gate::kCounters; i++)
      if (uint64_t v = gate_->counters()[i]) counters[std::string(gate::to_string(gate::Counter(i)))] = v;
  if (effects_)
    for (size_t i = 0; i < kKernelCounters; i++)
      if (uint64_t v = effects_->counters()[i]) counters[std::string(to_string(KernelCounter(i)))] = v;
  if (tracer_)
    for (const auto& [name, v] : tracer_->named_counters())
      if (v) counters[name] = v;
  size_t attached = 0;
  for (const auto& [pid, w] : watched_) attached += w.attached ? 1 : 0;
  uint32_t key = 0, next = 0;
  const void* prev = nullptr;
  size_t held = 0;
  while (bpf_map_get_next_key(rt_->holds_fd(), prev, &next) == 0) {
    key = next;
    prev = &key;
    held++;
  }
  return json{
      {"version", opts_.version},
      {"uptime_s", double(clock_ns(CLOCK_MONOTONIC) - started_mono_) / 1e9},
      {"policy", {{"source", policy_->source}, {"digest", policy_->digest},
                  {"mode", opts_.dry_run ? "observe" : std::string(policy::to_string(policy_->mode))},
                  {"budgets", policy_->budgets.size()}, {"endpoints", policy_->endpoints.size()}}},
      {"probes_attached", rt_->host_links() + worker_->attached_links()},
      {"host_probes", rt_->host_links()},
      {"tls_probes", worker_->attached_links()},
      {"watched_processes", attached},
      {"held", held + paused_.size() + (budget_freezer_ ? budget_freezer_->frozen() : 0)},
      {"denied", gate_ ? gate_->denied().size() : 0},
      {"budget_holds_now", gate_ ? gate_->holds() : 0},
      {"deny_programs", deny_available_},
      {"uprobe_multi", rt_->uprobe_multi()},
      {"endpoints_known", endpoints_.size()},
      {"endpoints_resolving", resolver_ ? resolver_->pending() : 0},
      {"open_streams", streams_->open_streams()},
      {"header_bytes_buffered", streams_->header_budget().used()},
      {"pin_dir", pin_dir_},
      {"db", opts_.db_path},
      {"opaque", opaque_status()},
      {"counters", counters},
  };
}

json Daemon::cmd_agents() {
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  json out = json::array();
  for (auto& [root, a] : agents_) {
    // Live members of the tree that made calls; the root too while it lives.
    json pids = json::array();
    for (uint32_t p : a.pids) pids.push_back(p);
    std::string state = "ok", reason;
    for (uint32_t p : a.pids)
      if (auto h = gate_ ? gate_->hold_of(p) : std::nullopt) {
        state = "held";
        reason = std::string(gate::to_string(h->reason));  // budget, fan_out, loop, pacing
      }
    // process entities are left out: an agent (a tree) is not denied or killed by one member
    auto covers = [&](const std::string& key) {
      return key.rfind("process:", 0) != 0 && entity_covers(key, a.cgroup, root, 0);
    };
    if (gate_) {
      for (const auto& [key, by] : gate_->denied())
        if (covers(key.str())) state = "denied", reason = "budget";
      for (const auto& [key, k] : gate_->killed())
        if (covers(key.str())) state = "killed", reason = std::string(gate::to_string(k.cause));
    }
    for (const auto& [t, p] : paused_) {
      if ((p.cgroup && (a.cgroup == t || a.cgroup.rfind(t + "/", 0) == 0)) ||
          (!p.cgroup && (std::to_string(root) == t || a.pids.count(static_cast<uint32_t>(std::stoul(t)))))) {
        state = "held";
        reason = p.reason;
      }
    }
    out.push_back({{"cgroup", a.cgroup},
                   {"tree_root_pid", root},
                   {"pids", pids},
                   {"comm", a.comm},
                   {"provider", a.provider},
                   {"model", a.model},
                   {"calls", a.calls},
                   {"input_tokens", a.input},
                   {"output_tokens", a.output},
                   {"cost_usd", a.cost},
                   {"tokens_per_min", live_.tokens_per_min(accounting::EntityKey::tree(root), now)},
                   {"spend_per_min_usd", live_.spend_per_min_usd(accounting::EntityKey::tree(root), now)},
                   {"state", state},
                   {"reason", reason},
                   {"capture", a.opaque ? "opaque" : "plaintext"}});
  }
  return out;
}

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
static std::vector<std::string> release_manual_pauses(const std::string& run_dir, const std::string& cg_mount) {
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
  if (auto mount = process::find_cgroup2_mount()) {
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

int run_daemon(const DaemonOptions& opts) {
  Daemon d(opts);
  if (int rc = d.start(); rc != 0) return rc;
  return d.loop();
}

}  // namespace ab::core

// Start-up (kernel file systems, probes, the store, the control socket, the timers) and the
// orderly shut-down that lets every hold go.

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

namespace {

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

}  // namespace

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
  // Test and bench switch: a wakeup per data record (the behaviour before quiet data records).
  if (const char* v = getenv("AGENTBRAKE_TEST_WAKE_PER_RECORD"); v && *v == '1') ro.quiet_data_records = false;
  quiet_data_records_ = ro.quiet_data_records;
  if (!set_up_cgroup_scope(ro)) return 1;
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
    // Under --cgroup-scope the scope's directory stands for the mount: every relative cgroup
    // path the daemon uses (policy, resolver, freeze, kill, deny/sock_ops attach) lands inside.
    cg_mount_ = process::cgroup_abs_path(*m, opts_.cgroup_scope);
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
  fleet_watch_fd();  // 8: the fleet worker's answers (made by apply_policy before the loop)
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

}  // namespace ab::core

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

int64_t clock_ns(clockid_t c) {
  timespec ts{};
  clock_gettime(c, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------
// the loop

namespace {
constexpr int kQuietDrainMs = 4;                 // the poll period while records flow
constexpr uint32_t kIdlePollsBeforeSleep = 50;   // 200 ms without records
}  // namespace

int Daemon::loop() {
  epoll_event evs[16];
  while (!stop_) {
    // Quiet data records (RuntimeOptions::quiet_data_records): while records flow the loop
    // polls the ring every kQuietDrainMs and the TLS programs' data records wake nobody.
    int n = epoll_wait(epfd_, evs, 16, polling_ring_ ? kQuietDrainMs : 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("epoll_wait: {}", strerror(errno));
      return 1;
    }
    if (n == 0 && polling_ring_) {
      drain_ring();
      if (drain_records_ == 0 && ++idle_polls_ >= kIdlePollsBeforeSleep) {
        // Stop polling: from here records wake the loop again. One more pass reads what was
        // submitted quietly before the programs saw the flag change.
        polling_ring_ = false;
        rt_->set_daemon_polls_ring(false);
        drain_ring();
      }
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
        case 8: on_fleet_ready(); break;
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
  if (drain_records_ > 0 && quiet_data_records_) {
    idle_polls_ = 0;
    if (!polling_ring_) {
      polling_ring_ = true;
      rt_->set_daemon_polls_ring(true);
    }
  }
  if (n == kDrainCut) stats_[DaemonCounter::RingDrainPassesCut]++;
  else if (n < 0 && n != -EINTR) stats_[DaemonCounter::RingBufferConsumeErrors]++;
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
    stats_[DaemonCounter::MalformedRecords]++;
    return;
  }
  ab_event_header h;
  std::memcpy(&h, data, sizeof h);
  if (h.layout != AB_EVENT_LAYOUT_VERSION) {
    stats_[DaemonCounter::MalformedRecords]++;
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
    case AB_EV_SNI:
      if (size < offsetof(ab_sni_event, data)) break;
      {
        ab_sni_event e{};
        std::memcpy(&e, data, std::min(size, sizeof e));
        on_sni(e);
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
  stats_[DaemonCounter::MalformedRecords]++;
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
        (void)rt_->matched_pids().update(pid, 1);
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
      if (matched_pids_.erase(pid)) (void)rt_->matched_pids().erase(pid);
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
  if (procs_.find(static_cast<int>(pid)) == nullptr) {
    if (auto pi = process::read_proc(static_cast<int>(pid))) procs_.upsert(*pi);
  }
  const auto* proc = procs_.find(static_cast<int>(pid));
  // Host-wide endpoints, or one its own uid taught (the kernel flagged it by the same rule).
  const EndpointInfo* info = proc ? endpoints_.find_for(proc->uid, k) : endpoints_.find(k);
  if (info) {
    w.endpoint_host = info->host;
    w.endpoint_api = info->api;
    if (!info->tls && !w.plain_wanted) {
      w.plain_wanted = true;
      // Watched already for TLS: the plain probes are added now. This connect was not held
      // for them (docs/enforcement.md): what the process sends before they land is not seen.
      if (w.attached && !w.attaching && !w.opaque) {
        stats_[DaemonCounter::PlainAttachLate]++;
        worker_->request_attach(static_cast<int>(pid), true);
      }
    }
    if (w.opaque) opaque_track_socket(pid, e.sock.fd);  // no-op unless it connected mid-verdict
    else if (!w.opaque && w.endpoint_fds.size() < 8 && e.sock.fd >= 0) w.endpoint_fds.push_back(e.sock.fd);
  }
  if (w.opaque) return;  // judged: counted at the socket, never held or rescanned again
  if (e.sock.flags & AB_SOCK_OPAQUE) {  // its executable is known opaque: not scanned
    if (e.hdr.type == AB_EV_HOLD) {
      // held by the kernel until gated (not scanned): gated now, which lets it go
      stats_[DaemonCounter::OpaqueGateHolds]++;
      report_capture_hold(e, gate::HoldReport::Taken::Stopped);
    }
    opaque_from_kernel(pid);
    return;
  }
  // Held until its probes are attached: stopped by the kernel (AB_SOCK_HELD), or, for a
  // terminal's foreground job (its shell would notice a stop), its cgroup frozen when safe.
  const bool stopped = e.hdr.type == AB_EV_HOLD;
  const bool foreground = (e.sock.flags & AB_SOCK_FOREGROUND) && !w.attached && !w.attaching;
  if (stopped) stats_[DaemonCounter::CaptureHolds]++;
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

void Daemon::request_attach(uint32_t pid, const char* why) {
  // The kernel side reports no process outside the --cgroup-scope; one moved out since is
  // left alone here (counted: it stays 0 unless processes move between scopes).
  if (!process::cgroup_scope_is_host() && !process::pid_in_cgroup_scope(static_cast<int>(pid))) {
    stats_[DaemonCounter::AttachRefusedOutOfScope]++;
    return;
  }
  auto& w = watched_[pid];
  if (w.attaching || w.attached) return;
  w.attaching = true;
  spdlog::debug("attach pid {}: {}", pid, why);
  worker_->request_attach(static_cast<int>(pid), w.plain_wanted);
}

void Daemon::set_watch(uint32_t pid, uint32_t state) {
  ab_watch_value v{};
  v.state = state;
  v.since_ns = static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC));
  (void)rt_->watch().update(pid, v);
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
    const Attribution who = attribute(pid);
    if (r.plain_added) {  // plain-HTTP probes added to a process attached already
      w.plain = r.plain;
      if (r.plain) {
        stats_[DaemonCounter::PlainAttaches]++;
        spdlog::info("plain-HTTP probes added to pid {} ({}): {}", pid, who.comm, fmt::join(r.stacks, ", "));
      } else {
        stats_[DaemonCounter::PlainAttachFailures]++;
        spdlog::warn("pid {} ({}): plain-HTTP sockets not readable: {}", pid, who.comm,
                     r.plain_problem.empty() ? r.error : r.plain_problem);
        record_event("capture_blind", pid, who.cgroup, who.comm,
                     {{"pid", pid}, {"exe", who.exe}, {"why", "plain HTTP: " + (r.plain_problem.empty() ? r.error : r.plain_problem)}});
      }
      continue;
    }
    w.attaching = false;
    if (r.err == 0) {
      w.plain = r.plain;
      if (r.plain) stats_[DaemonCounter::PlainAttaches]++;
      if (w.plain_wanted && !r.plain) {
        stats_[DaemonCounter::PlainAttachFailures]++;
        spdlog::warn("pid {} ({}): plain-HTTP sockets not readable: {}", pid, who.comm, r.plain_problem);
        record_event("capture_blind", pid, who.cgroup, who.comm,
                     {{"pid", pid}, {"exe", who.exe}, {"why", "plain HTTP: " + r.plain_problem}});
      }
      w.attached = true;
      w.objects = r.objects;
      set_watch(pid, AB_WATCH_ATTACHED);
      stats_[DaemonCounter::Attaches]++;
      spdlog::info("probes attached to pid {} ({}) in {:.1f} ms: {} ({})", pid, who.comm, r.duration_ms,
                   fmt::join(r.objects, ", "), fmt::join(r.stacks, ", "));
      record_event("probe_attached", pid, who.cgroup, who.comm,
                   {{"pid", pid}, {"object", fmt::format("{}", fmt::join(r.objects, ","))},
                    {"duration_ms", r.duration_ms}, {"tls", fmt::format("{}", fmt::join(r.stacks, ","))}});
      // its gate is written before its capture hold lets its first request start go
      if (gate_) apply_gate(gate_->process_attached(gate_info(pid), clock_ns(CLOCK_MONOTONIC)));
      scan_channels();  // its pipes and loopback peers, before its first turn
    } else if (r.err == -ENOENT && judge_unreadable(pid, r.blind.empty() ? r.error : r.blind)) {
      stats_[DaemonCounter::ProcessesWithoutOpenssl]++;  // opaque: capture_blind recorded, counted at the socket
    } else {
      set_watch(pid, AB_WATCH_IGNORED);
      if (r.err == -ENOENT) {
        stats_[DaemonCounter::ProcessesWithoutOpenssl]++;
        if (!r.blind.empty()) {  // a TLS library it could not read: say so, once (one attach per process)
          stats_[DaemonCounter::CaptureBlind]++;
          spdlog::warn("pid {} ({}) capture blind: {}", pid, who.comm, r.blind);
          record_event("capture_blind", pid, who.cgroup, who.comm,
                       {{"pid", pid}, {"exe", who.exe}, {"why", r.blind}});
        } else {
          spdlog::info("pid {} ({}) maps no TLS library agentbrake reads ({}): not watched", pid, who.comm, r.error);
        }
      } else {
        stats_[DaemonCounter::AttachFailures]++;
        if (r.err == -ETIMEDOUT) stats_[DaemonCounter::AttachDeadlineExceeded]++;
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
    if (!call.price_known) stats_[DaemonCounter::UnpricedCalls]++;
    if (call.estimated) stats_[DaemonCounter::EstimatedCalls]++;
    if (!call.complete) stats_[DaemonCounter::IncompleteCalls]++;
    if (call.usage_malformed) stats_[DaemonCounter::MalformedUsage]++;
    stats_[DaemonCounter::Calls]++;
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
    telemetry_on_call(call);
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
  stats_[DaemonCounter::DetachedHostMismatch]++;
  spdlog::info("pid {}: talks to {} not {} — probes detached", pid, host, w.endpoint_host);
  worker_->request_detach(static_cast<int>(pid));
  w.attached = false;
  set_watch(pid, AB_WATCH_IGNORED);
  if (gate_) apply_gate(gate_->process_detached(pid, clock_ns(CLOCK_MONOTONIC)));
}

void Daemon::on_tick() {
  tick_++;
  sweep_watch_map();
  if (tick_ % 100 == 0 && !endpoints_.expire_hints(clock_ns(CLOCK_MONOTONIC)).empty()) sync_endpoints_map();
  brake_tick();
  fleet_tick();
  opaque_tick();
  if (tracer_) tracer_->poll();  // reaps held threads that were killed; finishes releases
  if (tick_ % 5 == 0) sweep_stale_holds();
  if (tick_ % 20 == 0) refresh_matches();  // new cgroups get their budgets within ~2 s
  if (tick_ % 10 == 0) publish_metrics();
  if (tick_ % 10 == 3) telemetry_tick();
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
  const auto watch = rt_->watch();
  for (uint32_t key : watch.keys(100000)) {
    auto v = watch.lookup(key);
    if (!v || v->state != AB_WATCH_PENDING) continue;
    auto it = watched_.find(key);
    if (it == watched_.end() || (!it->second.attaching && !it->second.attached)) {
      stats_[DaemonCounter::ConnectsRecoveredFromMap]++;
      request_attach(key, "pending in the watch map");
    }
  }
}

void Daemon::sweep_stale_holds() {
  const uint64_t now = static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC));
  if (freezer_) {
    if (size_t n = freezer_->sweep(now, kStaleCaptureHoldNs)) {
      stats_[DaemonCounter::StaleCaptureFreezesThawed] += n;
      spdlog::warn("{} capture freeze(s) outlived {} s: thawed", n, kStaleCaptureHoldNs / 1'000'000'000);
    }
  }
  std::vector<uint32_t> stale;
  const auto holds = rt_->holds();
  for (uint32_t key : holds.keys()) {
    auto hv = holds.lookup(key);
    if (hv && hv->reason == AB_HOLD_CAPTURE && now > hv->since_ns && now - hv->since_ns > kStaleCaptureHoldNs)
      stale.push_back(key);
  }
  for (uint32_t pid : stale) {  // records the gate does not know of (it bounds its own)
    stats_[DaemonCounter::StaleCaptureHoldsReleased]++;
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

int run_daemon(const DaemonOptions& opts) {
  Daemon d(opts);
  if (int rc = d.start(); rc != 0) return rc;
  return d.loop();
}

}  // namespace ab::core

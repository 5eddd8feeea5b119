// The read-only control commands (status, agents, policy show) and the mutating ones' wiring.

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

std::string kernel_counter_name(int i) {
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
    case AB_CNT_SNI_REPORTS: return "sni_first_writes";
    default: return "counter_" + std::to_string(i);
  }
}

}  // namespace

void Daemon::register_commands() {
  using control::Access;
  server_->add_command("status", Access::ReadOnly, [this](const json&, const control::Peer&) { return cmd_status(); });
  server_->add_command("agents", Access::ReadOnly, [this](const json&, const control::Peer&) { return cmd_agents(); });
  server_->add_command("fleet_status", Access::ReadOnly,
                       [this](const json&, const control::Peer&) { return cmd_fleet_status(); });
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
  for (int i = 0; i < AB_CNT_MAX; i++) counters[kernel_counter_name(i)] = k[i];
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
  add_telemetry_counters(counters);
  stats_.for_each([&counters](std::string_view name, uint64_t v) { counters[std::string(name)] = v; });
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
  const size_t held = rt_->holds().keys().size();
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
      {"endpoint_hints", endpoints_.hints()},
      {"endpoints_resolving", resolver_ ? resolver_->pending() : 0},
      {"open_streams", streams_->open_streams()},
      {"header_bytes_buffered", streams_->header_budget().used()},
      {"pin_dir", pin_dir_},
      {"db", opts_.db_path},
      {"cgroup_scope", opts_.cgroup_scope},  // "/": the whole host; else cgroups are relative to it
      {"opaque", opaque_status()},
      {"fleet", fleet_summary()},
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

}  // namespace ab::core

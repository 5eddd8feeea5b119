// metrics.h — Prometheus /metrics: a snapshot the daemon publishes, its rendering in the text
// exposition format (version 0.0.4), and a small HTTP server (cpp-httplib) on its own thread.
//
// The daemon's event loop builds a MetricsSnapshot every second or so and publish()es it; a
// scrape renders the latest snapshot. The loop never waits for a scrape.
//
// Metric families (all prefixed agentbrake_; counters end in _total):
//   agentbrake_llm_calls_total{cgroup}          counter  completed LLM calls
//   agentbrake_input_tokens_total{cgroup}       counter  billed input tokens (cache included)
//   agentbrake_output_tokens_total{cgroup}      counter  output tokens (reasoning included)
//   agentbrake_cost_usd_total{cgroup}           counter  spend in USD
//   agentbrake_holds_total{cgroup,reason}       counter  every hold taken, by reason (budget, fan_out,
//                                                        loop, pacing, capture, manual)
//   agentbrake_denials_total{cgroup}            counter  deny actions
//   agentbrake_kills_total{cgroup}              counter  kill actions
//   agentbrake_held_processes{cgroup}           gauge    processes held right now
//   agentbrake_loop_detections_total{detector}  counter  loop detector firings
//   agentbrake_losses_total{counter}            counter  loss counters only (ring_buffer_lost,
//                                                        tls_truncated_calls, capture_gaps, unparsed_*,
//                                                        alerts_dropped, ...: is_loss_counter)
//   agentbrake_activity_total{counter}          counter  the daemon's other counters, normal work
//                                                        (tls_records, calls, attaches, holds_taken, ...)
//   agentbrake_alerts_total{outcome}            counter  sent, failed, suppressed, dropped
//   agentbrake_probes_attached                  gauge
//   agentbrake_watched_processes                gauge
//   agentbrake_uptime_seconds                   gauge
//   agentbrake_info{version,policy_digest}      gauge    always 1
// By provider and model (bounded labels: alerts/call_metrics.h, at most 16 providers × 16
// models each, later ones "other"):
//   agentbrake_model_calls_total{provider,model}         counter  completed LLM calls
//   agentbrake_model_errors_total{provider,model}        counter  calls with HTTP status >= 400 or no response
//   agentbrake_model_tokens_total{provider,model,type}   counter  type: input, output, cache_read, cache_write
//   agentbrake_model_cost_usd_total{provider,model}      counter  spend in USD
//   agentbrake_call_duration_seconds{provider,model}     histogram request start → response end
//   agentbrake_model_labels_folded_total                 counter  calls counted under an "other" label
// Budgets (at most max_budget_series buckets × limits, the fullest first):
//   agentbrake_budget_level{budget,bucket,kind,window}   gauge    use in the window now
//   agentbrake_budget_limit{budget,bucket,kind,window}   gauge    the limit (kind: tokens, spend_usd,
//                                                                 requests, inflight)
// Counters are totals since the daemon started (a restart resets them, as Prometheus expects).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "alerts/call_metrics.h"

namespace httplib {
class Server;
}

namespace ab::alerts {

struct CgroupMetrics {
  uint64_t calls = 0;
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  double cost_usd = 0;
  std::map<std::string, uint64_t> holds;  // by reason (a bounded set: budget, loop, ..., manual)
  uint64_t denials = 0;
  uint64_t kills = 0;
  uint64_t held_now = 0;
};

// One limit of one budget bucket, against its level now.
struct BudgetGauge {
  std::string budget, bucket;
  std::string kind;    // tokens, spend_usd, requests, inflight
  std::string window;  // "1m", "10s"; "" for inflight
  double level = 0;
  double limit = 0;
};

struct MetricsSnapshot {
  std::map<std::string, CgroupMetrics> cgroups;       // by cgroup path
  std::map<std::string, uint64_t> detector_firings;   // ping_pong, repetition, fan_out, retry_storm
  std::map<std::string, uint64_t> losses;             // loss counter name → count (is_loss_counter)
  std::map<std::string, uint64_t> activity;           // every other daemon counter → count
  std::map<std::string, uint64_t> alerts;             // outcome (sent, failed, suppressed, dropped) → count
  uint64_t probes_attached = 0;
  uint64_t watched_processes = 0;
  double uptime_s = 0;
  std::string version;
  std::string policy_digest;
  // At most this many cgroups get a `cgroup` label of their own (the busiest: by spend, then
  // calls, then name); the others are summed into `cgroup="_other"` and counted by the
  // agentbrake_metrics_cgroups_folded gauge, so a host with 100k short-lived cgroups cannot
  // blow up a Prometheus server.
  size_t max_cgroup_labels = 500;

  std::map<std::pair<std::string, std::string>, ModelAggregate> models;  // (provider, model), bounded
  uint64_t model_labels_folded = 0;
  std::vector<BudgetGauge> budgets;
  // At most this many budget gauges (bucket × limit) are exported: those nearest their limit
  // (level / limit, then name), so a per-process budget over 10k processes stays bounded.
  size_t max_budget_series = 500;
};

// Whether a counter of `status --json` `counters` counts something lost: an event, bytes or a
// call the daemon could not see or keep, a hold it could not take or had to cut short, an
// alert it could not deliver. Those go to agentbrake_losses_total (the shipped
// AgentbrakeCaptureLoss rule fires when one grows); every other counter is normal work and
// goes to agentbrake_activity_total. A new loss counter must be added to the list here.
bool is_loss_counter(std::string_view name);

// Label value escaping of the text format: backslash, double quote and newline; bytes that are
// not valid UTF-8 (the format requires it; a cgroup name need not be) become U+FFFD.
std::string escape_label_value(const std::string& v);

// The snapshot in the Prometheus text exposition format, version 0.0.4: every family with
// its # HELP and # TYPE lines (also when it has no samples), samples sorted by label.
std::string render_prometheus(const MetricsSnapshot& snapshot);

inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// GET /metrics on host:port. Other paths answer 404 (and / a pointer to /metrics).
// Thread-safe: publish() from any thread while the server runs.
class MetricsServer {
 public:
  MetricsServer();
  ~MetricsServer();  // stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds host:port (port 0: any free port) and serves on a thread. false + `error` when
  // the address cannot be bound or the server already runs. host may be an IPv6 literal
  // without brackets ("::1").
  bool start(const std::string& host, uint16_t port, std::string* error = nullptr);
  // Stops serving and joins the thread. Safe to call when not started.
  void stop();
  bool running() const;
  uint16_t bound_port() const { return bound_port_; }

  void publish(MetricsSnapshot snapshot);
  uint64_t scrapes() const;

 private:
  std::shared_ptr<const MetricsSnapshot> latest() const;

  mutable std::mutex mu_;
  std::shared_ptr<const MetricsSnapshot> snapshot_;
  uint64_t scrapes_ = 0;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  uint16_t bound_port_ = 0;
};

}  // namespace ab::alerts

#include "alerts/metrics.h"

#include "alerts/httplib_config.h"

#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <functional>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace ab::alerts {

namespace {

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}
std::string number(uint64_t v) { return std::to_string(v); }

// HELP text escaping: backslash and newline.
std::string escape_help(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

class Writer {
 public:
  void family(const char* name, const char* type, const char* help) {
    name_ = name;
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help), name, type);
  }
  template <class V>
  void sample(V value) {
    out_ += fmt::format("{} {}\n", name_, number(value));
  }
  template <class V>
  void sample(const std::vector<std::pair<const char*, std::string>>& labels, V value) {
    std::string l;
    for (const auto& [k, v] : labels) {
      if (!l.empty()) l += ',';
      l += fmt::format("{}=\"{}\"", k, escape_label_value(v));
    }
    out_ += fmt::format("{}{{{}}} {}\n", name_, l, number(value));
  }
  // A sample of a family's derived series (a histogram's _bucket, _sum, _count).
  template <class V>
  void sample_named(const std::string& series, const std::vector<std::pair<const char*, std::string>>& labels,
                    V value) {
    const std::string keep = name_;
    name_ = series;
    sample(labels, value);
    name_ = keep;
  }
  std::string take() { return std::move(out_); }

 private:
  std::string name_;
  std::string out_;
};

}  // namespace

bool is_loss_counter(std::string_view name) {
  static constexpr std::string_view kLosses[] = {
      // kernel (bpf/agentbrake_events.h AB_CNT_*)
      "ring_buffer_lost", "tls_truncated_calls", "tls_truncated_lost_bytes", "holds_skipped_ring_full",
      "tls_read_errors", "dns_parse_errors",
      // capture and parsing (capture/stream_table.h)
      "capture_gaps", "capture_gap_bytes", "malformed_tls_records", "unparsed_http_errors", "unparsed_bytes",
      "streams_evicted", "header_budget_drops", "h2_hpack_desync", "h2_protocol_errors", "gate_h2_unsynced",
      "eventstream_bad_frames",
      // database, alerts
      "store_dropped_writes", "store_write_errors", "alerts_dropped", "alerts_failed", "otlp_dropped",
      "otlp_metrics_dropped", "otlp_export_failures",
      // the daemon's own
      "malformed_records", "ring_buffer_consume_errors", "connects_recovered_from_map", "attach_failures",
      "stale_capture_holds_released", "stale_capture_freezes_thawed", "capture_freezes_skipped",
      "budget_holds_not_taken_foreground", "incomplete_calls"};
  for (auto l : kLosses)
    if (name == l) return true;
  return false;
}

std::string escape_label_value(const std::string& v) {
  static constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size();) {
    unsigned char c = static_cast<unsigned char>(v[i]);
    if (c < 0x80) {
      if (c == '\\')
        out += "\\\\";
      else if (c == '"')
        out += "\\\"";
      else if (c == '\n')
        out += "\\n";
      else
        out += static_cast<char>(c);
      i++;
      continue;
    }
    // one well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF) or U+FFFD
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    bool ok = len > 0 && i + len <= v.size();
    for (size_t k = 1; ok && k < len; k++) ok = (static_cast<unsigned char>(v[i + k]) & 0xC0) == 0x80;
    if (ok && len >= 3) {
      unsigned char c1 = static_cast<unsigned char>(v[i + 1]);
      if (c == 0xE0 && c1 < 0xA0) ok = false;  // overlong
      if (c == 0xED && c1 > 0x9F) ok = false;  // surrogate
      if (c == 0xF0 && c1 < 0x90) ok = false;  // overlong
      if (c == 0xF4 && c1 > 0x8F) ok = false;  // above U+10FFFF
    }
    if (ok) {
      out.append(v, i, len);
      i += len;
    } else {
      out += kReplacement;
      i++;
    }
  }
  return out;
}

namespace {

// The cgroups that keep a label of their own, the rest summed into "_other" (see
// MetricsSnapshot::max_cgroup_labels) into `out`; only called when there are more than that.
// Returns the number folded.
size_t fold_cgroups(const MetricsSnapshot& s, std::map<std::string, CgroupMetrics>& out) {
  std::vector<const std::pair<const std::string, CgroupMetrics>*> order;
  order.reserve(s.cgroups.size());
  for (const auto& kv : s.cgroups) order.push_back(&kv);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    if (a->second.cost_usd != b->second.cost_usd) return a->second.cost_usd > b->second.cost_usd;
    if (a->second.calls != b->second.calls) return a->second.calls > b->second.calls;
    return a->first < b->first;
  });
  CgroupMetrics other;
  for (size_t i = 0; i < order.size(); i++) {
    const auto& [cg, m] = *order[i];
    if (i < s.max_cgroup_labels) {
      out.emplace(cg, m);
      continue;
    }
    other.calls += m.calls;
    other.input_tokens += m.input_tokens;
    other.output_tokens += m.output_tokens;
    other.cost_usd += m.cost_usd;
    for (const auto& [reason, n] : m.holds) other.holds[reason] += n;
    other.denials += m.denials;
    other.kills += m.kills;
    other.held_now += m.held_now;
  }
  out["_other"] = other;  // a real cgroup path starts with '/': no clash
  return order.size() - s.max_cgroup_labels;
}

void render_models_and_budgets(Writer& w, const MetricsSnapshot& s) {
  auto per_model = [&](const char* name, const char* help, auto value) {
    w.family(name, "counter", help);
    for (const auto& [k, m] : s.models) w.sample({{"provider", k.first}, {"model", k.second}}, value(m));
  };
  per_model("agentbrake_model_calls_total", "Completed LLM API calls, by provider and model (bounded labels).",
            [](const ModelAggregate& m) { return m.calls; });
  per_model("agentbrake_model_errors_total", "LLM calls answered with HTTP status >= 400 or not at all, by provider and model.",
            [](const ModelAggregate& m) { return m.errors; });
  w.family("agentbrake_model_tokens_total", "counter",
           "Tokens by provider, model and type: input (billed, cache included), output (reasoning included), "
           "cache_read, cache_write.");
  for (const auto& [k, m] : s.models) {
    const std::pair<const char*, uint64_t> types[] = {{"input", m.input_tokens},
                                                       {"output", m.output_tokens},
                                                       {"cache_read", m.cache_read_tokens},
                                                       {"cache_write", m.cache_write_tokens}};
    for (const auto& [type, n] : types) w.sample({{"provider", k.first}, {"model", k.second}, {"type", type}}, n);
  }
  per_model("agentbrake_model_cost_usd_total", "Spend on LLM calls in US dollars, by provider and model.",
            [](const ModelAggregate& m) { return m.cost_usd; });
  w.family("agentbrake_call_duration_seconds", "histogram",
           "LLM call latency, request start to response end, by provider and model.");
  for (const auto& [k, m] : s.models) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kLatencyBucketsS.size(); i++) {
      cumulative += m.latency_buckets[i];
      w.sample_named("agentbrake_call_duration_seconds_bucket",
                     {{"provider", k.first}, {"model", k.second}, {"le", number(kLatencyBucketsS[i])}}, cumulative);
    }
    cumulative += m.latency_over;
    w.sample_named("agentbrake_call_duration_seconds_bucket", {{"provider", k.first}, {"model", k.second}, {"le", "+Inf"}},
                   cumulative);
    w.sample_named("agentbrake_call_duration_seconds_sum", {{"provider", k.first}, {"model", k.second}}, m.latency_sum_s);
    w.sample_named("agentbrake_call_duration_seconds_count", {{"provider", k.first}, {"model", k.second}},
                   m.latency_count);
  }
  w.family("agentbrake_model_labels_folded_total", "counter",
           "LLM calls counted under provider or model \"other\" because the label bound was reached.");
  w.sample(s.model_labels_folded);

  std::vector<const BudgetGauge*> gauges;
  for (const auto& g : s.budgets) gauges.push_back(&g);
  if (gauges.size() > s.max_budget_series) {
    auto fill = [](const BudgetGauge* g) { return g->limit > 0 ? g->level / g->limit : 0.0; };
    std::sort(gauges.begin(), gauges.end(), [&](auto* a, auto* b) {
      if (fill(a) != fill(b)) return fill(a) > fill(b);
      return std::tie(a->budget, a->bucket, a->kind, a->window) < std::tie(b->budget, b->bucket, b->kind, b->window);
    });
    gauges.resize(s.max_budget_series);
  }
  std::sort(gauges.begin(), gauges.end(), [](auto* a, auto* b) {
    return std::tie(a->budget, a->bucket, a->kind, a->window) < std::tie(b->budget, b->bucket, b->kind, b->window);
  });
  auto labels = [](const BudgetGauge& g) {
    return std::vector<std::pair<const char*, std::string>>{
        {"budget", g.budget}, {"bucket", g.bucket}, {"kind", g.kind}, {"window", g.window}};
  };
  w.family("agentbrake_budget_level", "gauge",
           "A budget bucket's use in its window now (tokens, USD, requests, or calls in flight), by limit.");
  for (const auto* g : gauges) w.sample(labels(*g), g->level);
  w.family("agentbrake_budget_limit", "gauge", "The limit agentbrake_budget_level is held against.");
  for (const auto* g : gauges) w.sample(labels(*g), g->limit);
}

}  // namespace

std::string render_prometheus(const MetricsSnapshot& s) {
  Writer w;
  std::map<std::string, CgroupMetrics> folded_cgroups;  // only past the label limit: no copy per scrape
  const size_t folded = s.cgroups.size() > s.max_cgroup_labels ? fold_cgroups(s, folded_cgroups) : 0;
  const auto& cgroups = folded ? folded_cgroups : s.cgroups;
  auto per_cgroup = [&](const char* name, const char* type, const char* help,
                        const std::function<double(const CgroupMetrics&)>& value, bool integral) {
    w.family(name, type, help);
    for (const auto& [cgroup, m] : cgroups) {
      double v = value(m);
      if (integral)
        w.sample({{"cgroup", cgroup}}, static_cast<uint64_t>(v));
      else
        w.sample({{"cgroup", cgroup}}, v);
    }
  };
  auto by_label = [&](const char* name, const char* help, const char* label,
                      const std::map<std::string, uint64_t>& values) {
    w.family(name, "counter", help);
    for (const auto& [key, v] : values) w.sample({{label, key}}, v);
  };

  per_cgroup("agentbrake_llm_calls_total", "counter", "Completed LLM API calls, by cgroup.",
             [](const CgroupMetrics& m) { return static_cast<double>(m.calls); }, true);
  per_cgroup("agentbrake_input_tokens_total", "counter", "Billed input tokens (cached included), by cgroup.",
             [](const CgroupMetrics& m) { return static_cast<double>(m.input_tokens); }, true);
  per_cgroup("agentbrake_output_tokens_total", "counter", "Output tokens (reasoning included), by cgroup.",
             [](const CgroupMetrics& m) { return static_cast<double>(m.output_tokens); }, true);
  per_cgroup("agentbrake_cost_usd_total", "counter", "Spend on LLM calls in US dollars, by cgroup.",
             [](const CgroupMetrics& m) { return m.cost_usd; }, false);
  w.family("agentbrake_holds_total", "counter",
           "Holds taken (a process stopped or frozen), by cgroup and reason: budget, fan_out, loop, pacing, "
           "capture, manual.");
  for (const auto& [cgroup, m] : cgroups)
    for (const auto& [reason, n] : m.holds) w.sample({{"cgroup", cgroup}, {"reason", reason}}, n);
  per_cgroup("agentbrake_denials_total", "counter", "Deny actions taken, by cgroup.",
             [](const CgroupMetrics& m) { return static_cast<double>(m.denials); }, true);
  per_cgroup("agentbrake_kills_total", "counter", "Kill actions taken, by cgroup.",
             [](const CgroupMetrics& m) { return static_cast<double>(m.kills); }, true);
  per_cgroup("agentbrake_held_processes", "gauge", "Processes held right now, by cgroup.",
             [](const CgroupMetrics& m) { return static_cast<double>(m.held_now); }, true);
  by_label("agentbrake_loop_detections_total", "Loop detector firings, by detector.", "detector", s.detector_firings);
  by_label("agentbrake_losses_total",
           "Loss counters: ring buffer records lost, truncated captures, lost bytes, unparsed responses, "
           "dropped alerts, ...",
           "counter", s.losses);
  by_label("agentbrake_activity_total",
           "The daemon's counters of normal work (not losses): TLS records read, calls, attaches, holds taken, "
           "gate passes, alerts sent, ...",
           "counter", s.activity);
  by_label("agentbrake_alerts_total", "Alerts by outcome: sent, failed, suppressed (min_interval), dropped (queue full).",
           "outcome", s.alerts);
  render_models_and_budgets(w, s);
  w.family("agentbrake_probes_attached", "gauge", "TLS/uprobe attachments in place.");
  w.sample(s.probes_attached);
  w.family("agentbrake_watched_processes", "gauge", "Processes watched right now.");
  w.sample(s.watched_processes);
  w.family("agentbrake_metrics_cgroups_folded", "gauge",
           "Cgroups summed into cgroup=\"_other\" because more than the label limit had metrics.");
  w.sample(static_cast<uint64_t>(folded));
  w.family("agentbrake_uptime_seconds", "gauge", "Seconds since the daemon started.");
  w.sample(s.uptime_s);
  w.family("agentbrake_info", "gauge", "Daemon version and policy digest in force (value always 1).");
  w.sample({{"version", s.version}, {"policy_digest", s.policy_digest}}, uint64_t{1});
  return w.take();
}

MetricsServer::MetricsServer() : snapshot_(std::make_shared<const MetricsSnapshot>()) {}

MetricsServer::~MetricsServer() { stop(); }

bool MetricsServer::start(const std::string& host, uint16_t port, std::string* error) {
  auto fail = [&](std::string why) {
    if (error) *error = std::move(why);
    return false;
  };
  if (server_) return fail("metrics server already running");
  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(2); };
  server->set_read_timeout(std::chrono::seconds(5));
  server->set_write_timeout(std::chrono::seconds(5));
  server->set_keep_alive_max_count(10);
  // httplib's default is SO_REUSEPORT, which lets a second daemon bind the same port and
  // silently share the scrapes. SO_REUSEADDR only: a busy port is an error.
  server->set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const MetricsSnapshot> snap = latest();
    res.set_content(render_prometheus(*snap), kPrometheusContentType);
    std::lock_guard lk(mu_);
    ++scrapes_;
  });
  server->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("agentbrake: metrics at /metrics\n", "text/plain");
  });
  int bound = port == 0 ? server->bind_to_any_port(host) : (server->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return fail(fmt::format("cannot listen on {}:{}", host, port));
  bound_port_ = static_cast<uint16_t>(bound);
  httplib::Server* raw = server.get();
  server_ = std::move(server);
  thread_ = std::thread([raw] { raw->listen_after_bind(); });
  // httplib's stop() only acts on a server that is already listening: wait for that, so a
  // stop() right after start() cannot leave the thread serving forever.
  for (int i = 0; i < 2000 && !raw->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  spdlog::info("metrics: serving /metrics on {}:{}", host, bound_port_);
  return true;
}

void MetricsServer::stop() {
  if (!server_) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
  bound_port_ = 0;
}

bool MetricsServer::running() const { return server_ && server_->is_running(); }

void MetricsServer::publish(MetricsSnapshot snapshot) {
  auto next = std::make_shared<const MetricsSnapshot>(std::move(snapshot));
  std::lock_guard lk(mu_);
  snapshot_.swap(next);
}

uint64_t MetricsServer::scrapes() const {
  std::lock_guard lk(mu_);
  return scrapes_;
}

std::shared_ptr<const MetricsSnapshot> MetricsServer::latest() const {
  std::lock_guard lk(mu_);
  return snapshot_;
}

}  // namespace ab::alerts

// telemetry.cpp — the fleet's view of this host: every llm_call as an OTLP span, the per
// provider/model aggregates and budget levels for /metrics and OTLP metrics. The exporter runs
// on its own thread (telemetry/otlp_exporter.h); here, on the event loop, only a span is
// built and queued per call, and a metrics body every `otlp.metrics_interval`.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "core/daemon_impl.h"
#include "util/duration.h"

namespace ab::core {

namespace {

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

}  // namespace

// A policy (re)load: (re)configure the exporter, re-reading headers_file (so a rotated token
// is picked up by SIGHUP). An unreadable or malformed headers file disables the export: the
// collector would refuse it without its credentials, and guessing is worse. The file's
// content is never logged; errors name file:line only.
void Daemon::telemetry_policy_changed() {
  if (!policy_->otlp) {
    if (otlp_ && otlp_->enabled()) {
      spdlog::info("otlp: export off (no otlp: in the policy)");
      otlp_->disable();
    }
    return;
  }
  const policy::Otlp& o = *policy_->otlp;
  telemetry::ExporterConfig config;
  config.endpoint = o.endpoint;
  config.resource.service_version = opts_.version;
  config.resource.host_name = host_name();
  if (!o.headers_file.empty()) {
    std::ifstream in(o.headers_file, std::ios::binary);
    std::string err;
    std::optional<std::vector<std::pair<std::string, std::string>>> headers;
    if (!in) {
      err = fmt::format("{}: {}", o.headers_file, std::strerror(errno));
    } else {
      std::stringstream ss;
      ss << in.rdbuf();
      headers = telemetry::parse_headers_file(ss.str(), o.headers_file, &err);
    }
    if (!headers) {
      spdlog::error("otlp: headers_file {}; OTLP export disabled until the policy is reloaded", err);
      stats_[DaemonCounter::OtlpConfigErrors]++;
      if (otlp_) otlp_->disable();
      return;
    }
    config.headers = std::move(*headers);
  }
  spdlog::info("otlp: exporting spans and metrics (every {}) to {} ({} header(s) from headers_file)",
               util::format_policy_duration(o.metrics_interval), o.endpoint, config.headers.size());
  if (otlp_)
    otlp_->reconfigure(std::move(config));
  else
    otlp_ = std::make_unique<telemetry::OtlpExporter>(std::move(config));
  otlp_next_metrics_mono_ = 0;  // export the metrics at the next tick
}

void Daemon::telemetry_on_call(const LlmCall& call) {
  alerts::CallSample s;
  s.provider = call.provider;
  s.model = call.model;
  s.input_tokens = call.input_tokens;
  s.output_tokens = call.output_tokens;
  s.cache_read_tokens = call.cache_read_tokens;
  s.cache_write_tokens = call.cache_write_tokens;
  s.cost_usd = call.cost_usd;
  s.latency_s = call.status > 0 ? call.latency_ms / 1e3 : -1;
  s.error = call.status >= 400 || call.status == 0;
  call_metrics_.add(s);
  if (otlp_ && policy_->otlp) otlp_->offer_span(telemetry::span_json(call, telemetry::random_span_ids()));
}

void Daemon::telemetry_tick() {
  if (!otlp_ || !policy_->otlp || !otlp_->enabled()) return;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  if (now < otlp_next_metrics_mono_) return;
  otlp_next_metrics_mono_ = now + int64_t(policy_->otlp->metrics_interval.count()) * 1'000'000;
  telemetry::MetricsInput in;
  uint64_t folded = 0;
  fill_model_and_budget_metrics(in.models, in.budgets, folded);
  in.start_unix_ns = mono_to_unix(static_cast<uint64_t>(started_mono_));
  in.now_unix_ns = clock_ns(CLOCK_REALTIME);
  telemetry::Resource r;
  r.service_version = opts_.version;
  r.host_name = host_name();
  otlp_->offer_metrics(telemetry::metrics_body(r, in));
}

void Daemon::fill_model_and_budget_metrics(std::map<std::pair<std::string, std::string>, alerts::ModelAggregate>& models,
                                           std::vector<alerts::BudgetGauge>& budgets, uint64_t& folded) {
  models = call_metrics_.by_model();
  folded = call_metrics_.folded_calls();
  if (!gate_) return;
  const auto snap = gate_->budgets().snapshot(clock_ns(CLOCK_MONOTONIC));
  for (const auto& b : snap.buckets) {
    for (const auto& l : b.limits)
      budgets.push_back({b.id.budget, b.id.key, std::string(policy::to_string(l.kind)),
                         util::format_policy_duration(std::chrono::milliseconds(l.window_ns / 1'000'000)), l.level,
                         l.limit});
    if (b.max_inflight)
      budgets.push_back({b.id.budget, b.id.key, "inflight", "", double(b.inflight), double(*b.max_inflight)});
  }
}

void Daemon::add_telemetry_counters(json& counters) {
  counters["model_labels_folded"] = call_metrics_.folded_calls();
  if (!otlp_) return;
  const auto c = otlp_->counters();
  counters["otlp_spans_exported"] = c.spans_exported;
  counters["otlp_dropped"] = c.spans_dropped;
  counters["otlp_metrics_exported"] = c.metrics_exported;
  counters["otlp_metrics_dropped"] = c.metrics_dropped;
  counters["otlp_export_failures"] = c.export_failures;
  counters["otlp_retries"] = c.retries;
}

}  // namespace ab::core

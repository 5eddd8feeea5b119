// operate.cpp — what the operator sees besides the CLI: alerts (webhook, exec, journal) on
// recorded events, the Prometheus /metrics endpoint, and retention pruning. None of it blocks
// the event loop: deliveries run on the dispatcher's threads, scrapes on the metrics server's,
// pruning on its own.
#include <spdlog/spdlog.h>

#include <chrono>

#include "core/daemon_impl.h"

namespace ab::core {

void Daemon::operate_policy_changed() {
  if (!alerts_) {
    alerts_ = std::make_unique<alerts::AlertDispatcher>(policy_->alerts);
  } else {
    alerts_->set_rules(policy_->alerts);
  }
  retention_max_bytes_ = static_cast<uint64_t>(policy_->retention_max_mb) << 20;
  telemetry_policy_changed();
  const std::string listen = policy_->metrics ? policy_->metrics->listen : "";
  if (listen != metrics_listen_) {
    metrics_.reset();
    metrics_listen_ = listen;
    if (policy_->metrics) {
      auto m = std::make_unique<alerts::MetricsServer>();
      std::string err;
      if (m->start(policy_->metrics->host, policy_->metrics->port, &err)) {
        spdlog::info("metrics on http://{}/metrics", listen);
        metrics_ = std::move(m);
        publish_metrics();
      } else {
        spdlog::error("metrics endpoint {}: {}", listen, err);
        metrics_listen_.clear();
      }
    }
  }
}

// Every hold taken, of every kind (KernelEffects' hold_taken, and manual pauses): also those
// whose events are not recorded (rate-limited capture holds).
void Daemon::count_hold(const std::string& cgroup, const std::string& reason) {
  metric_actions_[cgroup.empty() ? "/" : cgroup].holds[reason]++;
}

// Every recorded event: counted for /metrics, offered to the alert rules. Holds are counted
// where they are taken (count_hold), also those whose events are not recorded.
void Daemon::on_event_recorded(const store::Event& e) {
  const std::string cg = e.cgroup.empty() ? "/" : e.cgroup;
  if (e.kind == "killed") metric_actions_[cg].kills++;
  else if (e.kind == "denied") metric_actions_[cg].denials++;
  else if (e.kind == "loop_detected" && e.detail.contains("detector") && e.detail["detector"].is_string())
    detector_firings_[e.detail["detector"].get<std::string>()]++;
  if (!alerts_ || e.kind == "llm_call") return;
  alerts::AlertEvent a;
  a.kind = e.kind;
  a.cgroup = e.cgroup;
  a.pid = e.pid;
  a.comm = e.comm;
  a.detail = e.detail;
  for (const char* k : {"bucket", "entity"})
    if (e.detail.contains(k) && e.detail[k].is_string()) {
      a.entity = e.detail[k].get<std::string>();
      break;
    }
  if (a.entity.empty() && e.kind == "loop_detected" && e.detail.contains("entity") && e.detail["entity"].is_string())
    a.entity = e.detail["entity"].get<std::string>();
  alerts_->offer(std::move(a));
}

void Daemon::on_alert_results() {
  if (!alerts_) return;
  for (auto& r : alerts_->take_results()) {
    if (!r.ok) {
      spdlog::warn("alert {} via {} failed after {} attempt(s): {}", r.rule, r.channel, r.attempts, r.error);
    }
    record_event(r.ok ? "alert_sent" : "alert_failed", r.event.pid, r.event.cgroup, r.event.comm, r.to_detail());
  }
}

void Daemon::publish_metrics() {
  if (!metrics_) return;
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  alerts::MetricsSnapshot s;
  for (const auto& u : live_.list(accounting::EntityKind::Cgroup, now)) {
    auto& m = s.cgroups[u.key.id];
    m.calls = u.totals.calls;
    m.input_tokens = static_cast<uint64_t>(u.totals.input_tokens);
    m.output_tokens = static_cast<uint64_t>(u.totals.output_tokens);
    m.cost_usd = u.totals.cost_usd;
  }
  for (const auto& [cg, a] : metric_actions_) {
    auto& m = s.cgroups[cg];
    m.holds = a.holds;
    m.denials = a.denials;
    m.kills = a.kills;
  }
  for (uint32_t pid : gate_ ? gate_->held_pids() : std::vector<uint32_t>{}) {
    const auto* e = procs_.find(static_cast<int>(pid));
    s.cgroups[e && !e->cgroup.empty() ? e->cgroup : "/"].held_now++;
  }
  s.detector_firings = detector_firings_;
  for (const char* d : {"ping_pong", "repetition", "fan_out", "retry_storm"}) s.detector_firings.emplace(d, 0);
  const json st = cmd_status();
  for (const auto& [name, v] : st["counters"].items())
    if (v.is_number_unsigned() || v.is_number_integer())
      (alerts::is_loss_counter(name) ? s.losses : s.activity)[name] = v.get<uint64_t>();
  if (alerts_) {
    auto c = alerts_->counters();
    s.alerts = {{"sent", c.sent}, {"failed", c.failed}, {"suppressed", c.suppressed}, {"dropped", c.dropped}};
  }
  s.probes_attached = st["probes_attached"].get<uint64_t>();
  s.watched_processes = st["watched_processes"].get<uint64_t>();
  s.uptime_s = st["uptime_s"].get<double>();
  s.version = opts_.version;
  s.policy_digest = policy_->digest;
  fill_model_and_budget_metrics(s.models, s.budgets, s.model_labels_folded);
  metrics_->publish(std::move(s));
}

// The database's own thread, so no SQLite wait (a busy lock from another writer, a slow disk)
// ever lands on the event loop: it commits the queued rows every 200 ms (a call is visible well
// within 2 s), applies retention by age and by size in bounded batches, and checkpoints the WAL
// (a passive checkpoint; journal_size_limit then truncates the file).
void Daemon::start_pruner() {
  pruner_ = std::thread([this] {
    using namespace std::chrono;
    constexpr auto kFlushEvery = milliseconds(200);
    constexpr auto kCheckpointEvery = seconds(10);
    auto next_prune = steady_clock::now() + seconds(1);
    auto next_checkpoint = steady_clock::now() + kCheckpointEvery;
    int checkpoints_held_back = 0;
    std::unique_lock lk(pruner_mu_);
    while (!pruner_stop_) {
      pruner_cv_.wait_for(lk, kFlushEvery, [this] { return pruner_stop_; });
      if (pruner_stop_) break;
      lk.unlock();
      store_->flush();
      const auto now = steady_clock::now();
      try {
        if (now >= next_prune) {
          const int64_t retention_ms = retention_ms_.load();
          next_prune = now + (retention_ms < 120'000 ? seconds(1) : seconds(60));
          const int64_t cutoff = clock_ns(CLOCK_REALTIME) - retention_ms * 1'000'000;
          size_t n = store_->prune(cutoff, 20000);
          if (n) spdlog::debug("retention: pruned {} row(s) older than the retention", n);
          if (uint64_t cap = retention_max_bytes_.load()) {
            size_t m = store_->prune_to_size(cap, 20000);
            if (m) spdlog::info("retention: pruned {} oldest row(s): the database was over retention_max_mb", m);
          }
        }
        if (now >= next_checkpoint) {
          next_checkpoint = now + kCheckpointEvery;
          checkpoints_held_back = store_->checkpoint() ? 0 : checkpoints_held_back + 1;
          if (checkpoints_held_back == 30)  // five minutes: say so once per episode
            spdlog::warn("database {}: a reader has kept the WAL from being checkpointed for 5 minutes; "
                         "the -wal file grows until it lets go", store_->path());
        }
      } catch (const std::exception& e) {
        spdlog::warn("retention prune failed: {}", e.what());
      }
      lk.lock();
    }
  });
}

void Daemon::stop_pruner() {
  {
    std::lock_guard lk(pruner_mu_);
    pruner_stop_ = true;
  }
  pruner_cv_.notify_all();
  if (pruner_.joinable()) pruner_.join();
}

}  // namespace ab::core

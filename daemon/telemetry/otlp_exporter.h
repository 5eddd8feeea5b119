// otlp_exporter.h — the OTLP/HTTP JSON export of policy `otlp:` on its own thread.
//
//   event loop                               exporter thread
//   ──────────                               ───────────────
//   offer_span(span) ─► bounded queue ──────► batches of ≤ max_batch spans, every flush_interval
//    (a mutex for a push, no I/O;               or when a batch is full: POST {endpoint}/v1/traces
//     full queue: the span is dropped,        ► the latest metrics body: POST {endpoint}/v1/metrics
//     counted in `dropped`)                     (a newer one replaces one not yet sent: cumulative)
//   offer_metrics(body) ─► one slot ─────────┘
//
// A failed POST (transport error, 408, 429, 5xx) is retried with the same body after 0.5 s,
// 1 s, 2 s, ... (doubling, at most max_backoff), at most max_attempts attempts; then the batch
// is dropped (counted). Other statuses drop the batch at once. Success is any 2xx. While a
// batch waits to be retried, new spans queue up to the bound and are dropped past it.
// Headers of `headers_file` are sent with every POST and never logged; error texts are curl's
// (they name the URL, which carries no secret: the policy refuses user:password@).
// reconfigure() (a policy reload) takes effect for the next POST; disable() drops what is
// queued and stops exporting until the next reconfigure. The destructor aborts a transfer in
// flight and joins the thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "telemetry/otlp_json.h"

namespace ab::telemetry {

struct ExporterConfig {
  std::string endpoint;  // base URL; /v1/traces and /v1/metrics are appended
  std::vector<std::pair<std::string, std::string>> headers;
  Resource resource;
};

struct ExporterOptions {
  size_t queue_capacity = 4096;  // spans waiting (not counting the batch in flight)
  size_t max_batch = 512;
  std::chrono::milliseconds flush_interval{1000};
  int max_attempts = 6;
  std::chrono::milliseconds first_retry_delay{500};
  std::chrono::milliseconds max_backoff{30'000};
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds request_timeout{10'000};
};

struct ExporterCounters {
  uint64_t spans_exported = 0;
  uint64_t spans_dropped = 0;     // queue full, export given up, or disabled with spans queued
  uint64_t metrics_exported = 0;  // metrics requests accepted
  uint64_t metrics_dropped = 0;   // metrics requests given up (a newer one replacing an unsent one is not counted)
  uint64_t export_failures = 0;   // failed attempts (each retry counts)
  uint64_t retries = 0;
};

class OtlpExporter {
 public:
  explicit OtlpExporter(ExporterConfig config, ExporterOptions options = {});
  ~OtlpExporter();
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  void reconfigure(ExporterConfig config);
  void disable();
  bool enabled() const;

  // Never blocks on I/O. false when the span was dropped (queue full or disabled).
  bool offer_span(nlohmann::json span);
  void offer_metrics(std::string body);

  ExporterCounters counters() const;
  size_t queued() const;
  std::string last_error() const;  // of the last failed attempt, "" after a success

 private:
  void run();
  // One POST with retries; false when given up (or stopping). Called without mu_.
  bool post_with_retries(const std::string& path, const std::string& body, ExporterConfig& config);
  std::optional<std::string> post_once(const std::string& url, const std::string& body,
                                       const ExporterConfig& config, bool& retryable);

  ExporterOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  ExporterConfig config_;
  bool enabled_ = true;
  bool stopping_ = false;
  std::deque<nlohmann::json> spans_;
  std::optional<std::string> metrics_;
  std::string last_error_;
  std::atomic<bool> stop_flag_{false};
  std::atomic<uint64_t> spans_exported_{0}, spans_dropped_{0}, metrics_exported_{0}, metrics_dropped_{0},
      export_failures_{0}, retries_{0};
  std::thread thread_;
};

}  // namespace ab::telemetry

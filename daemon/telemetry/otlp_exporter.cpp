#include "telemetry/otlp_exporter.h"

#include <curl/curl.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace ab::telemetry {

namespace {

size_t discard_body(char*, size_t size, size_t n, void*) { return size * n; }

// libcurl calls this often during a transfer (and about once a second while it waits): a
// non-zero return aborts, so stopping never waits out a slow collector.
int abort_when_stopping(void* flag, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<std::atomic<bool>*>(flag)->load() ? 1 : 0;
}

}  // namespace

OtlpExporter::OtlpExporter(ExporterConfig config, ExporterOptions options)
    : opts_(options), config_(std::move(config)) {
  thread_ = std::thread([this] { run(); });
}

OtlpExporter::~OtlpExporter() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  stop_flag_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void OtlpExporter::reconfigure(ExporterConfig config) {
  std::lock_guard lk(mu_);
  config_ = std::move(config);
  enabled_ = true;
  cv_.notify_all();
}

void OtlpExporter::disable() {
  std::lock_guard lk(mu_);
  enabled_ = false;
  spans_dropped_ += spans_.size();
  spans_.clear();
  metrics_.reset();
}

bool OtlpExporter::enabled() const {
  std::lock_guard lk(mu_);
  return enabled_;
}

bool OtlpExporter::offer_span(nlohmann::json span) {
  std::lock_guard lk(mu_);
  if (!enabled_ || spans_.size() >= opts_.queue_capacity) {
    spans_dropped_++;
    return false;
  }
  spans_.push_back(std::move(span));
  if (spans_.size() >= opts_.max_batch) cv_.notify_all();
  return true;
}

void OtlpExporter::offer_metrics(std::string body) {
  std::lock_guard lk(mu_);
  if (!enabled_) return;
  metrics_ = std::move(body);  // cumulative values: the newest supersedes one not yet sent
  cv_.notify_all();
}

ExporterCounters OtlpExporter::counters() const {
  return {spans_exported_.load(), spans_dropped_.load(), metrics_exported_.load(),
          metrics_dropped_.load(), export_failures_.load(), retries_.load()};
}

size_t OtlpExporter::queued() const {
  std::lock_guard lk(mu_);
  return spans_.size();
}

std::string OtlpExporter::last_error() const {
  std::lock_guard lk(mu_);
  return last_error_;
}

void OtlpExporter::run() {
  std::unique_lock lk(mu_);
  auto next_flush = std::chrono::steady_clock::now() + opts_.flush_interval;
  while (!stopping_) {
    cv_.wait_until(lk, next_flush, [&] {
      return stopping_ || (enabled_ && (metrics_ || spans_.size() >= opts_.max_batch));
    });
    if (stopping_) break;
    const bool flush_due = std::chrono::steady_clock::now() >= next_flush;
    if (flush_due) next_flush = std::chrono::steady_clock::now() + opts_.flush_interval;
    if (!enabled_) continue;
    if (!spans_.empty() && (flush_due || spans_.size() >= opts_.max_batch)) {
      const size_t n = std::min(spans_.size(), opts_.max_batch);
      std::vector<nlohmann::json> batch(std::make_move_iterator(spans_.begin()),
                                        std::make_move_iterator(spans_.begin() + static_cast<long>(n)));
      spans_.erase(spans_.begin(), spans_.begin() + static_cast<long>(n));
      ExporterConfig config = config_;
      lk.unlock();
      const std::string body = traces_body(config.resource, batch);
      if (post_with_retries("/v1/traces", body, config))
        spans_exported_ += n;
      else
        spans_dropped_ += n;
      lk.lock();
      continue;
    }
    if (metrics_) {
      std::string body = std::move(*metrics_);
      metrics_.reset();
      ExporterConfig config = config_;
      lk.unlock();
      if (post_with_retries("/v1/metrics", body, config))
        metrics_exported_++;
      else if (!stop_flag_)
        metrics_dropped_++;
      lk.lock();
    }
  }
}

bool OtlpExporter::post_with_retries(const std::string& path, const std::string& body, ExporterConfig& config) {
  auto delay = opts_.first_retry_delay;
  for (int attempt = 1; attempt <= opts_.max_attempts && !stop_flag_; attempt++) {
    bool retryable = false;
    auto err = post_once(config.endpoint + path, body, config, retryable);
    if (!err) {
      std::lock_guard lk(mu_);
      last_error_.clear();
      return true;
    }
    export_failures_++;
    {
      std::lock_guard lk(mu_);
      if (last_error_ != *err) spdlog::warn("otlp: POST {}{}: {}", config.endpoint, path, *err);
      last_error_ = *err;
    }
    if (!retryable || attempt == opts_.max_attempts) break;
    std::unique_lock lk(mu_);
    if (cv_.wait_for(lk, delay, [&] { return stopping_; })) return false;
    config = config_;  // a reload while waiting: the retry goes where the policy says now
    if (!enabled_) return false;
    lk.unlock();
    retries_++;
    delay = std::min(delay * 2, opts_.max_backoff);
  }
  return false;
}

std::optional<std::string> OtlpExporter::post_once(const std::string& url, const std::string& body,
                                                   const ExporterConfig& config, bool& retryable) {
  retryable = true;
  CURL* h = curl_easy_init();
  if (h == nullptr) return "curl_easy_init failed";
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  for (const auto& [name, value] : config.headers)
    headers = curl_slist_append(headers, fmt::format("{}: {}", name, value).c_str());
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "agentbrake-otlp");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts_.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(opts_.request_timeout.count()));
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_body);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, abort_when_stopping);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &stop_flag_);
  CURLcode rc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK) return std::string(errbuf[0] ? errbuf : curl_easy_strerror(rc));
  if (status >= 200 && status < 300) return std::nullopt;
  retryable = status == 408 || status == 429 || status >= 500;
  return fmt::format("HTTP {}", status);
}

}  // namespace ab::telemetry

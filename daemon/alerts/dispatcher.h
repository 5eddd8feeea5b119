// dispatcher.h — alert delivery off the event loop: policy `alerts:` rules, rate limiting,
// webhooks (libcurl), exec programs, and a journal line for every alert.
//
//   event loop                                  worker threads
//   ──────────                                  ──────────────
//   offer(event) ─ match rules ─ rate limit ─► bounded queue ─► webhook POST (retries with
//        (never blocks: a mutex held for            │            backoff) / exec program
//         a queue push, no I/O)                     │            (timeout, reaped)
//   notify_fd() readable ◄── eventfd ◄──────────────┘ one AlertResult per delivery
//   take_results() ─► alert_sent / alert_failed events
//
// Rules: an event matches a rule when its kind is in the rule's `on:`. One alert per
// (rule, entity) per `min_interval` (see `entity_of`); the others are counted as suppressed.
// An alert_failed event never triggers the rule whose failure it reports (no feedback loop).
// A full queue drops the alert (counted as dropped; the rate limit is not charged).
// Deliveries run on `worker_threads` workers, so a slow receiver delays the others less;
// alerts are started in the order offered but may complete (and be reported) in any order.
//
// Webhooks: HTTP POST of `webhook_body` (JSON), connect timeout 5 s, total 10 s, http/https
// only, no redirects. Transport errors, 408, 429 and 5xx are retried after 0.5 s, 1 s, 2 s
// (4 attempts in all, configurable); other statuses fail at once. Success is any 2xx.
// Exec: the absolute path is started directly (posix_spawn, no shell, no arguments) with
// `exec_environment` as its whole environment, stdin /dev/null, stdout/stderr inherited, its
// own process group, default signal dispositions and an empty signal mask. Exit status 0 is
// success; after the timeout (10 s) its process group is killed. One attempt (a pager must
// not page twice). The child is reaped with waitpid(pid): the daemon must not reap with
// waitpid(-1).
//
// Secrets: webhook URLs appear only redacted (`redact_webhook_url`), in results and logs, and
// curl error texts are scrubbed of the URL's path and query. agentbrake adds no Authorization
// header of its own (user info written in the URL is libcurl's basic auth, never shown).
//
// Thread safety: offer, set_rules, take_results, counters and pending may be called from any
// thread. The destructor stops at once: pending alerts and retries are abandoned, a transfer
// in flight is aborted, an exec child in flight is killed and reaped.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "alerts/format.h"
#include "policy/policy.h"

namespace ab::alerts {

struct DispatcherOptions {
  size_t queue_capacity = 256;  // alerts waiting or in delivery (retries included)
  int worker_threads = 2;
  int webhook_max_attempts = 4;
  std::chrono::milliseconds first_retry_delay{500};  // doubles after each retry
  std::chrono::milliseconds max_retry_delay{30'000};
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds request_timeout{10'000};  // the whole attempt
  std::chrono::milliseconds exec_timeout{10'000};
  std::string hostname;  // shown in alerts; empty = gethostname()
  // Monotonic clock for rate limiting (tests inject one). Retries run on the real clock.
  std::function<std::chrono::steady_clock::time_point()> now = [] { return std::chrono::steady_clock::now(); };
};

// The outcome of one delivery (after its retries). The daemon records it as an
// `alert_sent` (ok) or `alert_failed` event about `event`'s cgroup/pid, detail `to_detail()`.
struct AlertResult {
  std::string rule;
  std::string channel;  // redacted webhook URL ("https://hooks.example.com") or "exec:/path"
  bool ok = false;
  std::string error;    // empty when ok: "HTTP 500", "connection refused ...", "exit status 3"
  int attempts = 0;
  AlertEvent event;     // what was alerted on

  // {"rule", "channel", "error", "attempts", "alert_kind"}
  nlohmann::json to_detail() const;
};

struct DispatcherCounters {
  uint64_t sent = 0;        // deliveries that succeeded
  uint64_t failed = 0;      // deliveries that failed after their attempts
  uint64_t suppressed = 0;  // matched but within min_interval of the previous alert
  uint64_t dropped = 0;     // matched but the queue was full
};

class AlertDispatcher {
 public:
  explicit AlertDispatcher(std::vector<policy::AlertRule> rules, DispatcherOptions options = {});
  ~AlertDispatcher();
  AlertDispatcher(const AlertDispatcher&) = delete;
  AlertDispatcher& operator=(const AlertDispatcher&) = delete;

  // Policy reload. Rate-limit history carries over for rules of the same name; alerts
  // already queued are delivered as they were.
  void set_rules(std::vector<policy::AlertRule> rules);

  // Never blocks on I/O. Returns how many alerts were queued for this event (0 when no rule
  // matched, or all were suppressed or dropped).
  size_t offer(AlertEvent event);

  // Results delivered since the last call, oldest first. Also drains notify_fd().
  std::vector<AlertResult> take_results();
  // An eventfd (non-blocking, close-on-exec) readable while results are waiting.
  int notify_fd() const { return notify_fd_; }

  DispatcherCounters counters() const;
  size_t pending() const;  // queued + in delivery

 private:
  struct Job;
  void worker_main();
  AlertResult deliver(Job& job, bool& retry_later);

  DispatcherOptions opts_;
  std::string hostname_;
  int notify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd, readable once stopping (wakes curl and exec waits)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<policy::AlertRule> rules_;
  std::map<std::pair<std::string, std::string>, std::chrono::steady_clock::time_point> last_fired_;
  std::multimap<std::chrono::steady_clock::time_point, std::unique_ptr<Job>> queue_;  // by due time
  size_t in_flight_ = 0;
  std::vector<AlertResult> results_;

  std::atomic<uint64_t> sent_{0}, failed_{0}, suppressed_{0}, dropped_{0};
  std::atomic<bool> stop_flag_{false};
  std::vector<std::thread> workers_;
};

// Why `alerts: exec` must not run `path`, or nullopt when it may. The program runs as root,
// so the file and every directory above it (symlinks resolved) must be owned by root (or by
// `trusted_uid`, the daemon's own user) and not writable by group or others — a directory may
// be if it is sticky (/tmp), since no one else can then replace what it holds; the file must
// be a regular executable file. Checked at every run: the file may change after policy load.
std::optional<std::string> exec_program_refusal(const std::string& path, uid_t trusted_uid);

}  // namespace ab::alerts

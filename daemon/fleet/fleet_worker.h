// fleet_worker.h — the one thread that talks to Redis (hiredis, synchronous calls).
//
// The event loop never waits on Redis: it submits lease requests (lease_book.h) and reads
// the answers when the worker's eventfd becomes readable. The worker also sends a heartbeat
// every second (this host's entry in the hosts set), which is how a lost store is noticed
// when no limit is busy and how its return is noticed. Connect and command timeouts are
// short (500 ms): a dead store costs the worker, never the loop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fleet/lease_book.h"
#include "policy/policy.h"

namespace ab::fleet {

struct HeartbeatResult {
  bool ok = false;
  int64_t hosts_seen = 0;
  std::string error;
};

class FleetWorker {
 public:
  // `window_ms`: hosts are counted as seen when heard from within it (the longest fleet
  // window of the policy).
  FleetWorker(policy::Fleet config, int64_t window_ms);
  ~FleetWorker();
  FleetWorker(const FleetWorker&) = delete;
  FleetWorker& operator=(const FleetWorker&) = delete;

  // Readable when answers wait; drain() resets it.
  int event_fd() const { return event_fd_; }
  void submit(std::vector<Request> requests);
  // A new fleet block (the connection is made again if the store changed).
  void reconfigure(policy::Fleet config, int64_t window_ms);

  struct Drained {
    std::vector<Reply> replies;
    std::vector<HeartbeatResult> heartbeats;
  };
  Drained drain();

 private:
  void run();
  bool ensure_connected(std::string& error);
  void disconnect();
  Reply execute(const Request& r, const policy::Fleet& cfg);
  HeartbeatResult beat(const policy::Fleet& cfg, int64_t window_ms);
  void signal();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> inbox_;
  Drained outbox_;
  policy::Fleet config_;
  int64_t window_ms_ = 60'000;
  bool reconnect_ = false;
  bool stop_ = false;

  int event_fd_ = -1;
  void* ctx_ = nullptr;              // redisContext*, owned by the worker thread
  std::string lease_sha_;
  std::thread thread_;
};

}  // namespace ab::fleet

// lease_book.h — this host's leases on the fleet's buckets (pure: no I/O, no clock inside).
//
// docs/fleet.md explains the scheme; in short: Redis keeps, per fleet limit (one limit of one
// bucket of a `scope: fleet` budget), the usage settled in its sliding window (per sub-window
// counters) and every host's outstanding lease. A host may admit calls up to its lease; the
// Lua script (lease_script.h) grants a lease only while
//     usage in the window + every host's outstanding lease + the grant <= the limit,
// so the fleet's admitted amount in any window stays within the limit, give or take the
// last call of each host (a settlement larger than its reservation).
//
// The book lives on the daemon's event loop. The budget engine asks it for room
// (brake::LeaseSource); the book never waits: it queues a Request for the worker
// (fleet_worker.h) and applies the worker's Reply when it comes. Whoever drives it calls
// poll(now) now and then (the daemon's tick) to collect the requests due: refills before a
// lease runs out, settled usage to report, unused credit to return.
//
// Redis unreachable (a request failed, or the lease outlived its validity without an answer):
// the book is degraded and the policy's `fail:` mode decides what allowance() says; usage
// settled meanwhile is kept and reported when the store answers again, nothing is dropped.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "brake/budget_engine.h"
#include "brake/lease_source.h"
#include "policy/policy.h"

namespace ab::fleet {

// Tuning; defaults suit windows from seconds to days (docs/fleet.md "Tuning").
struct LeaseTuning {
  int chunks_per_host = 4;           // a lease is about limit / (hosts seen * chunks_per_host)
  int64_t lease_ttl_ns = 3'000'000'000;      // Redis forgets a lease not renewed within this
  int64_t report_every_ns = 500'000'000;     // settled usage is reported at least this often
  int64_t retry_every_ns = 200'000'000;      // a refused or failed refill is tried again after
  int64_t idle_return_ns = 2'000'000'000;    // credit unused this long goes back to the fleet
  int sub_windows = 20;              // the store's window resolution (sub-windows per window)
};

// The store's key of one fleet limit: the same on every host for the same budget, bucket and
// limit (budget name + bucket key + kind + window).
std::string limit_key(const brake::BucketId& bucket, const policy::Limit& limit);

// What the book asks the worker to do for one fleet limit. One request per limit at a time.
struct Request {
  uint64_t seq = 0;
  std::string key;                   // limit_key
  double limit = 0;
  int64_t window_ms = 0;
  int64_t sub_ms = 0;                // sub-window length in the store
  double want = 0;                   // credit asked for (0: only report / return)
  double report = 0;                 // settled usage, moved from this host's lease to the window
  double give_back = 0;              // unused credit returned
  int64_t lease_ttl_ms = 0;
};

struct Reply {
  uint64_t seq = 0;
  std::string key;
  bool ok = false;                   // false: the store could not be reached (or refused)
  std::string error;                 // when !ok; never carries the password
  double granted = 0;
  double my_lease = 0;               // this host's outstanding lease in the store, after it
  double fleet_used = 0;             // window usage + every host's lease, after it
  double fleet_usage = 0;            // the window's settled usage across hosts
  int64_t hosts_seen = 0;            // hosts heard from in the limit's window
};

// The fleet as a whole went away or came back; the daemon records these as events.
struct Transition {
  bool degraded = false;             // true: fleet_degraded; false: fleet_restored
  policy::FleetFail fail = policy::FleetFail::Local;
  int64_t hosts_seen = 0;
  std::string error;                 // degraded: why
  // restored: usage settled while apart, per limit key, reported at once
  std::map<std::string, double> reconciled;
  size_t limits = 0;                 // fleet limits concerned
  int64_t apart_ns = 0;              // restored: how long the store was unreachable
};

class LeaseBook : public brake::LeaseSource {
 public:
  LeaseBook(policy::Fleet config, LeaseTuning tuning = {});

  // A new policy: its fleet block (hosts, fail mode). Limits of budgets that went away are
  // returned to the store at the next poll.
  void set_config(policy::Fleet config);
  const policy::Fleet& config() const { return config_; }

  // ---- brake::LeaseSource --------------------------------------------------------------------
  brake::Allowance allowance(const brake::FleetLimitRef& ref, double need, int64_t now_ns) override;
  void charge(const brake::FleetLimitRef& ref, double amount, int64_t now_ns) override;
  void settle(const brake::FleetLimitRef& ref, double reserved, double actual, int64_t now_ns) override;
  void cancel(const brake::FleetLimitRef& ref, double reserved, int64_t now_ns) override;

  // ---- the worker's side -----------------------------------------------------------------------
  // The requests due now (at most one in flight per limit).
  std::vector<Request> poll(int64_t now_ns);
  // Applies an answer. True when room may have grown (run the engine's release_ready).
  bool apply(const Reply& reply, int64_t now_ns);
  // The heartbeat's outcome (the worker pings the store every second or so): a failure
  // degrades the book even when no limit is busy; a success with hosts seen restores it.
  bool heartbeat(bool ok, int64_t hosts_seen, const std::string& error, int64_t now_ns);
  // Degraded / restored transitions since the last call.
  std::vector<Transition> take_transitions();

  bool degraded() const { return degraded_; }
  bool ever_connected() const { return ever_connected_; }
  int64_t hosts_seen() const { return hosts_seen_; }
  // For `agentbrake fleet status` (docs/interface.md).
  nlohmann::json status_json(int64_t now_ns) const;

  // The state of one limit, for tests and status.
  struct LimitState {
    std::string key;
    brake::BucketId bucket;
    policy::Limit limit;
    double lease = 0;                // this host's outstanding lease, as last agreed
    double reserved = 0;             // in-flight reservations against it
    double settled = 0;              // settled usage not yet reported
    double reporting = 0;            // reported in the request in flight
    double fleet_used = 0;           // the store's last word: usage + every lease
    double fleet_usage = 0;          // the store's last word: settled usage in the window
    int64_t hosts_seen = 0;
    int64_t valid_until_ns = 0;      // the lease is used until then without a renewal
    int64_t last_charge_ns = 0;
    int64_t last_sent_ns = 0;
    int64_t next_try_ns = 0;
    double demand = 0;               // the largest need found short since the last refill
    bool in_flight = false;
    uint64_t seq = 0;
    double settled_while_apart = 0;  // reported on reconnection (the event's `reconciled`)
    double room() const { return lease - reserved - settled - reporting; }
  };
  const LimitState* find(const std::string& key) const;

 private:
  LimitState& state(const brake::FleetLimitRef& ref);
  double chunk(const LimitState& s) const;
  bool usable(const LimitState& s, int64_t now_ns) const;
  void degrade(const std::string& error, int64_t now_ns);
  void restore(int64_t now_ns);

  policy::Fleet config_;
  LeaseTuning tuning_;
  std::map<std::string, LimitState> limits_;
  uint64_t next_seq_ = 1;
  bool degraded_ = false;
  bool ever_connected_ = false;
  int64_t hosts_seen_ = 1;
  int64_t degraded_since_ns_ = 0;
  std::string last_error_;
  std::vector<Transition> transitions_;
};

}  // namespace ab::fleet

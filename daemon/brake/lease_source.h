// lease_source.h — where a `scope: fleet` bucket's room comes from.
//
// A fleet bucket is shared by every host of the policy's `fleet:` block (docs/fleet.md). The
// budget engine still decides each call locally and at once; for a fleet bucket it asks a
// LeaseSource how much this host may admit: while the fleet store is reachable, the credit
// this host has leased and not yet used; while it is not, what the fail mode allows. The
// engine tells the source what each admitted call charged and how it ended, so the source
// can settle real usage with the store and return what was not used.
//
// The engine calls it on the daemon's event loop only; an implementation never blocks
// (daemon/fleet/lease_book.h keeps the leases in memory and talks to Redis through a worker).
#pragma once

#include <cstdint>

#include "policy/policy.h"

namespace ab::brake {

struct BucketId;

// One limit of one fleet bucket, as the engine knows it.
struct FleetLimitRef {
  const BucketId* bucket = nullptr;
  size_t limit_index = 0;               // index into Budget::limits
  const policy::Limit* limit = nullptr;
  // The source's handle for this limit, kept by the engine beside the limit's window so that
  // a call costs no key lookup (null: none kept). 0 until the source sets it; cleared when the
  // engine's source changes.
  void** slot = nullptr;
};

struct Allowance {
  enum class Kind {
    Lease,   // `room` is this host's unused leased credit: the call fits when need <= room
    Share,   // the store is unreachable (fail: local / open): this host's share of the limit,
             // checked against the host's own window like a host budget
    Closed,  // the store is unreachable (fail: closed): nothing fits
  };
  Kind kind = Kind::Lease;
  double room = 0;                      // Lease
  double share = 0;                     // Share: limit / hosts seen
  bool gates = true;                    // false under fail: open: exceeded only alerts
};

class LeaseSource {
 public:
  virtual ~LeaseSource() = default;
  // How much a call needing `need` may take now. May note the demand (a refill is asked for
  // when the room is short); must not block.
  virtual Allowance allowance(const FleetLimitRef& ref, double need, int64_t now_ns) = 0;
  // An admitted call charged `amount` to this limit (a reservation).
  virtual void charge(const FleetLimitRef& ref, double amount, int64_t now_ns) = 0;
  // The call ended: `reserved` (what charge took) becomes `actual`.
  virtual void settle(const FleetLimitRef& ref, double reserved, double actual, int64_t now_ns) = 0;
  // The call never went out: `reserved` comes back.
  virtual void cancel(const FleetLimitRef& ref, double reserved, int64_t now_ns) = 0;
};

}  // namespace ab::brake

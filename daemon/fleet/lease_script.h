// lease_script.h — the Lua script that leases fleet credit atomically in Redis, and the
// names of the keys it uses. docs/fleet.md describes the data and the bound it gives.
#pragma once

#include <string>
#include <string_view>

namespace ab::fleet {

// Keys of one fleet limit (lease_book.h limit_key): its usage per sub-window and its leases.
std::string usage_key(std::string_view limit_key);   // hash: sub-window index -> settled usage
std::string leases_key(std::string_view limit_key);  // hash: host id -> "amount expiry_ms"
std::string hosts_key();                             // sorted set: host id scored by last seen (ms)

// EVAL/EVALSHA with KEYS = {usage_key, leases_key, hosts_key} and ARGV =
//   host_id, limit, window_ms, sub_ms, want, report, give_back, lease_ttl_ms
// Returns {granted, my_lease, fleet_used, hosts_seen, fleet_usage} (numbers as strings).
// Time is the store's (TIME), so hosts' clocks never meet.
extern const std::string_view kLeaseScript;

// EVAL with KEYS = {hosts_key} and ARGV = host_id, window_ms: the heartbeat; returns the hosts
// seen in the last window_ms.
extern const std::string_view kHeartbeatScript;

}  // namespace ab::fleet

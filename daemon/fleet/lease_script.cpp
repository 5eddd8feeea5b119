#include "fleet/lease_script.h"

namespace ab::fleet {

std::string usage_key(std::string_view limit_key) { return "agentbrake:fleet:{" + std::string(limit_key) + "}:usage"; }
std::string leases_key(std::string_view limit_key) { return "agentbrake:fleet:{" + std::string(limit_key) + "}:leases"; }
std::string hosts_key() { return "agentbrake:fleet:hosts"; }

// Why sub-window counters: the window's usage is the sum of at most window/sub_ms + 1 small
// counters, whatever the call rate. The oldest partly covered sub-window is counted whole, so
// the store's window is never shorter than the limit's: it may only over-count (hold a little
// early), never under-count. Reported usage counts from when it is reported, which is after
// it was admitted: again it stays in the window longer, not shorter.
const std::string_view kLeaseScript = R"lua(
local usage, leases, hosts = KEYS[1], KEYS[2], KEYS[3]
local host = ARGV[1]
local limit = tonumber(ARGV[2])
local window_ms = tonumber(ARGV[3])
local sub_ms = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local report = tonumber(ARGV[6])
local give_back = tonumber(ARGV[7])
local ttl_ms = tonumber(ARGV[8])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = math.floor(now / sub_ms)
local oldest = idx - math.ceil(window_ms / sub_ms)

if report > 0 then redis.call('HINCRBYFLOAT', usage, tostring(idx), tostring(report)) end

local used = 0
local fields = redis.call('HGETALL', usage)
for i = 1, #fields, 2 do
  local k = tonumber(fields[i])
  if k < oldest then redis.call('HDEL', usage, fields[i])
  else used = used + tonumber(fields[i + 1]) end
end
local settled = used

local mine = 0
local all = redis.call('HGETALL', leases)
for i = 1, #all, 2 do
  local amount, expiry = string.match(all[i + 1], '^(%S+) (%S+)$')
  amount, expiry = tonumber(amount), tonumber(expiry)
  if expiry == nil or expiry <= now then redis.call('HDEL', leases, all[i])
  elseif all[i] == host then mine = amount
  else used = used + amount end
end

mine = math.max(0, mine - report - give_back)
used = used + mine

local granted = 0
if want > 0 then
  if used <= 0 then granted = want           -- an empty window admits one call of any size
  else granted = math.max(0, math.min(want, limit - used)) end
end
mine = mine + granted
used = used + granted

if mine > 0 then redis.call('HSET', leases, host, tostring(mine) .. ' ' .. tostring(now + ttl_ms))
else redis.call('HDEL', leases, host) end
redis.call('PEXPIRE', usage, window_ms + sub_ms + ttl_ms)
redis.call('PEXPIRE', leases, window_ms + ttl_ms)

redis.call('ZADD', hosts, now, host)
local seen = redis.call('ZCOUNT', hosts, now - math.max(window_ms, ttl_ms), '+inf')
return {tostring(granted), tostring(mine), tostring(used), tostring(seen), tostring(settled)}
)lua";

const std::string_view kHeartbeatScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window_ms = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
return redis.call('ZCOUNT', KEYS[1], now - window_ms, '+inf')
)lua";

}  // namespace ab::fleet

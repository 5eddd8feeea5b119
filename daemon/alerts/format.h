// format.h — what an alert says: the event it is about, its one-line human summary, the JSON
// a webhook receives, the environment an exec alert runs with, and how a webhook URL is shown.
//
// Everything here is pure (no I/O, no clock).
//
// Secrets: a webhook URL's path and query usually ARE the credential (Slack, Teams, Discord
// put the token there). Anything shown to a person or written anywhere (logs, events, the
// database) names a webhook only by `util::redact_webhook_url`: scheme://host[:port]. Event
// details pass through `util::scrub_detail` before they leave the daemon, as a second line of
// defence (both in util/redact.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ab::alerts {

// One event the daemon offers to the alert rules (see docs/interface.md, "Events").
struct AlertEvent {
  std::string kind;        // budget_exceeded, loop_detected, killed, ...
  std::string cgroup;      // "/agents/a", or empty
  uint32_t pid = 0;        // thread-group id, 0 = none
  std::string comm;
  // Whom the alert is about, for rate limiting: one alert per (rule, entity) per
  // min_interval. Typically the bucket key ("cgroup:/agents/a", "tree:4242"). Empty: the
  // cgroup, else "pid:<pid>" (see `entity_of`).
  std::string entity;
  nlohmann::json detail = nlohmann::json::object();
  int64_t ts_unix_ns = 0;  // wall clock; 0 = stamped when offered
};

// The rate-limit key of an event: `entity`, else "cgroup:<cgroup>", else "pid:<pid>", else
// the kind alone.
std::string entity_of(const AlertEvent& e);

// One line for a person, e.g.
//   "killed /agents/a pid 4242 (python3): reason budget"
//   "budget 'research' exceeded by cgroup:/agents/a: limit 2 spend_usd per 30m, level 2.31, action throttle"
// Control characters become spaces; at most 400 bytes.
std::string summarize(const AlertEvent& e);

// The webhook body: Slack-compatible (`text` is what chat receivers show) with the structured
// event alongside, which they ignore:
//   {"text": "[agentbrake@host] <summary>",
//    "agentbrake": {"rule", "kind", "cgroup", "pid", "comm", "entity", "ts", "host", "detail"}}
nlohmann::json webhook_body(const std::string& rule_name, const AlertEvent& e, const std::string& hostname);

// The complete environment of an exec alert ("NAME=value"): PATH (a fixed safe one) plus
// AGENTBRAKE_RULE, AGENTBRAKE_KIND, AGENTBRAKE_CGROUP, AGENTBRAKE_PID, AGENTBRAKE_COMM,
// AGENTBRAKE_ENTITY, AGENTBRAKE_TS, AGENTBRAKE_HOST, AGENTBRAKE_DETAIL (compact JSON),
// AGENTBRAKE_SUMMARY. Nothing of the daemon's own environment is passed on.
std::vector<std::string> exec_environment(const std::string& rule_name, const AlertEvent& e,
                                          const std::string& hostname);

}  // namespace ab::alerts

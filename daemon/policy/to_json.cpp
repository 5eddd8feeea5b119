// to_json.cpp — the compiled policy as a policy document (for `agentbrake policy show`).
#include "policy/policy.h"

namespace ab::policy {

namespace {

nlohmann::json match_json(const Match& m) {
  nlohmann::json j = nlohmann::json::object();
  if (m.cgroup) j["cgroup"] = *m.cgroup;
  if (m.unit) j["unit"] = *m.unit;
  if (m.exe) j["exe"] = *m.exe;
  if (m.comm) j["comm"] = *m.comm;
  if (m.uid) j["uid"] = *m.uid;
  return j;
}

// Whole numbers print without a fraction (tokens: 500, not 500.0).
nlohmann::json amount_json(LimitKind k, double v) {
  if (k != LimitKind::SpendUsd) return static_cast<int64_t>(v);
  return v;
}

void loop_common(nlohmann::json& j, const LoopRule& r) {
  j["enabled"] = r.enabled;
  j["action"] = std::string(to_string(r.action));
  j["per"] = std::string(to_string(r.per));
  if (!r.match.empty()) j["match"] = match_json(r.match);
}

}  // namespace

nlohmann::json to_json(const Policy& p) {
  nlohmann::json j = nlohmann::json::object();
  j["mode"] = std::string(to_string(p.mode));
  j["retention"] = util::format_policy_duration(p.retention);
  j["retention_max_mb"] = p.retention_max_mb;
  if (p.metrics) j["metrics"] = {{"listen", p.metrics->listen}};
  if (p.otlp)  // the headers file's name only: its content is secret and never read here
    j["otlp"] = {{"endpoint", p.otlp->endpoint},
                 {"headers_file", p.otlp->headers_file},
                 {"metrics_interval", util::format_policy_duration(p.otlp->metrics_interval)}};
  j["max_hold"] = util::format_policy_duration(p.max_hold);
  j["cooldown"] = util::format_policy_duration(p.cooldown);

  j["endpoints"] = nlohmann::json::array();
  for (const Endpoint& e : p.endpoints)
    j["endpoints"].push_back({{"host", e.host}, {"port", e.port}, {"api", e.api}, {"tls", e.tls}});

  j["prices"] = nlohmann::json::object();
  for (const auto& [model, mp] : p.prices) {
    nlohmann::json m = {{"input", mp.input}, {"output", mp.output}};
    if (mp.cache_read) m["cache_read"] = *mp.cache_read;
    if (mp.cache_write) m["cache_write"] = *mp.cache_write;
    j["prices"][model] = m;
  }

  j["budgets"] = nlohmann::json::array();
  for (const Budget& b : p.budgets) {
    nlohmann::json bj = {{"name", b.name}, {"per", std::string(to_string(b.per))},
                         {"action", std::string(to_string(b.action))}};
    if (!b.match.empty()) bj["match"] = match_json(b.match);
    bj["limits"] = nlohmann::json::array();
    for (const Limit& l : b.limits)
      bj["limits"].push_back({{std::string(to_string(l.kind)), amount_json(l.kind, l.amount)},
                              {"window", util::format_policy_duration(l.window)}});
    if (b.max_inflight) bj["max_inflight"] = *b.max_inflight;
    if (b.fleet()) bj["scope"] = "fleet";  // host, the default, is left out
    j["budgets"].push_back(bj);
  }

  nlohmann::json loops = nlohmann::json::object();
  if (p.loops.ping_pong.enabled || p.loops.ping_pong.where.line) {
    nlohmann::json d = {{"max_round_trips", p.loops.ping_pong.max_round_trips},
                        {"window", util::format_policy_duration(p.loops.ping_pong.window)}};
    loop_common(d, p.loops.ping_pong);
    loops["ping_pong"] = d;
  }
  if (p.loops.repetition.enabled || p.loops.repetition.where.line) {
    nlohmann::json d = {{"max_repeats", p.loops.repetition.max_repeats},
                        {"window", util::format_policy_duration(p.loops.repetition.window)},
                        {"hamming", p.loops.repetition.hamming}};
    loop_common(d, p.loops.repetition);
    loops["repetition"] = d;
  }
  if (p.loops.fan_out.enabled || p.loops.fan_out.where.line) {
    nlohmann::json d = {{"max_concurrent", p.loops.fan_out.max_concurrent}};
    loop_common(d, p.loops.fan_out);
    loops["fan_out"] = d;
  }
  if (p.loops.retry_storm.enabled || p.loops.retry_storm.where.line) {
    nlohmann::json d = {{"max_errors", p.loops.retry_storm.max_errors},
                        {"window", util::format_policy_duration(p.loops.retry_storm.window)}};
    loop_common(d, p.loops.retry_storm);
    loops["retry_storm"] = d;
  }
  j["loops"] = loops;

  j["pacing"] = {{"enabled", p.pacing.enabled}};

  if (p.fleet) {  // never the password itself
    nlohmann::json fj = {{"redis", p.fleet->redis}, {"host_id", p.fleet->host_id},
                         {"fail", std::string(to_string(p.fleet->fail))}};
    if (!p.fleet->password_file.empty()) fj["password_file"] = p.fleet->password_file;
    j["fleet"] = fj;
  }

  j["alerts"] = nlohmann::json::array();
  for (const AlertRule& a : p.alerts) {
    nlohmann::json aj = {{"name", a.name}, {"on", a.on}, {"min_interval", util::format_policy_duration(a.min_interval)}};
    if (!a.webhook.empty()) aj["webhook"] = a.webhook;
    if (!a.exec.empty()) aj["exec"] = a.exec;
    j["alerts"].push_back(aj);
  }
  return j;
}

}  // namespace ab::policy

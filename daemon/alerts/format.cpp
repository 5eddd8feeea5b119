#include "alerts/format.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <memory>

#include <fmt/format.h>

#include "util/redact.h"
#include "util/timefmt.h"
#include "util/printable.h"

namespace ab::alerts {

namespace {

// A detail value as a person reads it: strings bare, numbers and the rest as compact JSON.
std::string as_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string field(const nlohmann::json& detail, const char* key) {
  if (!detail.is_object()) return {};
  auto it = detail.find(key);
  if (it == detail.end() || it->is_null()) return {};
  return as_text(*it);
}

// "/agents/a pid 4242 (python3)"
std::string who(const AlertEvent& e) {
  std::string s = e.cgroup;
  if (e.pid != 0) {
    if (!s.empty()) s += ' ';
    s += fmt::format("pid {}", e.pid);
    if (!e.comm.empty()) s += fmt::format(" ({})", e.comm);
  } else if (!e.comm.empty()) {
    if (!s.empty()) s += ' ';
    s += e.comm;
  }
  if (s.empty()) s = e.entity.empty() ? "(unknown)" : e.entity;
  return s;
}

std::string one_line(std::string s, size_t max_bytes) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  if (s.size() > max_bytes) {
    size_t cut = max_bytes - 3;
    // do not split a UTF-8 sequence
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
    s += "...";
  }
  return s;
}

}  // namespace

std::string entity_of(const AlertEvent& e) {
  if (!e.entity.empty()) return e.entity;
  if (!e.cgroup.empty()) return "cgroup:" + e.cgroup;
  if (e.pid != 0) return fmt::format("pid:{}", e.pid);
  return e.kind;
}

std::string summarize(const AlertEvent& e) {
  const nlohmann::json& d = e.detail;
  std::string s;
  if (e.kind == "budget_exceeded") {
    std::string budget = field(d, "budget");
    std::string bucket = field(d, "bucket");
    s = fmt::format("budget '{}' exceeded by {}", budget.empty() ? "?" : budget, bucket.empty() ? who(e) : bucket);
    std::vector<std::string> parts;
    if (std::string limit = field(d, "limit"); !limit.empty()) {
      std::string p = "limit " + limit;
      if (std::string w = field(d, "window"); !w.empty()) p += " per " + w;
      parts.push_back(p);
    }
    if (std::string level = field(d, "level"); !level.empty()) parts.push_back("level " + level);
    if (std::string action = field(d, "action"); !action.empty()) parts.push_back("action " + action);
    for (size_t i = 0; i < parts.size(); ++i) s += (i == 0 ? ": " : ", ") + parts[i];
  } else if (e.kind == "loop_detected") {
    std::string detector = field(d, "detector");
    s = fmt::format("loop detected ({}) in {}", detector.empty() ? "?" : detector, who(e));
    if (d.is_object() && d.contains("members") && d["members"].is_array() && d["members"].size() > 1)
      s += fmt::format(" and {} other process(es)", d["members"].size() - 1);
    if (std::string action = field(d, "action"); !action.empty()) s += ", action " + action;
  } else if (e.kind == "paused" || e.kind == "resumed" || e.kind == "denied" || e.kind == "killed") {
    std::string target = field(d, "target");
    s = fmt::format("{} {}", e.kind, target.empty() ? who(e) : target);
    if (!target.empty() && e.pid != 0) s += fmt::format(" [pid {}{}]", e.pid, e.comm.empty() ? "" : " " + e.comm);
    if (std::string reason = field(d, "reason"); !reason.empty()) s += ": reason " + reason;
    if (d.is_object() && d.value("dry_run", false)) s += " (dry run: nothing enforced)";
  } else if (e.kind == "llm_call") {
    s = fmt::format("LLM call by {}", who(e));
    if (std::string m = field(d, "model"); !m.empty()) s += ": " + m;
    if (d.is_object() && d.contains("input_tokens"))
      s += fmt::format(", {} in / {} out tokens", field(d, "input_tokens"), field(d, "output_tokens"));
    if (std::string c = field(d, "cost_usd"); !c.empty()) s += ", $" + c;
  } else if (e.kind == "alert_failed") {
    s = fmt::format("alert '{}' failed via {}", field(d, "rule"), field(d, "channel"));
    if (std::string err = field(d, "error"); !err.empty()) s += ": " + err;
  } else if (e.kind == "policy_rejected") {
    s = fmt::format("policy rejected: {}", field(d, "source"));
    if (d.is_object() && d.contains("errors") && d["errors"].is_array() && !d["errors"].empty())
      s += " (" + as_text(d["errors"][0]) + (d["errors"].size() > 1 ? ", ..." : "") + ")";
  } else {
    s = fmt::format("{}: {}", e.kind, who(e));
    if (std::string err = field(d, "error"); !err.empty()) s += ": " + err;
  }
  return one_line(std::move(s), 400);
}

nlohmann::json webhook_body(const std::string& rule_name, const AlertEvent& e, const std::string& hostname) {
  std::string prefix = hostname.empty() ? "[agentbrake]" : "[agentbrake@" + hostname + "]";
  nlohmann::json body;
  body["text"] = prefix + " " + summarize(e);
  body["agentbrake"] = {
      {"rule", rule_name},
      {"kind", e.kind},
      {"cgroup", e.cgroup},
      {"pid", e.pid},
      {"comm", e.comm},
      {"entity", entity_of(e)},
      {"ts", util::format_rfc3339(e.ts_unix_ns)},
      {"host", hostname},
      {"detail", util::scrub_detail(e.detail)},
  };
  return body;
}

std::vector<std::string> exec_environment(const std::string& rule_name, const AlertEvent& e,
                                          const std::string& hostname) {
  auto dump = [](const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  return {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "AGENTBRAKE_RULE=" + rule_name,
      "AGENTBRAKE_KIND=" + e.kind,
      // chosen by whoever runs the agent: no control byte reaches a script's echo or log line
      "AGENTBRAKE_CGROUP=" + util::control_escaped(e.cgroup),
      "AGENTBRAKE_PID=" + std::to_string(e.pid),
      "AGENTBRAKE_COMM=" + util::control_escaped(e.comm),
      "AGENTBRAKE_ENTITY=" + util::control_escaped(entity_of(e)),
      "AGENTBRAKE_TS=" + util::format_rfc3339(e.ts_unix_ns),
      "AGENTBRAKE_HOST=" + hostname,
      "AGENTBRAKE_DETAIL=" + dump(util::scrub_detail(e.detail)),
      "AGENTBRAKE_SUMMARY=" + util::control_escaped(summarize(e)),
  };
}

}  // namespace ab::alerts

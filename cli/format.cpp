#include "format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include <fmt/format.h>

#include "util/duration.h"
#include "util/money.h"
#include "util/printable.h"

namespace ab::cli {

using json = nlohmann::json;

// A process name, model or cgroup chosen by whoever runs an agent cannot move the cursor,
// retitle or recolour the terminal.
std::string terminal_safe(const std::string& s) { return util::control_escaped(s); }

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Display width of UTF-8 text (code points; good enough for names and paths).
size_t width_of(const std::string& s) {
  size_t w = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++w;
  return w;
}

// Cuts to at most `w` display columns, marking the cut with "…".
std::string clip(const std::string& s, size_t w) {
  if (width_of(s) <= w) return s;
  if (w == 0) return "";
  std::string out;
  size_t cols = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80) {
      if (cols == w - 1) break;
      ++cols;
    }
    out += s[i];
  }
  return out + "\xE2\x80\xA6";
}

std::string str(const json& o, const char* key, const std::string& dflt = "") {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return dflt;
  if (it->is_string()) return terminal_safe(it->get<std::string>());
  return terminal_safe(dump(*it));
}

int64_t i64(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number()) return 0;
  return it->is_number_float() ? static_cast<int64_t>(it->get<double>()) : it->get<int64_t>();
}

double dbl(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number()) return 0;
  return it->get<double>();
}

// "held" and "denied" may be counts or lists of entities.
std::string count_or_list(const json& v) {
  if (v.is_array()) {
    std::string out = std::to_string(v.size());
    if (!v.empty()) {
      out += " (";
      for (size_t i = 0; i < v.size() && i < 5; ++i) {
        if (i) out += ", ";
        const json& e = v[i];
        if (e.is_object())
          out += e.contains("target") ? str(e, "target") : e.contains("cgroup") ? str(e, "cgroup") : dump(e);
        else
          out += format_scalar(e);
      }
      if (v.size() > 5) out += ", …";
      out += ")";
    }
    return out;
  }
  return format_scalar(v);
}

void flatten(const json& v, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& out) {
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else {
    out.emplace_back(prefix, format_scalar(v));
  }
}

std::string short_pids(const json& pids) {
  if (!pids.is_array()) return format_scalar(pids);
  std::string out;
  for (size_t i = 0; i < pids.size() && i < 3; ++i) {
    if (i) out += ",";
    out += format_scalar(pids[i]);
  }
  if (pids.size() > 3) out += ",+" + std::to_string(pids.size() - 3);
  return out;
}

}  // namespace

// ---- primitives -------------------------------------------------------------------------------

std::string render_table(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows,
                         const std::vector<size_t>& right, const std::vector<std::vector<std::string>>& footer) {
  size_t ncol = headers.size();
  std::vector<size_t> w(ncol, 0);
  auto measure = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < ncol && i < r.size(); ++i) w[i] = std::max(w[i], width_of(terminal_safe(r[i])));
  };
  measure(headers);
  for (const auto& r : rows) measure(r);
  for (const auto& r : footer) measure(r);
  auto is_right = [&](size_t i) { return std::find(right.begin(), right.end(), i) != right.end(); };
  auto line = [&](const std::vector<std::string>& r) {
    std::string out;
    for (size_t i = 0; i < ncol; ++i) {
      std::string cell = i < r.size() ? terminal_safe(r[i]) : "";
      std::string pad(w[i] - width_of(cell), ' ');
      if (i) out += "  ";
      if (is_right(i))
        out += pad + cell;
      else if (i + 1 < ncol)
        out += cell + pad;
      else
        out += cell;  // no trailing spaces
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(headers);
  for (const auto& r : rows) out += line(r);
  if (!footer.empty()) {
    size_t total = 0;
    for (size_t i = 0; i < ncol; ++i) total += w[i] + (i ? 2 : 0);
    out += std::string(total, '-') + "\n";
    for (const auto& r : footer) out += line(r);
  }
  return out;
}

std::string format_count(int64_t n) {
  bool neg = n < 0;
  uint64_t u = neg ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  std::string digits = std::to_string(u);
  std::string out;
  int k = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (k && k % 3 == 0) out += ',';
    out += *it;
    ++k;
  }
  if (neg) out += '-';
  return std::string(out.rbegin(), out.rend());
}

std::string format_rate(double v) {
  char buf[32];
  if (v < 0) v = 0;
  if (v < 1000)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (v < 1e6)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  return buf;
}

std::string format_scalar(const json& v) {
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    if (s.empty() || s.find_first_of(" \t\"=") != std::string::npos) return terminal_safe(dump(v));
    return terminal_safe(s);
  }
  if (v.is_null()) return "-";
  return dump(v);
}

// ---- status -------------------------------------------------------------------------------------

std::string format_fleet_status(const json& f) {
  if (!f.is_object()) return dump(f) + "\n";
  std::string out = "fleet: " + str(f, "state");
  if (f.contains("host_id")) out += ", this host " + str(f, "host_id");
  if (f.contains("redis")) out += ", store " + str(f, "redis");
  if (f.contains("fail")) out += ", fail " + str(f, "fail");
  out += "\n";
  if (f.contains("hosts_seen")) out += "hosts seen: " + format_scalar(f["hosts_seen"]) + "\n";
  if (f.contains("error")) out += "error: " + str(f, "error") + "\n";
  if (f.contains("reason")) out += str(f, "reason") + "\n";
  const json& limits = f.contains("limits") ? f["limits"] : json::array();
  if (!limits.is_array() || limits.empty()) return out + "no fleet bucket in use\n";
  out += fmt::format("{:<16} {:<28} {:<10} {:>8} {:>12} {:>12} {:>10} {:>10}\n", "BUDGET", "BUCKET", "LIMIT",
                     "WINDOW", "MAX", "FLEET_USED", "LEASE", "ROOM");
  for (const json& l : limits) {
    auto n = [&](const char* k) { return l.contains(k) ? format_scalar(l[k]) : std::string("-"); };
    out += fmt::format("{:<16} {:<28} {:<10} {:>8} {:>12} {:>12} {:>10} {:>10}\n", str(l, "budget"), str(l, "bucket"),
                       str(l, "kind"), str(l, "window"), n("limit"), n("fleet_used"), n("lease"), n("room"));
  }
  return out;
}

std::string format_status(const json& s) {
  if (!s.is_object()) return dump(s) + "\n";
  std::vector<std::pair<std::string, std::string>> kv;
  std::set<std::string> shown;
  auto take = [&](const char* key, const std::string& label, const std::function<std::string(const json&)>& f) {
    auto it = s.find(key);
    if (it == s.end()) return;
    kv.emplace_back(label, f(*it));
    shown.insert(key);
  };
  std::string head = "agentbraked";
  if (s.contains("version")) head += " " + str(s, "version");
  if (s.contains("uptime_s"))
    head += ", up " + util::format_uptime(i64(s, "uptime_s"));
  shown.insert("version");
  shown.insert("uptime_s");

  take("policy", "policy", [](const json& p) {
    if (!p.is_object()) return format_scalar(p);
    std::string src = p.contains("source") ? str(p, "source") : p.contains("path") ? str(p, "path") : "";
    std::string extra;
    for (auto it = p.begin(); it != p.end(); ++it)
      if (it.key() != "source" && it.key() != "path" && !it.value().is_structured())
        extra += (extra.empty() ? "" : ", ") + it.key() + "=" + format_scalar(it.value());
    if (src.empty()) return extra.empty() ? dump(p) : extra;
    return extra.empty() ? src : src + " (" + extra + ")";
  });
  take("cgroup_scope", "cgroup scope", [](const json& v) {
    const std::string sc = v.is_string() ? v.get<std::string>() : format_scalar(v);
    return sc == "/" ? std::string("/ (whole host)") : sc + " (cgroups below are relative to it)";
  });
  take("mode", "mode", format_scalar);
  take("dry_run", "dry run", format_scalar);
  take("probes_attached", "probes attached", [](const json& v) { return count_or_list(v); });
  take("watched_processes", "watched processes", [](const json& v) { return count_or_list(v); });
  take("agents", "agents", [](const json& v) { return count_or_list(v); });
  take("held", "held now", [](const json& v) { return count_or_list(v); });
  take("denied", "denied now", [](const json& v) { return count_or_list(v); });
  shown.insert("counters");
  // anything else the daemon reports, so nothing is hidden
  for (auto it = s.begin(); it != s.end(); ++it) {
    if (shown.count(it.key())) continue;
    if (it.value().is_object()) {
      std::vector<std::pair<std::string, std::string>> flat;
      flatten(it.value(), it.key(), flat);
      for (auto& p : flat) kv.push_back(p);
    } else {
      kv.emplace_back(it.key(), it.value().is_array() ? count_or_list(it.value()) : format_scalar(it.value()));
    }
  }

  size_t w = 0;
  for (const auto& [k, v] : kv) w = std::max(w, width_of(k));
  std::string out = head + "\n";
  for (const auto& [k, v] : kv) out += "  " + k + ":" + std::string(w - width_of(k) + 1, ' ') + v + "\n";

  if (auto c = s.find("counters"); c != s.end()) {
    out += "loss counters:\n";
    std::vector<std::pair<std::string, std::string>> flat;
    flatten(*c, "", flat);
    if (flat.empty()) out += "  (none reported)\n";
    size_t cw = 0;
    for (const auto& [k, v] : flat) cw = std::max(cw, width_of(k));
    for (const auto& [k, v] : flat) out += "  " + k + std::string(cw - width_of(k) + 2, ' ') + v + "\n";
  }
  return out;
}

// ---- agents -------------------------------------------------------------------------------------

std::string format_agents(const json& agents) {
  if (!agents.is_array()) return dump(agents) + "\n";
  if (agents.empty()) return "no agents tracked\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : agents) {
    std::string state = str(a, "state", "ok");
    std::string reason = str(a, "reason");
    rows.push_back({str(a, "cgroup", "-"), str(a, "tree_root_pid", "-"), short_pids(a.value("pids", json::array())),
                    str(a, "comm", "-"), str(a, "provider", "-"), str(a, "model", "-"),
                    format_count(i64(a, "calls")), format_count(i64(a, "input_tokens")),
                    format_count(i64(a, "output_tokens")), util::format_usd(dbl(a, "cost_usd")),
                    format_rate(dbl(a, "tokens_per_min")), reason.empty() ? state : state + " (" + reason + ")"});
  }
  return render_table({"CGROUP", "ROOT", "PIDS", "COMM", "PROVIDER", "MODEL", "CALLS", "INPUT", "OUTPUT", "COST",
                       "TOK/MIN", "STATE"},
                      rows, {1, 6, 7, 8, 9, 10});
}

// ---- usage --------------------------------------------------------------------------------------

std::string format_usage(const json& u) {
  std::string by = str(u, "by", "cgroup");
  std::string head = "LLM usage by " + by + " from " + str(u, "since") + " to " + str(u, "until") + "\n";
  const json rows = u.value("rows", json::array());
  if (rows.empty()) return head + "no LLM calls recorded in this period\n";
  std::vector<std::vector<std::string>> out;
  int64_t calls = 0, in = 0, outt = 0, cr = 0, cw = 0, est = 0;
  double cost = 0;
  for (const auto& r : rows) {
    std::string key = str(r, "key");
    out.push_back({key.empty() ? "(unknown)" : key, format_count(i64(r, "calls")), format_count(i64(r, "input_tokens")),
                   format_count(i64(r, "output_tokens")), format_count(i64(r, "cache_read_tokens")),
                   format_count(i64(r, "cache_write_tokens")), util::format_usd(dbl(r, "cost_usd")),
                   format_count(i64(r, "estimated_calls"))});
    calls += i64(r, "calls");
    in += i64(r, "input_tokens");
    outt += i64(r, "output_tokens");
    cr += i64(r, "cache_read_tokens");
    cw += i64(r, "cache_write_tokens");
    cost += dbl(r, "cost_usd");
    est += i64(r, "estimated_calls");
  }
  std::string key_header = by == "process" ? "PID COMM" : by == "cgroup" ? "CGROUP" : by == "model" ? "MODEL" : "PROVIDER";
  std::string table = render_table(
      {key_header, "CALLS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "COST", "ESTIMATED"}, out,
      {1, 2, 3, 4, 5, 6, 7},
      {{"TOTAL", format_count(calls), format_count(in), format_count(outt), format_count(cr), format_count(cw),
        util::format_usd(cost), format_count(est)}});
  std::string note;
  if (est > 0)
    note = "ESTIMATED: calls whose tokens were estimated (no usage on the wire, or cut off)\n";
  return head + table + note;
}

// ---- events -------------------------------------------------------------------------------------

std::string format_event(const json& e) {
  std::string who = str(e, "cgroup");
  if (who.empty()) who = "-";
  std::string proc;
  if (i64(e, "pid") > 0) proc = std::to_string(i64(e, "pid")) + (str(e, "comm").empty() ? "" : " " + str(e, "comm"));
  std::string kind_col = str(e, "kind");
  if (kind_col.size() < 13) kind_col.resize(13, ' ');
  std::string out = str(e, "ts") + "  " + kind_col + "  " + who;
  if (!proc.empty()) out += "  " + proc;
  const json d = e.value("detail", json::object());
  std::string kind = str(e, "kind");
  std::string summary;
  if (kind == "llm_call" && d.is_object()) {
    summary = str(d, "provider", "?") + " " + (str(d, "model").empty() ? "(no model)" : str(d, "model"));
    summary += " " + (i64(d, "status") ? std::to_string(i64(d, "status")) : std::string("no-response"));
    summary += " in=" + std::to_string(i64(d, "input_tokens")) + " out=" + std::to_string(i64(d, "output_tokens"));
    if (i64(d, "cache_read_tokens")) summary += " cache_read=" + std::to_string(i64(d, "cache_read_tokens"));
    if (i64(d, "cache_write_tokens")) summary += " cache_write=" + std::to_string(i64(d, "cache_write_tokens"));
    summary += " " + util::format_usd(dbl(d, "cost_usd"));
    char buf[32];
    std::snprintf(buf, sizeof buf, " %.0fms", dbl(d, "latency_ms"));
    summary += buf;
    if (d.value("stream", false)) summary += " stream";
    if (d.contains("complete") && d["complete"] == false) summary += " cut-off";
    if (d.value("estimated", false))
      summary += " estimated" + (str(d, "estimate_reason").empty() ? "" : "(" + str(d, "estimate_reason") + ")");
    if (!str(d, "error_type").empty()) summary += " error=" + str(d, "error_type");
    if (d.contains("retry_after_s") && d["retry_after_s"].is_number())
      summary += " retry_after=" + format_scalar(d["retry_after_s"]) + "s";
  } else if (d.is_object()) {
    for (auto it = d.begin(); it != d.end(); ++it) {
      if (!summary.empty()) summary += " ";
      summary += it.key() + "=" + format_scalar(it.value());
    }
  } else if (!d.is_null()) {
    summary = dump(d);
  }
  if (!summary.empty()) out += "  " + summary;
  return out;
}

std::string format_action(const std::string& cmd, const std::string& target, const json& result) {
  if (result.is_object() && result.contains("message") && result["message"].is_string())
    return result["message"].get<std::string>() + "\n";
  std::string verb = cmd == "pause" ? "paused" : cmd == "resume" ? "resumed" : cmd == "kill" ? "killed" : cmd;
  std::string out = verb + " " + target;
  if (result.is_object()) {
    if (result.value("dry_run", false)) out += " (dry run: recorded, not enforced)";
    if (result.contains("pids") && result["pids"].is_array() && !result["pids"].empty())
      out += " (" + std::to_string(result["pids"].size()) + " process" + (result["pids"].size() == 1 ? "" : "es") + ")";
  }
  return out + "\n";
}

// ---- targets ------------------------------------------------------------------------------------

std::optional<std::string> normalize_target(const std::string& t, std::string& error) {
  const std::string hint = ": expected a cgroup path starting with '/' (e.g. /agents/research) or a pid";
  if (t.empty()) {
    error = "empty TARGET" + hint;
    return std::nullopt;
  }
  for (unsigned char c : t)
    if (c < 0x20 || c == 0x7f) {
      error = "invalid TARGET: control characters are not allowed";
      return std::nullopt;
    }
  if (t[0] == '/') {
    if (t.size() > 4096) {
      error = "invalid TARGET: cgroup path too long";
      return std::nullopt;
    }
    std::string out;
    size_t i = 0;
    while (i < t.size()) {
      while (i < t.size() && t[i] == '/') ++i;
      size_t j = t.find('/', i);
      if (j == std::string::npos) j = t.size();
      std::string part = t.substr(i, j - i);
      i = j;
      if (part.empty()) continue;
      if (part == "." || part == "..") {
        error = "invalid TARGET '" + t + "': '.' and '..' are not allowed in a cgroup path";
        return std::nullopt;
      }
      out += "/" + part;
    }
    if (out.empty()) {
      error = "refusing TARGET '/': the root cgroup holds every process on the host";
      return std::nullopt;
    }
    return out;
  }
  if (std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (t.size() > 10) {
      error = "invalid TARGET '" + t + "': not a pid";
      return std::nullopt;
    }
    unsigned long long v = std::stoull(t);
    if (v == 0 || v > 4194304) {
      error = "invalid TARGET '" + t + "': not a pid (1..4194304)";
      return std::nullopt;
    }
    if (v == 1) {
      error = "refusing TARGET 1: that is init";
      return std::nullopt;
    }
    return std::to_string(v);
  }
  error = "invalid TARGET '" + t + "'" + hint;
  return std::nullopt;
}

// ---- top ----------------------------------------------------------------------------------------

std::string spark(const std::deque<double>& rates) {
  static constexpr const char* kLevels = " .:-=+*#%@";
  double top = 0;
  for (double r : rates) top = std::max(top, r);
  std::string out;
  for (double r : rates) {
    int level = top > 0 && r > 0 ? 1 + static_cast<int>(r / top * 8.999) : 0;
    out += kLevels[std::min(level, 9)];
  }
  return out;
}

void TopModel::update(const json& agents, double now_s) {
  rows_.clear();
  std::map<std::string, Prev> next;
  if (agents.is_array()) {
    for (const auto& a : agents) {
      if (!a.is_object()) continue;
      TopRow r;
      r.cgroup = str(a, "cgroup", "-");
      r.tree_root_pid = static_cast<uint32_t>(i64(a, "tree_root_pid"));
      r.pids = a.contains("pids") && a["pids"].is_array() ? a["pids"].size() : 0;
      r.comm = str(a, "comm", "-");
      r.provider = str(a, "provider", "-");
      r.model = str(a, "model", "-");
      r.state = str(a, "state", "ok");
      r.reason = str(a, "reason");
      r.calls = i64(a, "calls");
      r.input_tokens = i64(a, "input_tokens");
      r.output_tokens = i64(a, "output_tokens");
      r.cost_usd = dbl(a, "cost_usd");
      r.tokens_per_min = dbl(a, "tokens_per_min");
      std::string key = r.cgroup + "\n" + std::to_string(r.tree_root_pid);
      Prev p{r.cost_usd, now_s, 0, {}};
      if (a.contains("cost_per_hour") && a["cost_per_hour"].is_number()) {
        p.rate = a["cost_per_hour"].get<double>();
      } else if (a.contains("cost_per_min") && a["cost_per_min"].is_number()) {
        p.rate = a["cost_per_min"].get<double>() * 60;
      } else if (auto it = prev_.find(key); it != prev_.end()) {
        double dt = now_s - it->second.t;
        if (dt > 0.05) {
          double d = r.cost_usd - it->second.cost;
          p.rate = d > 0 ? d / dt * 3600 : 0;
        } else {
          p = it->second;  // too soon to measure: keep the previous sample
          p.cost = it->second.cost;
        }
      }
      r.cost_per_hour = p.rate;
      if (auto it = prev_.find(key); it != prev_.end()) p.history = it->second.history;
      p.history.push_back(p.rate);
      while (p.history.size() > kTrendLen) p.history.pop_front();
      r.trend = spark(p.history);
      next[key] = p;
      rows_.push_back(std::move(r));
    }
  }
  prev_ = std::move(next);
  std::stable_sort(rows_.begin(), rows_.end(), [](const TopRow& a, const TopRow& b) {
    if (a.cost_per_hour != b.cost_per_hour) return a.cost_per_hour > b.cost_per_hour;
    if (a.tokens_per_min != b.tokens_per_min) return a.tokens_per_min > b.tokens_per_min;
    if (a.cost_usd != b.cost_usd) return a.cost_usd > b.cost_usd;
    return a.cgroup < b.cgroup;
  });
}

std::string render_top(const std::vector<TopRow>& rows, const std::string& title, size_t width, size_t height) {
  std::vector<std::vector<std::string>> cells;
  double total_rate = 0, total_cost = 0;
  for (const auto& r : rows) {
    total_rate += r.cost_per_hour;
    total_cost += r.cost_usd;
  }
  size_t max_rows = height > 3 ? height - 3 : 0;
  for (size_t i = 0; i < rows.size() && i < max_rows; ++i) {
    const auto& r = rows[i];
    cells.push_back({util::format_usd(r.cost_per_hour) + "/h", "[" + r.trend + std::string(kTrendLen - std::min(kTrendLen, r.trend.size()), ' ') + "]",
                     format_rate(r.tokens_per_min), util::format_usd(r.cost_usd),
                     format_count(r.calls), r.state + (r.reason.empty() ? "" : "(" + r.reason + ")"),
                     r.tree_root_pid ? std::to_string(r.tree_root_pid) : "-", std::to_string(r.pids), r.comm,
                     r.model, r.cgroup});
  }
  std::string head = title + " — " + std::to_string(rows.size()) + " agent" + (rows.size() == 1 ? "" : "s") +
                     ", " + util::format_usd(total_cost) + " spent, " + util::format_usd(total_rate) + "/h now";
  std::string table = render_table(
      {"COST/H", "TREND", "TOK/MIN", "COST", "CALLS", "STATE", "ROOT", "PIDS", "COMM", "MODEL", "CGROUP"}, cells,
      {0, 2, 3, 4, 6, 7});
  if (rows.empty()) table += "(no agents tracked yet)\n";
  else if (rows.size() > max_rows) table += "… " + std::to_string(rows.size() - max_rows) + " more\n";
  std::string out = clip(head, width) + "\n";
  size_t start = 0;
  while (start < table.size()) {
    size_t nl = table.find('\n', start);
    if (nl == std::string::npos) nl = table.size();
    out += clip(table.substr(start, nl - start), width) + "\n";
    start = nl + 1;
  }
  return out;
}

}  // namespace ab::cli

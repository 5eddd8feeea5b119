// report.cpp — the HTML spend report (see report.h).
//
// The page is static: inline CSS, an inline SVG chart, tooltips through <title>, no script,
// no font, no image, no link. Totals come from the store's SQL sums (usage()), the chart and
// the agent table from the calls of the period.
#include "report.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "format.h"
#include "util/duration.h"
#include "util/money.h"
#include "util/timefmt.h"

namespace ab::cli {
namespace {

namespace st = ab::store;
using json = nlohmann::json;

constexpr int64_t kMin = 60 * util::kNsPerSec;
constexpr int64_t kHour = 60 * kMin;
constexpr int64_t kDay = 24 * kHour;

constexpr size_t kMaxSeries = 10;       // cgroups drawn on their own; the rest are "(other)"
constexpr size_t kMaxAgents = 25;       // rows of the top agents table
constexpr size_t kMaxEventRows = 1000;  // newest brake events listed
constexpr const char* kOther = "(other cgroups)";

const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                          "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#7f7f7f"};

std::string esc(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 16);
  for (unsigned char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        // control characters (other than tab/newline) never reach the page
        if (c < 0x20 && c != '\t' && c != '\n') out += "&#xFFFD;";
        else out += static_cast<char>(c);
    }
  }
  return out;
}

// "15m", "3h", "24h", "7d": the largest unit that divides the duration (days from 2 days on).
std::string dur_label(int64_t ns) {
  int64_t s = std::max<int64_t>(ns / util::kNsPerSec, 0);
  if (s >= 2 * 86400 && s % 86400 == 0) return std::to_string(s / 86400) + "d";
  if (s >= 3600 && s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s >= 60 && s % 60 == 0) return std::to_string(s / 60) + "m";
  if (s < 3600) return std::to_string(s) + "s";
  return util::format_duration_short(s);
}

int64_t call_time(const ab::LlmCall& c) { return c.end_unix_ns > 0 ? c.end_unix_ns : c.start_unix_ns; }

std::string cgroup_key(const std::string& cg) { return cg.empty() ? "(no cgroup)" : cg; }

// A "nice" axis step (1, 2, 2.5, 5 × 10^k) giving about `ticks` intervals up to max.
double nice_step(double max, int ticks) {
  if (max <= 0) return 1;
  double raw = max / ticks;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

std::string axis_usd(double v, double step) {
  if (step >= 1) return util::format_usd_fixed(v, 0);
  int decimals = static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  if (step * std::pow(10, decimals) != std::floor(step * std::pow(10, decimals))) ++decimals;
  return util::format_usd_fixed(v, std::clamp(decimals, 0, 6));
}

// ---- detail of one event, shortened for the timeline ----

std::string scalar_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_float()) return fmt::format("{:g}", v.get<double>());
  if (v.is_number()) return v.dump();
  if (v.is_null()) return "null";
  return "";
}

std::string event_summary(const st::EventRow& e) {
  const json& d = e.detail;
  if (!d.is_object()) return d.is_null() ? "" : scalar_text(d);
  static const std::map<std::string, std::vector<std::string>> kPreferred = {
      {"budget_exceeded", {"budget", "bucket", "level", "limit", "window", "action", "dry_run"}},
      {"loop_detected", {"detector", "action", "round_trips", "repeats", "errors", "concurrent",
                         "tokens", "cost_usd", "dry_run"}},
      {"paused", {"target", "reason", "held", "dry_run"}},
      {"resumed", {"target", "reason", "held_s", "dry_run"}},
      {"denied", {"target", "reason", "dry_run"}},
      {"killed", {"target", "reason", "killed", "pids", "dry_run"}},
      {"alert_failed", {"rule", "channel", "error"}},
  };
  std::vector<std::string> keys;
  if (auto it = kPreferred.find(e.kind); it != kPreferred.end()) keys = it->second;
  std::set<std::string> used;
  std::string out;
  auto add = [&](const std::string& k, const json& v) {
    std::string text;
    if (v.is_array()) {
      if (k == "members") text = std::to_string(v.size()) + " members";
      else text = fmt::format("[{} item{}]", v.size(), v.size() == 1 ? "" : "s");
    } else if (v.is_object()) {
      return;
    } else {
      text = scalar_text(v);
    }
    if (!out.empty()) out += ", ";
    out += k == "members" ? text : k + "=" + text;
  };
  for (const auto& k : keys)
    if (d.contains(k)) {
      add(k, d[k]);
      used.insert(k);
    }
  if (d.contains("members") && d["members"].is_array()) {
    add("members", d["members"]);
    used.insert("members");
  }
  for (auto it = d.begin(); it != d.end() && out.size() < 160; ++it)
    if (!used.count(it.key()) && !it.value().is_structured()) add(it.key(), it.value());
  if (out.size() > 240) {
    size_t cut = 237;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // UTF-8 boundary
    out = out.substr(0, cut) + "...";
  }
  return out;
}

const char* kind_color(const std::string& kind) {
  if (kind == "budget_exceeded") return "#e67e22";
  if (kind == "loop_detected") return "#8e44ad";
  if (kind == "paused") return "#d4ac0d";
  if (kind == "resumed") return "#27ae60";
  if (kind == "denied") return "#c0392b";
  if (kind == "killed") return "#7b241c";
  if (kind == "alert_failed") return "#566573";
  return "#566573";
}

// ---- chart ----

struct Series {
  std::string name;
  double total = 0;
  std::vector<double> per_bucket;
};

std::string render_chart(const ReportData& d, std::string& legend) {
  const int W = 960, H = 380, L = 78, R = 20, T = 16, B = 58;
  const int pw = W - L - R, ph = H - T - B;
  int64_t span = std::max<int64_t>(d.until_ns - d.since_ns, kMin);
  int64_t bucket = report_bucket_ns(span);
  int64_t first = d.since_ns - (d.since_ns % bucket + bucket) % bucket;  // aligned to UTC multiples
  size_t nb = static_cast<size_t>((d.until_ns - first + bucket - 1) / bucket);
  nb = std::max<size_t>(nb, 1);

  // series: the most expensive cgroups, the rest folded into one
  std::map<std::string, double> cost_by_cg;
  for (const auto& c : d.calls) cost_by_cg[cgroup_key(c.who.cgroup)] += c.cost_usd;
  std::vector<std::pair<std::string, double>> order(cost_by_cg.begin(), cost_by_cg.end());
  std::stable_sort(order.begin(), order.end(), [](auto& a, auto& b) { return a.second > b.second; });
  std::map<std::string, size_t> index;
  std::vector<Series> series;
  for (const auto& [name, cost] : order) {
    if (series.size() < kMaxSeries || order.size() == kMaxSeries + 1) {
      index[name] = series.size();
      series.push_back({name, 0, std::vector<double>(nb, 0.0)});
    } else {
      if (series.back().name != kOther)
        series.push_back({kOther, 0, std::vector<double>(nb, 0.0)});
      index[name] = series.size() - 1;
    }
  }
  for (const auto& c : d.calls) {
    int64_t t = std::clamp(call_time(c), d.since_ns, d.until_ns);
    size_t b = std::min(nb - 1, static_cast<size_t>((t - first) / bucket));
    auto& s = series[index[cgroup_key(c.who.cgroup)]];
    s.per_bucket[b] += c.cost_usd;
    s.total += c.cost_usd;
  }
  double ymax = 0;
  for (const auto& s : series) ymax = std::max(ymax, s.total);
  double ystep = nice_step(ymax > 0 ? ymax : 1, 5);
  double ytop = std::max(ystep, std::ceil(ymax / ystep - 1e-9) * ystep);

  auto x_of = [&](int64_t t) {
    return L + pw * static_cast<double>(std::clamp(t, d.since_ns, d.until_ns) - d.since_ns) / span;
  };
  auto y_of = [&](double v) { return T + ph - ph * v / ytop; };

  std::string svg = fmt::format(
      "<svg class=\"chart\" viewBox=\"0 0 {} {}\" width=\"{}\" height=\"{}\" role=\"img\" "
      "aria-label=\"cumulative spend per cgroup\">\n",
      W, H, W, H);
  // grid and y axis
  for (double v = 0; v <= ytop + ystep / 2; v += ystep) {
    double y = y_of(v);
    svg += fmt::format("<line class=\"grid\" x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\"/>", L, y, L + pw, y);
    svg += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", L - 6,
                       y + 4, esc(axis_usd(v, ystep)));
  }
  // x axis: ticks at UTC multiples of a step giving about 6 labels
  static const int64_t kTickSteps[] = {kMin,     5 * kMin,  10 * kMin, 15 * kMin, 30 * kMin, kHour, 2 * kHour,
                                       3 * kHour, 6 * kHour, 12 * kHour, kDay,     2 * kDay,  7 * kDay, 14 * kDay,
                                       30 * kDay};
  int64_t tstep = kTickSteps[std::size(kTickSteps) - 1];
  for (int64_t s : kTickSteps)
    if (span / s <= 7) {
      tstep = s;
      break;
    }
  const char* tfmt = tstep >= kDay ? "%m-%d" : (span > kDay ? "%m-%d %H:%M" : "%H:%M");
  for (int64_t t = d.since_ns - (d.since_ns % tstep) + tstep; t <= d.until_ns; t += tstep) {
    double x = x_of(t);
    svg += fmt::format("<line class=\"grid\" x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{}\"/>", x, T, x, T + ph);
    svg += fmt::format("<text class=\"tick\" x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x,
                       T + ph + 16, esc(util::format_utc(t, tfmt)));
  }
  svg += fmt::format("<line class=\"axis\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>", L, T + ph, L + pw, T + ph);
  svg += fmt::format("<line class=\"axis\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n", L, T, L, T + ph);
  svg += fmt::format("<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">time (UTC), {} buckets</text>\n",
                     L + pw / 2, H - 8, esc(dur_label(bucket)));
  svg += fmt::format(
      "<text class=\"label\" transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">cumulative "
      "spend (USD)</text>\n",
      T + ph / 2);

  // brake events along the time axis
  for (const auto& e : d.events) {
    double x = x_of(e.ts_unix_ns);
    svg += fmt::format(
        "<line class=\"event-mark\" x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{}\" stroke=\"{}\"><title>{} {} "
        "{}</title></line>\n",
        x, T + ph - 10, x, T + ph, kind_color(e.kind), esc(util::format_utc(e.ts_unix_ns, "%Y-%m-%d %H:%M:%S")), esc(e.kind),
        esc(e.cgroup));
  }

  // one polyline per series: cumulative spend at the start of the period, then at each bucket end
  legend = "<ul class=\"legend\">\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const char* color = s.name == kOther ? kPalette[std::size(kPalette) - 1] : kPalette[i % (std::size(kPalette) - 1)];
    std::string pts = fmt::format("{:.1f},{:.1f}", x_of(d.since_ns), y_of(0));
    double cum = 0;
    for (size_t b = 0; b < nb; ++b) {
      cum += s.per_bucket[b];
      int64_t t_end = std::min(first + static_cast<int64_t>(b + 1) * bucket, d.until_ns);
      pts += fmt::format(" {:.1f},{:.1f}", x_of(t_end), y_of(cum));
    }
    svg += fmt::format(
        "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" "
        "points=\"{}\"><title>{}: {}</title></polyline>\n",
        esc(s.name), color, pts, esc(s.name), esc(util::format_usd_report(s.total)));
    legend += fmt::format("<li><span class=\"swatch\" style=\"background:{}\"></span>{} <span class=\"num\">{}</span></li>\n",
                          color, esc(s.name), esc(util::format_usd_report(s.total)));
  }
  legend += "</ul>\n";
  if (series.empty()) {
    svg += fmt::format("<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no LLM calls in this period</text>\n",
                       L + pw / 2, T + ph / 2);
    legend.clear();
  }
  svg += "</svg>\n";
  return svg;
}

// ---- tables ----

std::string usage_table(const std::vector<st::UsageRow>& rows, const std::string& key_title, double total_cost) {
  std::string h = "<table>\n<thead><tr><th>" + esc(key_title) +
                  "</th><th class=\"num\">calls</th><th class=\"num\">input tokens</th><th class=\"num\">output "
                  "tokens</th><th class=\"num\">cache read</th><th class=\"num\">cost</th><th class=\"num\">share</th>"
                  "</tr></thead>\n<tbody>\n";
  for (const auto& r : rows) {
    h += fmt::format(
        "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td "
        "class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
        esc(r.key.empty() ? "(none)" : r.key), format_count(r.calls), format_count(r.input_tokens), format_count(r.output_tokens),
        format_count(r.cache_read_tokens), esc(util::format_usd_report(r.cost_usd)),
        total_cost > 0 ? fmt::format("{:.1f}%", 100.0 * r.cost_usd / total_cost) : std::string("-"));
  }
  if (rows.empty()) h += "<tr><td colspan=\"7\" class=\"empty\">none</td></tr>\n";
  h += "</tbody>\n</table>\n";
  return h;
}

struct Agent {
  std::string cgroup, comm;
  uint32_t pid = 0, tree_root = 0;
  int64_t calls = 0, in = 0, out = 0, estimated = 0;
  double cost = 0;
  std::map<std::string, int64_t> models;
  int64_t last = 0;
};

std::string agents_table(const ReportData& d, size_t& shown, size_t& total_agents) {
  std::map<std::tuple<std::string, uint32_t, std::string>, Agent> by;
  for (const auto& c : d.calls) {
    auto& a = by[{c.who.cgroup, c.who.pid, c.who.comm}];
    a.cgroup = c.who.cgroup;
    a.comm = c.who.comm;
    a.pid = c.who.pid;
    a.tree_root = c.who.tree_root_pid;
    a.calls += 1;
    a.in += c.input_tokens;
    a.out += c.output_tokens;
    a.cost += c.cost_usd;
    a.estimated += c.estimated ? 1 : 0;
    a.models[c.model.empty() ? "?" : c.model] += 1;
    a.last = std::max(a.last, call_time(c));
  }
  std::vector<Agent> list;
  for (auto& [k, a] : by) list.push_back(std::move(a));
  std::stable_sort(list.begin(), list.end(), [](const Agent& a, const Agent& b) {
    if (a.cost != b.cost) return a.cost > b.cost;
    return a.calls > b.calls;
  });
  total_agents = list.size();
  shown = std::min(list.size(), kMaxAgents);
  std::string h =
      "<table>\n<thead><tr><th>#</th><th>cgroup</th><th>pid</th><th>process</th><th>tree root</th><th>models</th>"
      "<th class=\"num\">calls</th><th class=\"num\">input tokens</th><th class=\"num\">output tokens</th>"
      "<th class=\"num\">cost</th><th>last call (UTC)</th></tr></thead>\n<tbody>\n";
  for (size_t i = 0; i < shown; ++i) {
    const auto& a = list[i];
    std::vector<std::pair<std::string, int64_t>> ms(a.models.begin(), a.models.end());
    std::stable_sort(ms.begin(), ms.end(), [](auto& x, auto& y) { return x.second > y.second; });
    std::string models;
    for (size_t m = 0; m < ms.size() && m < 3; ++m) models += (m ? ", " : "") + ms[m].first;
    if (ms.size() > 3) models += fmt::format(" +{}", ms.size() - 3);
    h += fmt::format(
        "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>"
        "<td>{}</td><td class=\"num\">{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td "
        "class=\"num\">{}</td><td>{}</td></tr>\n",
        i + 1, esc(cgroup_key(a.cgroup)), a.pid, esc(a.comm), a.tree_root ? std::to_string(a.tree_root) : "-",
        esc(models), format_count(a.calls),
        a.estimated ? fmt::format(" <span class=\"est\" title=\"estimated\">({} est.)</span>", a.estimated) : "",
        format_count(a.in), format_count(a.out), esc(util::format_usd_report(a.cost)), esc(util::format_utc(a.last, "%Y-%m-%d %H:%M:%S")));
  }
  if (list.empty()) h += "<tr><td colspan=\"11\" class=\"empty\">no LLM calls in this period</td></tr>\n";
  h += "</tbody>\n</table>\n";
  return h;
}

std::string events_table(const ReportData& d, std::map<std::string, size_t>& per_kind) {
  for (const auto& e : d.events) per_kind[e.kind] += 1;
  size_t skip = d.events.size() > kMaxEventRows ? d.events.size() - kMaxEventRows : 0;
  std::string h;
  if (skip)
    h += fmt::format("<p class=\"note\">{} older events not listed (the newest {} are).</p>\n", skip, kMaxEventRows);
  h += "<table class=\"events\">\n<thead><tr><th>time (UTC)</th><th>kind</th><th>cgroup</th><th>pid</th>"
       "<th>process</th><th>detail</th></tr></thead>\n<tbody>\n";
  for (size_t i = skip; i < d.events.size(); ++i) {
    const auto& e = d.events[i];
    h += fmt::format(
        "<tr class=\"ev\" data-kind=\"{}\"><td class=\"nowrap\">{}</td><td><span class=\"kind\" "
        "style=\"background:{}\">{}</span></td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>\n",
        esc(e.kind), esc(util::format_rfc3339(e.ts_unix_ns)), kind_color(e.kind), esc(e.kind), esc(e.cgroup),
        e.pid ? std::to_string(e.pid) : "-", esc(e.comm), esc(event_summary(e)));
  }
  if (d.events.empty()) h += "<tr><td colspan=\"6\" class=\"empty\">no brake events in this period</td></tr>\n";
  h += "</tbody>\n</table>\n";
  return h;
}

const char* kStyle = R"(
:root { color-scheme: light dark; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1100px;
       padding: 0 16px; color: #1c2833; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #d5d8dc; padding-bottom: 4px; }
.sub { color: #566573; margin-top: 0; }
.totals { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #d5d8dc; border-radius: 6px; padding: 10px 14px; min-width: 120px; }
.card .v { font-size: 1.35em; font-weight: 600; }
.card .k { color: #566573; font-size: 0.85em; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eaecee; vertical-align: top; }
th { background: #f4f6f7; }
td { word-break: break-word; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.nowrap { white-space: nowrap; }
.empty, .note, .est { color: #7f8c8d; }
.kind { color: #fff; border-radius: 3px; padding: 1px 6px; font-size: 0.85em; white-space: nowrap; }
svg.chart { max-width: 100%; height: auto; }
svg .grid { stroke: #eaecee; stroke-width: 1; }
svg .axis { stroke: #566573; stroke-width: 1; }
svg .tick { font-size: 11px; fill: #566573; }
svg .label { font-size: 12px; fill: #2e4053; }
svg .event-mark { stroke-width: 2; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 0.9em; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
footer { margin-top: 2em; color: #7f8c8d; font-size: 0.85em; }
@media (prefers-color-scheme: dark) {
  body { color: #e5e8e8; background: #17202a; }
  th { background: #212f3d; }
  th, td { border-color: #2c3e50; }
  .card { border-color: #2c3e50; }
  svg .grid { stroke: #2c3e50; }
  svg .tick, svg .label { fill: #aeb6bf; }
}
)";

}  // namespace

const std::vector<std::string>& report_event_kinds() {
  static const std::vector<std::string> k = {"budget_exceeded", "loop_detected", "paused", "resumed",
                                             "denied",          "killed",        "alert_failed"};
  return k;
}

int64_t report_bucket_ns(int64_t span_ns) {
  static const int64_t kBuckets[] = {kMin,      5 * kMin,  15 * kMin,  30 * kMin, kHour,
                                     3 * kHour, 6 * kHour, 12 * kHour, kDay,      7 * kDay};
  for (int64_t b : kBuckets)
    if (span_ns / b <= 120) return b;
  return 30 * kDay;
}

std::string render_html_report(const ReportData& d) {
  std::string legend;
  std::string chart = render_chart(d, legend);
  size_t agents_shown = 0, agents_total = 0;
  std::string agents = agents_table(d, agents_shown, agents_total);
  std::map<std::string, size_t> per_kind;
  std::string events = events_table(d, per_kind);

  std::string period = util::format_rfc3339(d.since_ns, false) + " to " + util::format_rfc3339(d.until_ns, false);
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  h += "<title>agentbrake report — " + esc(d.host) + " — " + esc(period) + "</title>\n";
  h += "<style>" + std::string(kStyle) + "</style>\n</head>\n<body>\n";
  h += "<h1>agentbrake spend report</h1>\n";
  h += "<p class=\"sub\">host <b>" + esc(d.host) + "</b> · " + esc(period) + " (" +
       esc(dur_label(d.until_ns - d.since_ns)) + ")</p>\n";

  const auto& t = d.total;
  auto card = [](const std::string& v, const std::string& k) {
    return "<div class=\"card\"><div class=\"v\">" + esc(v) + "</div><div class=\"k\">" + esc(k) + "</div></div>\n";
  };
  size_t brake_events = d.events.size();
  h += "<div class=\"totals\">\n";
  h += card(util::format_usd_report(t.cost_usd), "spend");
  h += card(format_count(t.calls), "LLM calls");
  h += card(format_count(t.input_tokens), "input tokens");
  h += card(format_count(t.output_tokens), "output tokens");
  h += card(format_count(t.cache_read_tokens), "cache-read tokens");
  h += card(format_count(static_cast<int64_t>(d.by_cgroup.size())), "cgroups");
  h += card(format_count(static_cast<int64_t>(agents_total)), "agent processes");
  h += card(format_count(static_cast<int64_t>(brake_events)), "brake events");
  if (t.estimated_calls) h += card(format_count(t.estimated_calls), "calls with estimated tokens");
  h += "</div>\n";

  h += "<h2>Spend over time per cgroup</h2>\n" + chart + legend;

  h += fmt::format("<h2>Top agents</h2>\n<p class=\"sub\">by cost; one row per process (cgroup, pid, name){}</p>\n",
                   agents_total > agents_shown
                       ? fmt::format(", the {} most expensive of {}", agents_shown, agents_total)
                       : std::string());
  h += agents;
  h += "<h2>Spend per cgroup</h2>\n" + usage_table(d.by_cgroup, "cgroup", t.cost_usd);
  h += "<h2>Spend per model</h2>\n" + usage_table(d.by_model, "model", t.cost_usd);

  h += "<h2>Brake events</h2>\n<p class=\"sub\">";
  if (per_kind.empty()) {
    h += "kinds shown: ";
    for (size_t i = 0; i < report_event_kinds().size(); ++i) h += (i ? ", " : "") + report_event_kinds()[i];
  } else {
    bool first = true;
    for (const auto& [k, n] : per_kind) {
      h += fmt::format("{}{} {}", first ? "" : " · ", esc(k), n);
      first = false;
    }
  }
  h += "</p>\n" + events;

  h += "<footer>generated " + esc(util::format_rfc3339(d.generated_ns, false)) + " by agentbrake report from " +
       esc(d.db_path) + ". Costs are the daemon's price-table estimates in USD.</footer>\n";
  h += "</body>\n</html>\n";
  return h;
}

int run_report(const std::string& db_path, const std::string& html_file, const std::string& since) {
  auto fail = [](const std::string& msg, int rc) {
    std::fprintf(stderr, "agentbrake: %s\n", msg.c_str());
    return rc;
  };
  auto dur = util::parse_duration_ns(since);
  if (!dur)
    return fail("invalid duration '" + since + "' for --since: expected a number and a unit (30s, 10m, 2h, 7d)", 2);
  if (html_file.empty()) return fail("--html needs a file name (or - for standard output)", 2);

  ReportData d;
  d.generated_ns = util::now_unix_ns();
  d.until_ns = d.generated_ns;
  d.since_ns = d.until_ns - *dur;
  d.db_path = db_path;
  char hostbuf[256] = {};
  if (gethostname(hostbuf, sizeof hostbuf - 1) == 0) d.host = hostbuf;
  try {
    auto db = st::Store::open(db_path, st::OpenMode::ReadOnly);
    d.calls = db->calls(d.since_ns, d.until_ns);
    auto cg = db->usage(st::By::Cgroup, d.since_ns, d.until_ns);
    d.by_cgroup = cg.rows;
    d.total = cg.total();
    d.by_model = db->usage(st::By::Model, d.since_ns, d.until_ns).rows;
    st::EventQuery q;
    q.since_ns = d.since_ns;
    q.until_ns = d.until_ns;
    q.kinds = report_event_kinds();
    d.events = db->events(q);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }

  std::string page = render_html_report(d);
  if (html_file == "-") {
    if (std::fwrite(page.data(), 1, page.size(), stdout) != page.size() || std::fflush(stdout) != 0)
      return fail("writing the report to standard output failed", 1);
    return 0;
  }
  {
    std::ofstream f(html_file, std::ios::binary | std::ios::trunc);
    if (!f) return fail("cannot write " + html_file + ": " + std::strerror(errno), 1);
    f.write(page.data(), static_cast<std::streamsize>(page.size()));
    f.close();
    if (!f) return fail("cannot write " + html_file + ": " + std::strerror(errno), 1);
  }
  std::printf("wrote %s: %s, %lld calls, %zu cgroups, %zu brake events (%s)\n", html_file.c_str(),
              util::format_usd_report(d.total.cost_usd).c_str(), static_cast<long long>(d.total.calls), d.by_cgroup.size(),
              d.events.size(), (util::format_rfc3339(d.since_ns, false) + " to " + util::format_rfc3339(d.until_ns, false)).c_str());
  return 0;
}

}  // namespace ab::cli

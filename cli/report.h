// report.h — `agentbrake report --html FILE [--since DUR]`: one self-contained HTML page
// (inline CSS and SVG, no script, no network reference) with the spend of a period read from
// the database: totals, cumulative spend per cgroup over time, the top agents, spend per
// cgroup and per model, and the timeline of brake events.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "protocol/llm_call.h"
#include "store/store.h"

namespace ab::cli {

// Everything the page shows, read beforehand (render_html_report does no I/O).
struct ReportData {
  int64_t since_ns = 0;
  int64_t until_ns = 0;
  int64_t generated_ns = 0;
  std::string host;                          // shown in the title
  std::string db_path;
  std::vector<ab::LlmCall> calls;            // oldest first
  std::vector<ab::store::UsageRow> by_cgroup;  // most expensive first
  std::vector<ab::store::UsageRow> by_model;
  ab::store::UsageRow total;
  std::vector<ab::store::EventRow> events;   // brake events, oldest first
};

// The event kinds shown in the timeline and marked on the chart.
const std::vector<std::string>& report_event_kinds();

// The chart's bucket width for a period: the smallest of 1m, 5m, 15m, 30m, 1h, 3h, 6h, 12h,
// 1d, 7d that cuts the period into at most 120 buckets.
int64_t report_bucket_ns(int64_t span_ns);

// The page. Every string that came from the database is HTML-escaped.
std::string render_html_report(const ReportData& data);

// The whole command: parse --since, read the database (read-only), write FILE ("-" = stdout),
// print a one-line summary to stdout. Errors go to stderr as "agentbrake: ...".
// Returns 0 ok, 1 database missing/unreadable or FILE not writable, 2 bad --since.
int run_report(const std::string& db_path, const std::string& html_file, const std::string& since);

}  // namespace ab::cli

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "alerts/httplib_config.h"
#include "alerts/metrics.h"

using namespace ab::alerts;

namespace {

MetricsSnapshot sample_snapshot() {
  MetricsSnapshot s;
  CgroupMetrics a;
  a.calls = 12;
  a.input_tokens = 5400;
  a.output_tokens = 880;
  a.cost_usd = 0.0123;
  a.holds = {{"budget", 2}, {"capture", 1}};  // every hold, by reason
  a.kills = 1;
  a.held_now = 1;
  s.cgroups["/agents/a"] = a;
  CgroupMetrics odd;
  odd.calls = 1;
  s.cgroups["/agents/we\"ird\\name\nx"] = odd;
  s.cgroups["/agents/latin1-\xe9t\xe9"] = odd;  // not UTF-8: a cgroup name need not be
  s.detector_firings = {{"ping_pong", 2}, {"retry_storm", 0}};
  s.losses = {{"ring_buffer_lost", 7}, {"tls_truncated", 1}, {"alerts_dropped", 0}};
  s.alerts = {{"sent", 4}, {"failed", 1}, {"suppressed", 9}, {"dropped", 0}};
  s.probes_attached = 8;
  s.watched_processes = 3;
  s.uptime_s = 12.5;
  s.version = "0.1.0";
  s.policy_digest = "0123456789abcdef";
  return s;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST(EscapeLabelValue, BackslashQuoteNewline) {
  EXPECT_EQ(escape_label_value("plain/path"), "plain/path");
  EXPECT_EQ(escape_label_value("a\\b"), "a\\\\b");
  EXPECT_EQ(escape_label_value("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(escape_label_value("two\nlines"), "two\\nlines");
}

// Harden L7: the text format must be UTF-8; a cgroup name is any bytes.
TEST(EscapeLabelValue, InvalidUtf8BecomesReplacementCharacter) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(escape_label_value("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(escape_label_value("\xe9t\xe9"), fffd + "t" + fffd);
  EXPECT_EQ(escape_label_value("\xC3"), fffd);                        // truncated
  EXPECT_EQ(escape_label_value("\xC0\xAF"), fffd + fffd);            // overlong '/'
  EXPECT_EQ(escape_label_value("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(escape_label_value("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // above U+10FFFF
}

// Harden L7: cgroup label cardinality is bounded; the busiest keep their label, the rest are
// summed into "_other", and nothing is lost from the totals.
TEST(RenderPrometheus, CgroupLabelsAreBounded) {
  MetricsSnapshot s;
  s.max_cgroup_labels = 3;
  for (int i = 0; i < 10; i++) {
    CgroupMetrics m;
    m.calls = static_cast<uint64_t>(i + 1);
    m.cost_usd = i;  // /cg9 is the biggest spender
    m.holds = {{"budget", 1}};
    s.cgroups["/cg" + std::to_string(i)] = m;
  }
  std::string out = render_prometheus(s);
  for (int i : {9, 8, 7}) EXPECT_TRUE(contains(out, "agentbrake_llm_calls_total{cgroup=\"/cg" + std::to_string(i) + "\"}"));
  for (int i : {0, 6}) EXPECT_FALSE(contains(out, "cgroup=\"/cg" + std::to_string(i) + "\"")) << out;
  EXPECT_TRUE(contains(out, "agentbrake_llm_calls_total{cgroup=\"_other\"} 28\n")) << out;  // 1+..+7
  EXPECT_TRUE(contains(out, "agentbrake_holds_total{cgroup=\"_other\",reason=\"budget\"} 7\n")) << out;
  EXPECT_TRUE(contains(out, "agentbrake_metrics_cgroups_folded 7\n")) << out;
  EXPECT_TRUE(contains(render_prometheus(sample_snapshot()), "agentbrake_metrics_cgroups_folded 0\n"));
}

TEST(RenderPrometheus, FamiliesWithHelpTypeAndSamples) {
  std::string text = render_prometheus(sample_snapshot());
  EXPECT_TRUE(contains(text, "# HELP agentbrake_llm_calls_total "));
  EXPECT_TRUE(contains(text, "# TYPE agentbrake_llm_calls_total counter\n"));
  EXPECT_TRUE(contains(text, "agentbrake_llm_calls_total{cgroup=\"/agents/a\"} 12\n"));
  EXPECT_TRUE(contains(text, "agentbrake_input_tokens_total{cgroup=\"/agents/a\"} 5400\n"));
  EXPECT_TRUE(contains(text, "agentbrake_output_tokens_total{cgroup=\"/agents/a\"} 880\n"));
  EXPECT_TRUE(contains(text, "agentbrake_cost_usd_total{cgroup=\"/agents/a\"} 0.0123\n"));
  EXPECT_TRUE(contains(text, "agentbrake_holds_total{cgroup=\"/agents/a\",reason=\"budget\"} 2\n")) << text;
  EXPECT_TRUE(contains(text, "agentbrake_holds_total{cgroup=\"/agents/a\",reason=\"capture\"} 1\n")) << text;
  EXPECT_TRUE(contains(text, "agentbrake_kills_total{cgroup=\"/agents/a\"} 1\n"));
  EXPECT_TRUE(contains(text, "# TYPE agentbrake_held_processes gauge\n"));
  EXPECT_TRUE(contains(text, "agentbrake_loop_detections_total{detector=\"ping_pong\"} 2\n"));
  EXPECT_TRUE(contains(text, "agentbrake_losses_total{counter=\"ring_buffer_lost\"} 7\n"));
  EXPECT_TRUE(contains(text, "agentbrake_alerts_total{outcome=\"suppressed\"} 9\n"));
  EXPECT_TRUE(contains(text, "# TYPE agentbrake_probes_attached gauge\nagentbrake_probes_attached 8\n"));
  EXPECT_TRUE(contains(text, "agentbrake_watched_processes 3\n"));
  EXPECT_TRUE(contains(text, "agentbrake_uptime_seconds 12.5\n"));
  EXPECT_TRUE(contains(text, "agentbrake_info{version=\"0.1.0\",policy_digest=\"0123456789abcdef\"} 1\n"));
  EXPECT_TRUE(contains(text, "agentbrake_llm_calls_total{cgroup=\"/agents/we\\\"ird\\\\name\\nx\"} 1\n")) << text;
  EXPECT_EQ(text.back(), '\n');
}

TEST(RenderPrometheus, EveryLineIsCommentOrPrefixedSample) {
  std::string text = render_prometheus(sample_snapshot());
  size_t start = 0;
  int samples = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    ASSERT_NE(end, std::string::npos);
    std::string line = text.substr(start, end - start);
    if (line.rfind("# ", 0) != 0) {
      EXPECT_EQ(line.rfind("agentbrake_", 0), 0u) << line;
      ++samples;
    }
    start = end + 1;
  }
  EXPECT_GT(samples, 20);
  // counters end in _total
  for (const char* fam : {"agentbrake_llm_calls", "agentbrake_cost_usd", "agentbrake_losses", "agentbrake_alerts"})
    EXPECT_TRUE(contains(text, std::string("# TYPE ") + fam + "_total counter")) << fam;
}

TEST(RenderPrometheus, EmptySnapshotStillDescribesEveryFamily) {
  std::string text = render_prometheus(MetricsSnapshot{});
  EXPECT_TRUE(contains(text, "# TYPE agentbrake_llm_calls_total counter\n"));
  EXPECT_TRUE(contains(text, "agentbrake_probes_attached 0\n"));
}

TEST(RenderPrometheus, PromtoolAcceptsIt) {
  if (std::system("test -x /usr/bin/promtool") != 0) GTEST_SKIP() << "promtool not installed";
  char path[] = "/tmp/ab_metrics_XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << render_prometheus(sample_snapshot());
  std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " > /dev/null 2>&1";
  int rc = std::system(cmd.c_str());
  std::remove(path);
  EXPECT_EQ(rc, 0);
}

TEST(MetricsServer, ServesTheLatestSnapshotOnLoopback) {
  MetricsServer server;
  std::string error;
  ASSERT_TRUE(server.start("127.0.0.1", 0, &error)) << error;
  ASSERT_GT(server.bound_port(), 0);
  EXPECT_TRUE(server.running());

  httplib::Client client("127.0.0.1", server.bound_port());
  client.set_connection_timeout(std::chrono::seconds(2));
  client.set_read_timeout(std::chrono::seconds(2));

  auto before = client.Get("/metrics");
  ASSERT_TRUE(before);
  EXPECT_EQ(before->status, 200);
  EXPECT_TRUE(contains(before->body, "agentbrake_probes_attached 0\n"));

  server.publish(sample_snapshot());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), kPrometheusContentType);
  EXPECT_EQ(res->body, render_prometheus(sample_snapshot()));
  EXPECT_EQ(server.scrapes(), 2u);

  auto missing = client.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  uint16_t port = server.bound_port();
  server.stop();
  EXPECT_FALSE(server.running());
  httplib::Client old("127.0.0.1", port);
  old.set_connection_timeout(std::chrono::milliseconds(500));
  EXPECT_FALSE(old.Get("/metrics"));
}

TEST(MetricsServer, StartStopRightAwayAndRebind) {
  MetricsServer server;
  ASSERT_TRUE(server.start("127.0.0.1", 0));
  uint16_t port = server.bound_port();
  server.stop();
  server.stop();  // idempotent
  ASSERT_TRUE(server.start("127.0.0.1", port));  // the port is free again
  EXPECT_EQ(server.bound_port(), port);
  std::string error;
  EXPECT_FALSE(server.start("127.0.0.1", 0, &error));  // already running
  EXPECT_FALSE(error.empty());
}

TEST(MetricsServer, BusyPortIsAnError) {
  MetricsServer first, second;
  ASSERT_TRUE(first.start("127.0.0.1", 0));
  std::string error;
  EXPECT_FALSE(second.start("127.0.0.1", first.bound_port(), &error));
  EXPECT_NE(error.find("cannot listen"), std::string::npos);
}

// agentbrake_losses_total carries loss counters only: the shipped AgentbrakeCaptureLoss rule
// fires on any of them growing, so a counter of normal work there fires it under normal traffic.
TEST(LossCounters, LossesAreLossesAndNormalWorkIsNot) {
  for (const char* loss : {"ring_buffer_lost", "tls_truncated_calls", "tls_truncated_lost_bytes",
                           "holds_skipped_ring_full", "tls_read_errors", "dns_parse_errors", "capture_gaps",
                           "capture_gap_bytes", "malformed_tls_records", "unparsed_http_errors", "unparsed_bytes",
                           "streams_evicted", "store_dropped_writes", "store_write_errors", "alerts_dropped",
                           "alerts_failed", "malformed_records", "ring_buffer_consume_errors",
                           "connects_recovered_from_map", "attach_failures", "stale_capture_holds_released"})
    EXPECT_TRUE(is_loss_counter(loss)) << loss;
  for (const char* work : {"tls_records", "calls", "attaches", "alerts_sent", "alerts_suppressed", "holds_taken",
                           "gate_requests_passed", "gate_requests_held", "capture_holds", "budget_holds",
                           "loop_holds", "pacing_holds", "estimated_calls", "unpriced_calls",
                           "processes_without_openssl", "holds_released_at_once", "capture_hold_events_unrecorded"})
    EXPECT_FALSE(is_loss_counter(work)) << work;
}

TEST(RenderPrometheus, ActivityCountersHaveTheirOwnFamily) {
  MetricsSnapshot s = sample_snapshot();
  s.activity = {{"tls_records", 120}, {"calls", 12}};
  std::string text = render_prometheus(s);
  EXPECT_TRUE(contains(text, "# TYPE agentbrake_activity_total counter\n")) << text;
  EXPECT_TRUE(contains(text, "agentbrake_activity_total{counter=\"tls_records\"} 120\n")) << text;
  EXPECT_FALSE(contains(text, "agentbrake_losses_total{counter=\"tls_records\"}")) << text;
  EXPECT_TRUE(contains(render_prometheus(MetricsSnapshot{}), "# TYPE agentbrake_activity_total counter\n"));
}

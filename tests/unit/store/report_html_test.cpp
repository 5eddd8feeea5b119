// Black-box tests of `agentbrake report --html FILE [--since DUR]` against a database written
// by the real Store: the page is self-contained, well-formed enough, shows one chart series
// per cgroup with a point per interval, the agents and the brake events, escapes everything
// that came from the DB, and renders in headless Chromium (the screenshot is kept as a test
// artifact in <build>/tests/artifacts/).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "../control/cli_runner.h"
#include "store/store.h"
#include "util/timefmt.h"

using namespace ab::store;
using ab::util::format_rfc3339;
using ab::util::kNsPerSec;
using ab::util::now_unix_ns;
using ab::testing::run_cli;
namespace fs = std::filesystem;

namespace {

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Checks that the tags of the page nest properly (void elements and self-closing SVG elements
// aside). Returns "" when they do, otherwise a description of the first problem.
std::string check_nesting(const std::string& html) {
  static const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link"};
  std::vector<std::string> stack;
  std::regex tag(R"(<(/?)([a-zA-Z][a-zA-Z0-9]*)([^<>]*?)(/?)>)");
  size_t body_start = html.find("<html");
  if (body_start == std::string::npos) return "no <html>";
  std::string s = html.substr(body_start);
  // the stylesheet holds no tags, but skip it anyway
  size_t st = s.find("<style>"), se = s.find("</style>");
  if (st != std::string::npos && se != std::string::npos) s.erase(st + 7, se - st - 7);
  for (auto it = std::sregex_iterator(s.begin(), s.end(), tag); it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    std::string name = m[2];
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    if (m[1] == "/") {
      if (stack.empty() || stack.back() != name)
        return "unexpected </" + name + "> (open: " + (stack.empty() ? "none" : stack.back()) + ")";
      stack.pop_back();
    } else if (m[4] != "/" && !kVoid.count(name)) {
      stack.push_back(name);
    }
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  return "";
}

class ReportHtml : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ab::testing::agentbrake_binary().empty()) GTEST_SKIP() << "agentbrake binary not built";
    char tmpl[] = "/tmp/ab-report-XXXXXX";
    dir = mkdtemp(tmpl);
    db = (dir / "agentbrake.db").string();
    out = (dir / "report.html").string();
    auto store = Store::open(db, OpenMode::ReadWrite);
    now = now_unix_ns();
    auto call = [&](int64_t ago_s, const std::string& cg, uint32_t pid, const std::string& comm,
                    const char* model, double cost) {
      ab::LlmCall c;
      c.end_unix_ns = now - ago_s * kNsPerSec;
      c.start_unix_ns = c.end_unix_ns - 200'000'000;
      c.who.pid = pid;
      c.who.comm = comm;
      c.who.cgroup = cg;
      c.who.tree_root_pid = pid;
      c.model = model;
      c.provider = "openai";
      c.api = "openai";
      c.input_tokens = 1000;
      c.output_tokens = 100;
      c.cost_usd = cost;
      c.status = 200;
      c.complete = true;
      store->add_call(c);
    };
    // three cgroups within the last 2 hours, one of them with a name that needs escaping
    for (int i = 0; i < 6; ++i) call(7000 - i * 1000, "/agents/research", 100, "python3", "gpt-4o-mini", 0.3);
    for (int i = 0; i < 3; ++i) call(5000 - i * 1200, "/agents/coder", 200, "node", "claude-3-5-haiku", 0.5);
    call(600, "/agents/<evil>&\"x'", 300, "<script>alert(1)</script>", "m<1>", 0.125);
    call(3 * 86400, "/agents/ancient", 400, "old", "gpt-4o", 9.0);  // outside the default 24h
    auto ev = [&](int64_t ago_s, const char* kind, const std::string& cg, uint32_t pid, nlohmann::json detail) {
      store->add_event(Event{now - ago_s * kNsPerSec, kind, cg, pid, "python3", std::move(detail)});
    };
    ev(3000, "budget_exceeded", "/agents/research", 100,
       {{"budget", "research"}, {"bucket", "/agents/research"}, {"limit", "spend 1 USD / 1h"}, {"action", "throttle"}});
    ev(2900, "paused", "/agents/research", 100, {{"target", "/agents/research"}, {"reason", "budget"}, {"dry_run", false}});
    ev(2000, "resumed", "/agents/research", 100, {{"target", "/agents/research"}, {"reason", "budget"}});
    ev(1500, "loop_detected", "/agents/coder", 200,
       {{"detector", "ping_pong"}, {"action", "kill"}, {"members", {{{"pid", 200}}, {{"pid", 201}}}}});
    ev(1400, "killed", "/agents/coder", 200, {{"target", "/agents/coder"}, {"reason", "loop"}});
    ev(1300, "denied", "/agents/coder", 200, {{"target", "/agents/coder"}, {"reason", "manual"}});
    ev(1200, "alert_failed", "", 0, {{"rule", "0"}, {"channel", "hooks.example.com"}, {"error", "timeout <5s>"}});
    ev(1100, "policy_loaded", "", 0, {{"source", "/etc/agentbrake/policy.d"}});  // not a brake event
    store->flush();
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
  ab::testing::CliResult report(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--db", db, "report", "--html", out};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  }
  fs::path dir;
  std::string db, out;
  int64_t now = 0;
};

}  // namespace

TEST_F(ReportHtml, WritesASelfContainedPage) {
  auto r = report();
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + out), std::string::npos) << r.out;
  std::string html = slurp(out);
  ASSERT_FALSE(html.empty());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<meta charset=\"utf-8\">"), std::string::npos);
  EXPECT_EQ(check_nesting(html), "");
  EXPECT_EQ(count_of(html, "<svg"), 1u);
  EXPECT_EQ(count_of(html, "</svg>"), 1u);
  // nothing is fetched from anywhere
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
}

TEST_F(ReportHtml, OneSeriesPerCgroupWithLegendAndAxes) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(count_of(html, "<polyline class=\"series\""), 3u) << "3 cgroups in the last 24h";
  for (const char* cg : {"/agents/research", "/agents/coder", "/agents/&lt;evil&gt;&amp;&quot;x&#39;"})
    EXPECT_NE(html.find(std::string("data-series=\"") + cg + "\""), std::string::npos) << cg;
  EXPECT_EQ(html.find("/agents/ancient"), std::string::npos) << "3 days old: outside --since 24h";
  // the most expensive series first; each line ends at its total
  EXPECT_LT(html.find("data-series=\"/agents/research\""), html.find("data-series=\"/agents/coder\""));
  EXPECT_NE(html.find("class=\"legend\""), std::string::npos);
  EXPECT_NE(html.find("/agents/research <span class=\"num\">$1.800</span>"), std::string::npos);
  EXPECT_NE(html.find("cumulative spend (USD)"), std::string::npos);
  EXPECT_NE(html.find("time (UTC)"), std::string::npos);
  EXPECT_NE(html.find("15m buckets"), std::string::npos) << "24h span: 15 minute buckets";
  // totals: 10 calls, $3.425
  EXPECT_NE(html.find("$3.425"), std::string::npos);
  EXPECT_NE(html.find(">10<"), std::string::npos);
}

TEST_F(ReportHtml, EscapesEverythingFromTheDatabase) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(html.find("<evil>"), std::string::npos);
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  EXPECT_EQ(html.find("m<1>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("m&lt;1&gt;"), std::string::npos);
  EXPECT_NE(html.find("timeout &lt;5s&gt;"), std::string::npos);
}

TEST_F(ReportHtml, TopAgentsTable) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  size_t top = html.find("<h2>Top agents</h2>");
  ASSERT_NE(top, std::string::npos);
  size_t end = html.find("</table>", top);
  std::string table = html.substr(top, end - top);
  // research ($1.80) before coder ($1.50) before the escaped one ($0.125)
  size_t a = table.find("/agents/research"), b = table.find("/agents/coder"), c = table.find("/agents/&lt;evil");
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(c, std::string::npos);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_NE(table.find("python3"), std::string::npos);
  EXPECT_NE(table.find("gpt-4o-mini"), std::string::npos);
  EXPECT_NE(table.find("6,000"), std::string::npos) << "input tokens of research";
}

TEST_F(ReportHtml, BrakeEventTimeline) {
  ASSERT_EQ(report().rc, 0);
  std::string html = slurp(out);
  std::map<std::string, size_t> rows;
  std::regex ev("<tr class=\"ev\" data-kind=\"([a-z_]+)\">");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), ev); it != std::sregex_iterator(); ++it)
    rows[(*it)[1]] += 1;
  for (const char* k : {"budget_exceeded", "paused", "resumed", "loop_detected", "killed", "denied", "alert_failed"})
    EXPECT_EQ(rows[k], 1u) << k;
  EXPECT_EQ(rows.count("policy_loaded"), 0u);
  EXPECT_EQ(rows.count("llm_call"), 0u);
  // oldest first, with time, cgroup, pid and a short detail
  EXPECT_LT(html.find("data-kind=\"budget_exceeded\""), html.find("data-kind=\"killed\""));
  EXPECT_NE(html.find(format_rfc3339(now - 1400 * kNsPerSec)), std::string::npos);
  EXPECT_NE(html.find("budget=research"), std::string::npos);
  EXPECT_NE(html.find("detector=ping_pong, action=kill, 2 members"), std::string::npos);
  EXPECT_NE(html.find("target=/agents/coder, reason=loop"), std::string::npos);
  // and marked on the chart
  EXPECT_EQ(count_of(html, "class=\"event-mark\""), 7u);
}

TEST_F(ReportHtml, SinceNarrowsThePeriod) {
  ASSERT_EQ(report({"--since", "15m"}).rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(count_of(html, "<polyline class=\"series\""), 1u) << "only the escaped cgroup called in the last 15m";
  EXPECT_NE(html.find("1m buckets"), std::string::npos);
  EXPECT_EQ(html.find("data-kind=\"killed\""), std::string::npos);
  ASSERT_EQ(report({"--since", "7d"}).rc, 0);
  html = slurp(out);
  EXPECT_EQ(count_of(html, "<polyline class=\"series\""), 4u);
  EXPECT_NE(html.find("data-series=\"/agents/ancient\""), std::string::npos);
}

TEST_F(ReportHtml, EmptyPeriodStillAPage) {
  ASSERT_EQ(report({"--since", "10s"}).rc, 0);
  std::string html = slurp(out);
  EXPECT_EQ(check_nesting(html), "");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("no LLM calls in this period"), std::string::npos);
  EXPECT_NE(html.find("no brake events in this period"), std::string::npos);
}

TEST_F(ReportHtml, Errors) {
  auto bad = report({"--since", "5x"});
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("invalid duration '5x'"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(out)) << "nothing written on bad usage";

  auto missing = run_cli({"--db", (dir / "nope.db").string(), "report", "--html", out});
  EXPECT_EQ(missing.rc, 1);
  EXPECT_NE(missing.err.find("nope.db"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(out));

  auto unwritable = run_cli({"--db", db, "report", "--html", (dir / "no-such-dir" / "r.html").string()});
  EXPECT_EQ(unwritable.rc, 1);
  EXPECT_NE(unwritable.err.find("cannot write"), std::string::npos) << unwritable.err;

  auto no_html = run_cli({"--db", db, "report"});
  EXPECT_EQ(no_html.rc, 2);
}

TEST_F(ReportHtml, DashWritesToStdout) {
  auto r = run_cli({"--db", db, "report", "--html", "-", "--since", "2h"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(check_nesting(r.out), "");
}

// ---- the chart: a point per interval; the page in headless Chromium ----

namespace {

struct Polyline {
  std::string series;
  std::vector<std::pair<double, double>> pts;
};

std::vector<Polyline> series_polylines(const std::string& html) {
  std::vector<Polyline> out;
  std::regex re(R"re(<polyline class="series" data-series="([^"]*)"[^>]*? points="([^"]*)")re");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), re); it != std::sregex_iterator(); ++it) {
    Polyline p;
    p.series = (*it)[1];
    std::istringstream in((*it)[2].str());
    std::string xy;
    while (in >> xy) {
      size_t comma = xy.find(',');
      if (comma == std::string::npos) break;
      p.pts.emplace_back(std::stod(xy.substr(0, comma)), std::stod(xy.substr(comma + 1)));
    }
    out.push_back(std::move(p));
  }
  return out;
}

// An 8-bit RGB(A), non-interlaced PNG decoded to RGB (what Chromium writes for screenshots).
struct Image {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // width*height*3
  std::string error;
};

std::string fmt_unsupported(int depth, int color, int interlace) {
  return "unsupported PNG: depth " + std::to_string(depth) + ", colour type " + std::to_string(color) +
         ", interlace " + std::to_string(interlace);
}

Image decode_png(const std::string& data) {
  Image img;
  auto fail = [&](std::string why) {
    img.error = std::move(why);
    return img;
  };
  static const char kSig[] = "\x89PNG\r\n\x1a\n";
  if (data.size() < 8 || data.compare(0, 8, kSig, 8) != 0) return fail("not a PNG");
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(data[at])) << 24) | (uint32_t(uint8_t(data[at + 1])) << 16) |
           (uint32_t(uint8_t(data[at + 2])) << 8) | uint32_t(uint8_t(data[at + 3]));
  };
  int depth = 0, color = -1, interlace = 0;
  std::string idat;
  bool iend = false;
  for (size_t at = 8; at + 12 <= data.size();) {
    uint32_t len = be32(at);
    std::string type = data.substr(at + 4, 4);
    if (at + 12 + len > data.size()) return fail("truncated chunk " + type);
    size_t body = at + 8;
    if (type == "IHDR" && len >= 13) {
      img.width = be32(body);
      img.height = be32(body + 4);
      depth = uint8_t(data[body + 8]);
      color = uint8_t(data[body + 9]);
      interlace = uint8_t(data[body + 12]);
    } else if (type == "IDAT") {
      idat.append(data, body, len);
    } else if (type == "IEND") {
      iend = true;
      break;
    }
    at = body + len + 4;  // + CRC
  }
  if (!iend) return fail("no IEND");
  if (img.width == 0 || img.height == 0 || img.width > 20000 || img.height > 20000)
    return fail("bad size");
  if (depth != 8 || (color != 2 && color != 6) || interlace != 0)
    return fail(fmt_unsupported(depth, color, interlace));
  const size_t bpp = color == 6 ? 4 : 3, stride = img.width * bpp;
  std::vector<uint8_t> raw(img.height * (stride + 1));
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK ||
      raw_len != raw.size())
    return fail("IDAT does not inflate to the image size");
  std::vector<uint8_t> prev(stride, 0), cur(stride);
  img.rgb.reserve(size_t(img.width) * img.height * 3);
  for (uint32_t y = 0; y < img.height; ++y) {
    const uint8_t* row = raw.data() + y * (stride + 1);
    uint8_t filter = row[0];
    for (size_t i = 0; i < stride; ++i) {
      int a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      int pred = 0;
      switch (filter) {
        case 0: pred = 0; break;
        case 1: pred = a; break;
        case 2: pred = b; break;
        case 3: pred = (a + b) / 2; break;
        case 4: {
          int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
          break;
        }
        default: return fail("bad filter type " + std::to_string(filter));
      }
      cur[i] = uint8_t(row[1 + i] + pred);
    }
    for (size_t x = 0; x < img.width; ++x)
      img.rgb.insert(img.rgb.end(), cur.begin() + x * bpp, cur.begin() + x * bpp + 3);
    std::swap(prev, cur);
  }
  return img;
}

std::string find_in_path(const std::vector<std::string>& names) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (const auto& n : names) {
    std::istringstream in(dirs);
    std::string d;
    while (std::getline(in, d, ':'))
      if (!d.empty() && access((fs::path(d) / n).c_str(), X_OK) == 0) return (fs::path(d) / n).string();
  }
  return "";
}

// Runs a program in its own process group with HOME=home, output to log; kills the group after
// timeout_s. Returns the exit status, 128+signal, or -2 on timeout.
int run_with_timeout(const std::string& bin, const std::vector<std::string>& args, const std::string& home,
                     const std::string& log, int timeout_s) {
  std::vector<std::string> envs;
  for (char** ep = environ; *ep; ++ep)
    if (std::strncmp(*ep, "HOME=", 5) != 0) envs.push_back(*ep);
  envs.push_back("HOME=" + home);
  std::vector<char*> argv, envp;
  argv.push_back(const_cast<char*>(bin.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& kv : envs) envp.push_back(kv.data());
  envp.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setpgid(0, 0);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int devnull = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (devnull >= 0) dup2(devnull, 0);
    execve(bin.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  setpgid(pid, pid);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int st = 0, rc = -2;
  while (true) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    if (std::chrono::steady_clock::now() > until) {
      kill(-pid, SIGKILL);
      waitpid(pid, &st, 0);
      break;
    }
    usleep(20000);
  }
  kill(-pid, SIGKILL);  // helpers the browser left behind in its group, if any
  return rc;
}

fs::path artifacts_dir() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);  // <build>/tests/unit_store
  fs::path d = (ec ? fs::temp_directory_path() : self.parent_path()) / "artifacts";
  fs::create_directories(d, ec);
  return d;
}

}  // namespace

// 3 hours: 5-minute buckets; the calls of the 3 cgroups fall in 6, 3 and 1 distinct buckets.
TEST_F(ReportHtml, ChartHasAPointPerIntervalPerSeries) {
  ASSERT_EQ(report({"--since", "3h"}).rc, 0);
  std::string html = slurp(out);
  ASSERT_NE(html.find("5m buckets"), std::string::npos);
  const int64_t span = 3 * 3600 * kNsPerSec, bucket = 300 * kNsPerSec;
  // the period starts off a bucket boundary (now is not a multiple of 5 minutes, to the
  // nanosecond), so it spans span/bucket whole buckets plus the two partial ends
  const size_t intervals = span / bucket + 1;

  // the buckets (by UTC multiple of 5 minutes) in which each cgroup called
  std::map<std::string, std::set<int64_t>> buckets_of = {
      {"/agents/research", {}}, {"/agents/coder", {}}, {"/agents/&lt;evil&gt;&amp;&quot;x&#39;", {}}};
  for (int i = 0; i < 6; ++i) buckets_of["/agents/research"].insert((now - (7000 - i * 1000) * kNsPerSec) / bucket);
  for (int i = 0; i < 3; ++i) buckets_of["/agents/coder"].insert((now - (5000 - i * 1200) * kNsPerSec) / bucket);
  buckets_of["/agents/&lt;evil&gt;&amp;&quot;x&#39;"].insert((now - 600 * kNsPerSec) / bucket);

  auto lines = series_polylines(html);
  ASSERT_EQ(lines.size(), 3u);
  double x0 = lines[0].pts.front().first, x1 = lines[0].pts.back().first;
  ASSERT_GT(x1, x0);
  const double step = (x1 - x0) * static_cast<double>(bucket) / static_cast<double>(span);
  for (const auto& l : lines) {
    SCOPED_TRACE(l.series);
    ASSERT_TRUE(buckets_of.count(l.series));
    // the start of the period, then one vertex at the end of each interval
    ASSERT_EQ(l.pts.size(), intervals + 1);
    EXPECT_DOUBLE_EQ(l.pts.front().first, x0);
    EXPECT_DOUBLE_EQ(l.pts.back().first, x1);
    for (size_t i = 1; i < l.pts.size(); ++i) {
      double dx = l.pts[i].first - l.pts[i - 1].first;
      EXPECT_GT(dx, 0) << "vertex " << i;
      if (i == 1 || i + 1 == l.pts.size()) EXPECT_LE(dx, step + 0.15) << "partial interval, vertex " << i;
      else EXPECT_NEAR(dx, step, 0.15) << "vertex " << i;
    }
    // cumulative: starts at zero (the x axis), never falls, rises once per bucket with calls
    EXPECT_DOUBLE_EQ(l.pts.front().second, lines[0].pts.front().second);
    size_t rises = 0;
    for (size_t i = 1; i < l.pts.size(); ++i) {
      EXPECT_LE(l.pts[i].second, l.pts[i - 1].second) << "vertex " << i << ": spend fell";
      if (l.pts[i].second < l.pts[i - 1].second - 0.05) ++rises;
    }
    EXPECT_EQ(rises, buckets_of[l.series].size());
  }
  // equal calls rise equally: research's six $0.30 steps
  const auto& research = lines[0];
  ASSERT_EQ(research.series, "/agents/research");
  std::vector<double> drops;
  for (size_t i = 1; i < research.pts.size(); ++i)
    if (research.pts[i].second < research.pts[i - 1].second - 0.05)
      drops.push_back(research.pts[i - 1].second - research.pts[i].second);
  ASSERT_EQ(drops.size(), 6u);
  for (double d : drops) EXPECT_NEAR(d, drops[0], 0.25);

  // nothing in the page refers outside it
  std::smatch m;
  EXPECT_FALSE(std::regex_search(html, m, std::regex(R"([a-zA-Z][a-zA-Z0-9+.-]*://)"))) << m.str();
  for (const char* ref : {"href", "src=", "url(", "@import", "<image", "<use", "<foreignObject", "<iframe", "<object",
                          "<embed", "<link", "<script"})
    EXPECT_EQ(html.find(ref), std::string::npos) << ref;
}

TEST_F(ReportHtml, RendersInHeadlessChromium) {
  std::string chromium = find_in_path({"chromium", "chromium-browser"});
  if (chromium.empty()) {
    const char* req = std::getenv("AGENTBRAKE_REQUIRE_BPF");
    if (req && std::string(req) == "1") FAIL() << "chromium is not installed (scripts/setup.sh installs it)";
    GTEST_SKIP() << "chromium is not installed";
  }
  ASSERT_EQ(report({"--since", "3h"}).rc, 0);
  fs::path art = artifacts_dir();
  fs::path page = art / "report.html", png = art / "report.png", log = art / "report-chromium.log";
  std::error_code ec;
  fs::remove(png, ec);
  fs::copy_file(out, page, fs::copy_options::overwrite_existing, ec);
  ASSERT_FALSE(ec) << ec.message();
  fs::path home = dir / "home";
  fs::create_directories(home);
  // as root Chromium needs --no-sandbox
  int rc = run_with_timeout(chromium,
                            {"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--user-data-dir=" + (home / "profile").string(), "--screenshot=" + png.string(),
                             "--window-size=1280,2000", "file://" + page.string()},
                            home.string(), log.string(), 60);
  ASSERT_EQ(rc, 0) << (rc == -2 ? "chromium timed out after 60 s; " : "") << "log: " << log << "\n" << slurp(log);
  ASSERT_TRUE(fs::exists(png)) << slurp(log);
  auto size = fs::file_size(png);
  std::cout << "report screenshot: " << png.string() << " (" << size << " bytes)" << std::endl;
  RecordProperty("screenshot", png.string());
  EXPECT_GT(size, 20'000u) << "a page with a chart and tables is more than a blank screenshot";

  Image img = decode_png(slurp(png));
  ASSERT_EQ(img.error, "");
  EXPECT_EQ(img.width, 1280u);
  EXPECT_EQ(img.height, 2000u);
  ASSERT_EQ(img.rgb.size(), size_t(img.width) * img.height * 3);

  // not one colour: a white page with text, a chart and tables
  std::map<uint32_t, size_t> hist;
  for (size_t i = 0; i < img.rgb.size(); i += 3)
    hist[(uint32_t(img.rgb[i]) << 16) | (uint32_t(img.rgb[i + 1]) << 8) | img.rgb[i + 2]] += 1;
  size_t total = img.rgb.size() / 3, top = 0;
  for (const auto& [c, n] : hist) top = std::max(top, n);
  EXPECT_GT(hist.size(), 20u) << "distinct colours";
  EXPECT_LT(top, total * 98 / 100) << "one colour covers the page";

  // the chart itself was drawn: each series colour covers far more than its 12×12 legend swatch
  auto near = [&](uint32_t rgb) {
    size_t n = 0;
    int r = rgb >> 16, g = (rgb >> 8) & 0xff, b = rgb & 0xff;
    for (size_t i = 0; i < img.rgb.size(); i += 3)
      if (std::abs(img.rgb[i] - r) <= 6 && std::abs(img.rgb[i + 1] - g) <= 6 && std::abs(img.rgb[i + 2] - b) <= 6) ++n;
    return n;
  };
  for (uint32_t c : {0x1f77b4u, 0xff7f0eu, 0x2ca02cu}) {
    size_t n = near(c);
    std::cout << "  pixels of #" << std::hex << c << std::dec << ": " << n << std::endl;
    EXPECT_GT(n, 400u) << "series colour #" << std::hex << c;
  }
}

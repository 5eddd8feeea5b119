#include "store/store.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "util/timefmt.h"

using namespace ab::store;
using ab::util::format_rfc3339;
using ab::util::kNsPerSec;
using ab::util::now_unix_ns;
namespace fs = std::filesystem;

namespace {

constexpr int64_t S = kNsPerSec;
constexpr int64_t T0 = 1'795'000'000 * S;  // a fixed point in 2026

struct TempDir {
  fs::path dir;
  TempDir() {
    char tmpl[] = "/tmp/ab-store-XXXXXX";
    dir = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string db(const std::string& name = "a.db") const { return (dir / name).string(); }
};

ab::LlmCall make_call(int64_t end_ns, const std::string& cgroup, uint32_t pid, const std::string& comm,
                      const std::string& model, const std::string& provider, int64_t in, int64_t out,
                      double cost, bool estimated = false) {
  ab::LlmCall c;
  c.start_unix_ns = end_ns - 500'000'000;
  c.end_unix_ns = end_ns;
  c.latency_ms = 500;
  c.who.pid = pid;
  c.who.comm = comm;
  c.who.exe = "/usr/bin/" + comm;
  c.who.cgroup = cgroup;
  c.who.cgroup_id = 77;
  c.who.tree_root_pid = pid - 1;
  c.who.uid = 1000;
  c.provider = provider;
  c.api = provider == "anthropic" ? "anthropic" : "openai";
  c.host = provider == "anthropic" ? "api.anthropic.com" : "api.openai.com";
  c.method = "POST";
  c.path = "/v1/chat/completions";
  c.model = model;
  c.status = 200;
  c.complete = true;
  c.input_tokens = in;
  c.output_tokens = out;
  c.cost_usd = cost;
  c.estimated = estimated;
  if (estimated) c.estimate_reason = "stream_without_usage";
  return c;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

// ---- opening ------------------------------------------------------------------------------------

TEST(StoreOpen, CreatesDirsWalAndSchema) {
  TempDir t;
  std::string path = (t.dir / "x" / "y" / "agentbrake.db").string();
  {
    auto s = Store::open(path, OpenMode::ReadWrite);
    EXPECT_EQ(s->schema_version(), Store::kSchemaVersion);
    EXPECT_EQ(s->journal_mode(), "wal");
  }
  struct stat sb {};
  ASSERT_EQ(stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0640u);
  // reopening does not migrate again and keeps data
  auto s = Store::open(path, OpenMode::ReadWrite);
  EXPECT_EQ(s->schema_version(), Store::kSchemaVersion);
  auto r = Store::open(path, OpenMode::ReadOnly);
  EXPECT_EQ(r->schema_version(), Store::kSchemaVersion);
}

TEST(StoreOpen, ReadOnlyMissingNamesPath) {
  TempDir t;
  std::string path = t.db("missing.db");
  try {
    Store::open(path, OpenMode::ReadOnly);
    FAIL() << "expected a throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path));  // a read-only open never creates
}

TEST(StoreOpen, ReadOnlyRefusesWrites) {
  TempDir t;
  Store::open(t.db(), OpenMode::ReadWrite);
  auto r = Store::open(t.db(), OpenMode::ReadOnly);
  EXPECT_THROW(r->add_event(Event{0, "x", "/", 1, "c", {}}), std::logic_error);
}

TEST(StoreOpen, NewerSchemaRefused) {
  TempDir t;
  { Store::open(t.db(), OpenMode::ReadWrite); }
  {
    // pretend a future build migrated the file
    std::string cmd = "sqlite3 " + t.db() + " 'UPDATE schema_version SET version=99' 2>/dev/null";
    if (system(cmd.c_str()) != 0) GTEST_SKIP() << "sqlite3 shell not available";
  }
  EXPECT_THROW(Store::open(t.db(), OpenMode::ReadWrite), std::runtime_error);
  try {
    Store::open(t.db(), OpenMode::ReadOnly);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
  }
}

TEST(StoreOpen, NotADatabase) {
  TempDir t;
  std::ofstream(t.db()) << "this is not sqlite, just text that is long enough to be a header....";
  EXPECT_THROW(Store::open(t.db(), OpenMode::ReadWrite), std::runtime_error);
  EXPECT_THROW(Store::open(t.db(), OpenMode::ReadOnly), std::runtime_error);
}

// ---- writes -------------------------------------------------------------------------------------

TEST(StoreWrite, CallRoundTripEveryField) {
  TempDir t;
  auto s = Store::open(t.db(), OpenMode::ReadWrite);
  ab::LlmCall c = make_call(T0, "/agents/a", 4242, "python3", "gpt-4o-mini", "openai", 5400, 880, 0.0123);
  c.stream = true;
  c.request_bytes = 1234;
  c.response_bytes = 5678;
  c.capture_truncated = true;
  c.max_tokens = 1024;
  c.message_count = 3;
  c.cache_read_tokens = 100;
  c.cache_write_tokens = 50;
  c.reasoning_tokens = 7;
  c.usage_present = true;
  c.price_known = false;
  c.error_type = "rate_limit_error";
  c.retry_after_s = 2.5;
  c.ratelimit["x-ratelimit-remaining-tokens"] = "999";
  s->add_call(c);
  EXPECT_EQ(s->pending(), 2u);  // the call and its llm_call event
  EXPECT_EQ(s->flush(), 2u);
  EXPECT_EQ(s->pending(), 0u);

  auto calls = s->calls(0, INT64_MAX);
  ASSERT_EQ(calls.size(), 1u);
  const auto& g = calls[0];
  EXPECT_EQ(g.start_unix_ns, c.start_unix_ns);
  EXPECT_EQ(g.end_unix_ns, c.end_unix_ns);
  EXPECT_DOUBLE_EQ(g.latency_ms, 500);
  EXPECT_EQ(g.who.pid, 4242u);
  EXPECT_EQ(g.who.comm, "python3");
  EXPECT_EQ(g.who.exe, "/usr/bin/python3");
  EXPECT_EQ(g.who.cgroup, "/agents/a");
  EXPECT_EQ(g.who.cgroup_id, 77u);
  EXPECT_EQ(g.who.tree_root_pid, 4241u);
  EXPECT_EQ(g.who.uid, 1000u);
  EXPECT_EQ(g.provider, "openai");
  EXPECT_EQ(g.api, "openai");
  EXPECT_EQ(g.host, "api.openai.com");
  EXPECT_EQ(g.method, "POST");
  EXPECT_EQ(g.path, "/v1/chat/completions");
  EXPECT_EQ(g.model, "gpt-4o-mini");
  EXPECT_TRUE(g.stream);
  EXPECT_EQ(g.status, 200);
  EXPECT_TRUE(g.complete);
  EXPECT_EQ(g.request_bytes, 1234u);
  EXPECT_EQ(g.response_bytes, 5678u);
  EXPECT_TRUE(g.capture_truncated);
  EXPECT_EQ(g.max_tokens, 1024);
  EXPECT_EQ(g.message_count, 3);
  EXPECT_EQ(g.input_tokens, 5400);
  EXPECT_EQ(g.output_tokens, 880);
  EXPECT_EQ(g.cache_read_tokens, 100);
  EXPECT_EQ(g.cache_write_tokens, 50);
  EXPECT_EQ(g.reasoning_tokens, 7);
  EXPECT_TRUE(g.usage_present);
  EXPECT_FALSE(g.estimated);
  EXPECT_DOUBLE_EQ(g.cost_usd, 0.0123);
  EXPECT_FALSE(g.price_known);
  EXPECT_EQ(g.error_type, "rate_limit_error");
  EXPECT_DOUBLE_EQ(g.retry_after_s, 2.5);
  EXPECT_EQ(g.ratelimit.at("x-ratelimit-remaining-tokens"), "999");
}

TEST(StoreWrite, LlmCallEventHasExactlyTheInterfaceFields) {
  TempDir t;
  auto s = Store::open(t.db(), OpenMode::ReadWrite);
  auto c = make_call(T0, "/agents/a", 4242, "python3", "claude-3-5-haiku", "anthropic", 10, 20, 0.5, true);
  s->add_call(c);
  s->flush();
  auto ev = s->events(0, {});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, "llm_call");
  EXPECT_EQ(ev[0].cgroup, "/agents/a");
  EXPECT_EQ(ev[0].pid, 4242u);
  EXPECT_EQ(ev[0].comm, "python3");
  EXPECT_EQ(ev[0].ts_unix_ns, T0);
  std::vector<std::string> keys;
  for (auto it = ev[0].detail.begin(); it != ev[0].detail.end(); ++it) keys.push_back(it.key());
  std::vector<std::string> want = {"provider", "api", "host", "path", "model", "stream", "status",
                                   "input_tokens", "output_tokens", "cache_read_tokens",
                                   "cache_write_tokens", "cost_usd", "latency_ms", "tree_root_pid",
                                   "complete", "estimated", "estimate_reason", "error_type",
                                   "retry_after_s"};
  std::sort(keys.begin(), keys.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(keys, want);
  const auto& d = ev[0].detail;
  EXPECT_EQ(d["provider"], "anthropic");
  EXPECT_EQ(d["input_tokens"], 10);
  EXPECT_EQ(d["output_tokens"], 20);
  EXPECT_EQ(d["tree_root_pid"], 4241);
  EXPECT_EQ(d["estimated"], true);
  EXPECT_EQ(d["estimate_reason"], "stream_without_usage");
  EXPECT_TRUE(d["retry_after_s"].is_null());
  // the stored text keeps the interface's order
  EXPECT_EQ(ev[0].detail_text.rfind("{\"provider\":", 0), 0u) << ev[0].detail_text;
}

TEST(StoreWrite, QueuedUntilFlushThenOneTransaction) {
  TempDir t;
  auto w = Store::open(t.db(), OpenMode::ReadWrite);
  auto r = Store::open(t.db(), OpenMode::ReadOnly);
  for (int i = 0; i < 1000; ++i)
    w->add_event(Event{T0 + i, "probe_attached", "/", static_cast<uint32_t>(i + 1), "node", {{"i", i}}});
  EXPECT_EQ(w->pending(), 1000u);
  EXPECT_EQ(r->last_event_id(), 0);  // nothing visible before the flush
  EXPECT_EQ(w->flush(), 1000u);
  EXPECT_EQ(w->pending(), 0u);
  EXPECT_EQ(r->last_event_id(), 1000);
  EXPECT_EQ(w->flush(), 0u);  // nothing left
  auto ev = r->events(0, {});
  ASSERT_EQ(ev.size(), 1000u);
  for (size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i].detail["i"], static_cast<int>(i));  // oldest first, in queue order
    if (i) {
      EXPECT_GT(ev[i].id, ev[i - 1].id);
    }
  }
}

TEST(StoreWrite, DestructorFlushes) {
  TempDir t;
  {
    auto w = Store::open(t.db(), OpenMode::ReadWrite);
    w->add_event(Event{T0, "policy_loaded", "", 0, "", {{"source", "x.yaml"}}});
  }
  auto r = Store::open(t.db(), OpenMode::ReadOnly);
  EXPECT_EQ(r->events(0, {}).size(), 1u);
}

TEST(StoreWrite, CrashLosesOnlyTheUnflushedQueue) {
  TempDir t;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto w = Store::open(t.db(), OpenMode::ReadWrite);
    w->add_event(Event{T0, "kept", "", 1, "", {}});
    w->add_call(make_call(T0, "/a", 10, "c", "m", "openai", 1, 1, 0.1));
    w->flush();
    w->add_event(Event{T0 + 1, "lost", "", 2, "", {}});
    std::abort();  // no destructor, no flush
  }
  int st = 0;
  waitpid(child, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st));
  auto r = Store::open(t.db(), OpenMode::ReadOnly);
  auto ev = r->events(0, {});
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].kind, "kept");
  EXPECT_EQ(ev[1].kind, "llm_call");
  EXPECT_EQ(r->calls(0, INT64_MAX).size(), 1u);
  // the writer can reopen after the crash and continue
  auto w = Store::open(t.db(), OpenMode::ReadWrite);
  w->add_event(Event{T0 + 2, "after", "", 3, "", {}});
  EXPECT_EQ(w->flush(), 1u);
}

TEST(StoreWrite, SecretsNeverStored) {
  TempDir t;
  {
    auto s = Store::open(t.db(), OpenMode::ReadWrite);
    auto c = make_call(T0, "/a", 10, "c", "gemini-1.5-flash", "google", 1, 1, 0);
    c.path = "/v1beta/models/gemini-1.5-flash:generateContent?key=AIzaSECRETSECRET&alt=sse&access_token=ya29.TOPSECRET";
    c.ratelimit["x-ratelimit-limit-requests"] = "60";
    c.ratelimit["authorization"] = "Bearer sk-SHOULDNOTBESTORED";
    c.ratelimit["set-cookie"] = "session=COOKIESECRET";
    s->add_call(c);
    s->flush();
    auto calls = s->calls(0, INT64_MAX);
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[0].path,
              "/v1beta/models/gemini-1.5-flash:generateContent?key=REDACTED&alt=sse&access_token=REDACTED");
    EXPECT_EQ(calls[0].ratelimit.size(), 1u);
    auto ev = s->events(0, {});
    EXPECT_EQ(ev[0].detail["path"], calls[0].path);
  }
  std::string bytes = slurp(t.db()) + slurp(t.db() + "-wal");
  for (const char* secret : {"AIzaSECRETSECRET", "TOPSECRET", "sk-SHOULDNOTBESTORED", "COOKIESECRET"})
    EXPECT_EQ(bytes.find(secret), std::string::npos) << secret;
}

TEST(StoreWrite, OddBytesDoNotThrow) {
  TempDir t;
  auto s = Store::open(t.db(), OpenMode::ReadWrite);
  auto c = make_call(T0, "/a", 10, std::string("bad\xff\xfe", 5), "m", "openai", 1, 1, 0);
  EXPECT_NO_THROW(s->add_call(c));
  EXPECT_NO_THROW(s->add_event(Event{T0, "x", "/", 1, std::string("\xc3", 1), {{"k", std::string("\xff")}}}));
  EXPECT_EQ(s->flush(), 3u);
}

TEST(StoreWrite, ZeroTimestampsAreStampedNow) {
  TempDir t;
  auto s = Store::open(t.db(), OpenMode::ReadWrite);
  int64_t before = now_unix_ns();
  s->add_event(Event{0, "x", "/", 1, "c", {}});
  ab::LlmCall c;
  s->add_call(c);
  s->flush();
  for (const auto& e : s->events(0, {})) EXPECT_GE(e.ts_unix_ns, before);
  EXPECT_EQ(s->calls(before, INT64_MAX).size(), 1u);
}

// ---- usage --------------------------------------------------------------------------------------

class UsageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    s = Store::open(t.db(), OpenMode::ReadWrite);
    s->add_call(make_call(T0 + 1 * S, "/agents/a", 100, "python3", "gpt-4o-mini", "openai", 1000, 100, 0.01));
    s->add_call(make_call(T0 + 2 * S, "/agents/a", 100, "python3", "gpt-4o-mini", "openai", 2000, 200, 0.02, true));
    s->add_call(make_call(T0 + 3 * S, "/agents/a", 101, "node", "claude-3-5-haiku", "anthropic", 300, 30, 0.5));
    s->add_call(make_call(T0 + 4 * S, "/agents/b", 200, "python3", "gpt-4o", "openai", 10, 1, 0.001));
    s->add_call(make_call(T0 + 100 * S, "/agents/b", 200, "python3", "gpt-4o", "openai", 5, 5, 1.0));
    s->flush();
  }
  static const UsageRow* find(const UsageReport& r, const std::string& key) {
    for (const auto& row : r.rows)
      if (row.key == key) return &row;
    return nullptr;
  }
  TempDir t;
  std::unique_ptr<Store> s;
};

TEST_F(UsageTest, ByCgroup) {
  auto r = s->usage(By::Cgroup, T0, T0 + 50 * S);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].key, "/agents/a");  // most expensive first
  EXPECT_EQ(r.rows[0].calls, 3);
  EXPECT_EQ(r.rows[0].input_tokens, 3300);
  EXPECT_EQ(r.rows[0].output_tokens, 330);
  EXPECT_NEAR(r.rows[0].cost_usd, 0.53, 1e-9);
  EXPECT_EQ(r.rows[0].estimated_calls, 1);
  EXPECT_EQ(r.rows[1].key, "/agents/b");
  EXPECT_EQ(r.rows[1].calls, 1);  // the call at T0+100s is outside [since, until)
  auto tot = r.total();
  EXPECT_EQ(tot.calls, 4);
  EXPECT_EQ(tot.input_tokens, 3310);
}

TEST_F(UsageTest, ByProcessModelProvider) {
  auto p = s->usage(By::Process, 0, INT64_MAX);
  ASSERT_NE(find(p, "100 python3"), nullptr);
  EXPECT_EQ(find(p, "100 python3")->calls, 2);
  EXPECT_EQ(find(p, "101 node")->calls, 1);
  EXPECT_EQ(find(p, "200 python3")->calls, 2);

  auto m = s->usage(By::Model, 0, INT64_MAX);
  EXPECT_EQ(m.rows.size(), 3u);
  EXPECT_EQ(find(m, "gpt-4o-mini")->input_tokens, 3000);
  EXPECT_EQ(find(m, "gpt-4o-mini")->estimated_calls, 1);

  auto pr = s->usage(By::Provider, T0 + 3 * S, INT64_MAX);
  ASSERT_EQ(pr.rows.size(), 2u);
  EXPECT_EQ(find(pr, "openai")->calls, 2);
  EXPECT_EQ(find(pr, "anthropic")->calls, 1);
}

TEST_F(UsageTest, JsonShape) {
  auto r = s->usage(By::Cgroup, T0, T0 + 3600 * S);
  auto j = r.to_json();
  EXPECT_EQ(j["by"], "cgroup");
  EXPECT_EQ(j["since"], format_rfc3339(T0, false));
  EXPECT_EQ(j["until"], format_rfc3339(T0 + 3600 * S, false));
  ASSERT_EQ(j["rows"].size(), 2u);
  std::vector<std::string> keys;
  for (auto it = j["rows"][0].begin(); it != j["rows"][0].end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"key", "calls", "input_tokens", "output_tokens",
                                            "cache_read_tokens", "cache_write_tokens", "cost_usd",
                                            "estimated_calls"}));
  EXPECT_EQ(j.dump().rfind("{\"by\":\"cgroup\",\"since\":", 0), 0u);
}

TEST_F(UsageTest, EmptyRange) {
  auto r = s->usage(By::Model, T0 + 1000 * S, T0 + 2000 * S);
  EXPECT_TRUE(r.rows.empty());
  EXPECT_EQ(r.total().calls, 0);
}

TEST_F(UsageTest, SumSinceFilters) {
  EXPECT_EQ(s->sum_since(0).calls, 5);
  CallFilter f;
  f.cgroup = "/agents";
  EXPECT_EQ(s->sum_since(0, f).calls, 5);
  f.cgroup = "/agents/a";
  EXPECT_EQ(s->sum_since(0, f).calls, 3);
  f.cgroup = "/agents/";  // trailing slash tolerated
  EXPECT_EQ(s->sum_since(0, f).calls, 5);
  f.cgroup = "/agent";  // a prefix that is not a path component matches nothing
  EXPECT_EQ(s->sum_since(0, f).calls, 0);
  f.cgroup = "/";
  EXPECT_EQ(s->sum_since(0, f).calls, 5);
  CallFilter g;
  g.pid = 200;
  EXPECT_NEAR(s->sum_since(0, g).cost_usd, 1.001, 1e-9);
  EXPECT_EQ(s->sum_since(T0 + 50 * S, g).calls, 1);
  CallFilter h;
  h.tree_root_pid = 99;
  h.model = "gpt-4o-mini";
  EXPECT_EQ(s->sum_since(0, h).calls, 2);
  CallFilter k;
  k.provider = "anthropic";
  EXPECT_EQ(s->sum_since(0, k).output_tokens, 30);
}

TEST(UsageBy, ParseAndName) {
  for (By b : {By::Cgroup, By::Process, By::Model, By::Provider}) EXPECT_EQ(parse_by(to_string(b)), b);
  EXPECT_FALSE(parse_by("pid").has_value());
}

// ---- events -------------------------------------------------------------------------------------

TEST(StoreEvents, FilterByKindSinceAfterIdLimit) {
  TempDir t;
  auto s = Store::open(t.db(), OpenMode::ReadWrite);
  s->add_event(Event{T0 + 1, "paused", "/agents/a", 1, "a", {{"target", "/agents/a"}}});
  s->add_event(Event{T0 + 2, "resumed", "/agents/a", 1, "a", {}});
  s->add_event(Event{T0 + 3, "killed", "/agents/b", 2, "b", {}});
  s->add_event(Event{T0 + 4, "paused", "/agents/c", 3, "c", {}});
  s->flush();
  EXPECT_EQ(s->events(0, {}).size(), 4u);
  auto paused = s->events(0, {"paused"});
  ASSERT_EQ(paused.size(), 2u);
  EXPECT_EQ(paused[0].cgroup, "/agents/a");
  EXPECT_EQ(paused[0].detail["target"], "/agents/a");
  EXPECT_EQ(s->events(0, {"paused", "killed"}).size(), 3u);
  EXPECT_EQ(s->events(T0 + 3, {}).size(), 2u);
  EXPECT_EQ(s->events(0, {}, paused[0].id).size(), 3u);
  auto lim = s->events(0, {}, 0, 2);
  ASSERT_EQ(lim.size(), 2u);
  EXPECT_EQ(lim[1].kind, "resumed");
  EventQuery q;
  q.until_ns = T0 + 3;
  EXPECT_EQ(s->events(q).size(), 2u);
  size_t seen = s->for_each_event({}, [](const EventRow&) { return false; });
  EXPECT_EQ(seen, 1u);
}

TEST(StoreEvents, FollowByIdSeesOnlyNewRows) {
  TempDir t;
  auto w = Store::open(t.db(), OpenMode::ReadWrite);
  auto r = Store::open(t.db(), OpenMode::ReadOnly);
  w->add_event(Event{T0, "a", "", 0, "", {}});
  w->flush();
  int64_t last = 0;
  auto batch = r->events(0, {}, last);
  ASSERT_EQ(batch.size(), 1u);
  last = batch.back().id;
  EXPECT_TRUE(r->events(0, {}, last).empty());
  w->add_event(Event{T0 + 1, "b", "", 0, "", {}});
  w->add_event(Event{T0 + 2, "c", "", 0, "", {}});
  EXPECT_TRUE(r->events(0, {}, last).empty());  // not flushed yet
  w->flush();
  batch = r->events(0, {}, last);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].kind, "b");
  EXPECT_EQ(batch[1].kind, "c");
}

TEST(StoreEvents, IdsNotReusedAfterPrune) {
  TempDir t;
  auto w = Store::open(t.db(), OpenMode::ReadWrite);
  w->add_event(Event{T0, "a", "", 0, "", {}});
  w->add_event(Event{T0 + 1, "b", "", 0, "", {}});
  w->flush();
  int64_t last = w->last_event_id();
  EXPECT_EQ(w->prune(T0 + 10), 2u);
  w->add_event(Event{T0 + 20, "c", "", 0, "", {}});
  w->flush();
  auto ev = w->events(0, {}, last);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_GT(ev[0].id, last);
}

// ---- retention ----------------------------------------------------------------------------------

TEST(StorePrune, DeletesOnlyOldRowsInBoundedBatches) {
  TempDir t;
  auto s = Store::open(t.db(), OpenMode::ReadWrite);
  for (int i = 0; i < 5000; ++i)
    s->add_call(make_call(T0 + i * S, "/a", 10, "c", "m", "openai", 1, 1, 0.001));
  s->flush();
  // 5000 calls + 5000 events; the first 3000 of each are older than T0+3000s
  size_t n = s->prune(T0 + 3000 * S, 1000);
  EXPECT_EQ(n, 1000u);
  size_t rest = 0;
  while (size_t k = s->prune(T0 + 3000 * S, 1000)) rest += k;
  EXPECT_EQ(n + rest, 6000u);
  EXPECT_EQ(s->calls(0, INT64_MAX).size(), 2000u);
  EXPECT_EQ(s->events(0, {}).size(), 2000u);
  EXPECT_EQ(s->calls(0, INT64_MAX).front().end_unix_ns, T0 + 3000 * S);
  EXPECT_EQ(s->prune(T0), 0u);
}

// Harden L6: retention by size as well as by age; the oldest rows go first.
TEST(StorePrune, SizeCapDeletesOldestUntilUnder) {
  TempDir t;
  auto s = Store::open(t.db(), OpenMode::ReadWrite);
  for (int i = 0; i < 6000; ++i)
    s->add_call(make_call(T0 + i * S, "/a", 10, "c", "m", "openai", 1, 1, 0.001));
  s->flush();
  const uint64_t full = s->used_bytes();
  ASSERT_GT(full, 1u << 20) << "6000 calls and their events take more than a MiB";
  EXPECT_EQ(s->prune_to_size(full * 2), 0u) << "under the cap: nothing deleted";
  const uint64_t cap = full / 2;
  size_t n = s->prune_to_size(cap);
  EXPECT_GT(n, 0u);
  EXPECT_LE(s->used_bytes(), cap);
  auto calls = s->calls(0, INT64_MAX);
  ASSERT_FALSE(calls.empty());
  EXPECT_GT(calls.front().end_unix_ns, T0) << "the oldest went first";
  EXPECT_EQ(calls.back().end_unix_ns, T0 + 5999 * S) << "the newest stayed";
  // a cap below an empty database deletes everything, then stops
  s->prune_to_size(1);
  EXPECT_TRUE(s->calls(0, INT64_MAX).empty());
  EXPECT_TRUE(s->events(0, {}).empty());
}

// Harden L6: a slow reader (events --follow into a pager) holds no read transaction while it
// consumes rows, so the writer's WAL can still be checkpointed (and truncated) meanwhile.
TEST(StoreEvents, SlowReaderDoesNotPinTheWal) {
  TempDir t;
  auto w = Store::open(t.db(), OpenMode::ReadWrite);
  for (int i = 0; i < 3 * static_cast<int>(Store::kEventPage); ++i)
    w->add_event({T0 + i * S, "paused", "/a", 1, "c", nlohmann::json::object()});
  w->flush();
  auto r = Store::open(t.db(), OpenMode::ReadOnly);
  size_t seen = 0;
  bool checkpointed_mid_read = false;
  EventQuery q;
  r->for_each_event(q, [&](const EventRow&) {
    if (++seen == 10) {
      // the reader is in the middle of its first page: the writer goes on
      for (int i = 0; i < 200; ++i) w->add_event({T0 + i * S, "resumed", "/a", 1, "c", nlohmann::json::object()});
      w->flush();
      checkpointed_mid_read = w->checkpoint();
    }
    return true;
  });
  EXPECT_TRUE(checkpointed_mid_read) << "the reader's snapshot kept WAL frames back";
  EXPECT_EQ(seen, 3 * Store::kEventPage + 200) << "paging neither lost nor repeated a row";
}

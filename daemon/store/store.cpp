#include "store/store.h"

#include <fcntl.h>
#include <grp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "util/redact.h"
#include "util/timefmt.h"

namespace ab::store {

namespace {

// ---- small RAII layer over the sqlite3 C API ----------------------------------------------

[[noreturn]] void fail(sqlite3* db, const std::string& path, const std::string& what) {
  std::string msg = "database " + path + ": " + what;
  if (db) msg += ": " + std::string(sqlite3_errmsg(db));
  throw std::runtime_error(msg);
}

class Stmt {
 public:
  Stmt() = default;
  Stmt(sqlite3* db, const std::string& path, std::string_view sql) : db_(db), path_(&path) {
    if (sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &st_, nullptr) != SQLITE_OK)
      fail(db, path, "prepare '" + std::string(sql.substr(0, 60)) + "'");
  }
  Stmt(Stmt&& o) noexcept : db_(o.db_), path_(o.path_), st_(o.st_) { o.st_ = nullptr; }
  Stmt& operator=(Stmt&& o) noexcept {
    std::swap(st_, o.st_);
    db_ = o.db_;
    path_ = o.path_;
    return *this;
  }
  ~Stmt() { sqlite3_finalize(st_); }

  Stmt& bind(int i, int64_t v) { return check(sqlite3_bind_int64(st_, i, v)); }
  Stmt& bind(int i, double v) { return check(sqlite3_bind_double(st_, i, v)); }
  Stmt& bind(int i, std::string_view v) {
    return check(sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  Stmt& bind_null(int i) { return check(sqlite3_bind_null(st_, i)); }

  // true: a row is available; false: done.
  bool step() {
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, *path_, "step");
  }
  void run() {
    while (step()) {
    }
  }
  void reset() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }

  int64_t i64(int c) const { return sqlite3_column_int64(st_, c); }
  double dbl(int c) const { return sqlite3_column_double(st_, c); }
  bool null(int c) const { return sqlite3_column_type(st_, c) == SQLITE_NULL; }
  std::string text(int c) const {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(st_, c));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(st_, c))) : std::string();
  }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK) fail(db_, *path_, "bind");
    return *this;
  }
  sqlite3* db_ = nullptr;
  const std::string* path_ = nullptr;
  sqlite3_stmt* st_ = nullptr;
};

void exec(sqlite3* db, const std::string& path, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error("database " + path + ": " + msg);
  }
}

// ---- schema ---------------------------------------------------------------------------------
// migrations[i] takes the schema from version i to version i+1. Never edit a released entry:
// append a new one and bump Store::kSchemaVersion.
const char* const kMigrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE calls (
  id                 INTEGER PRIMARY KEY,
  ts_unix_ns         INTEGER NOT NULL,   -- end of the call (start when it never ended)
  start_unix_ns      INTEGER NOT NULL,
  end_unix_ns        INTEGER NOT NULL,
  latency_ms         REAL    NOT NULL,
  pid                INTEGER NOT NULL,
  comm               TEXT    NOT NULL,
  exe                TEXT    NOT NULL,
  cgroup             TEXT    NOT NULL,
  cgroup_id          INTEGER NOT NULL,
  tree_root_pid      INTEGER NOT NULL,
  uid                INTEGER NOT NULL,
  provider           TEXT    NOT NULL,
  api                TEXT    NOT NULL,
  host               TEXT    NOT NULL,
  method             TEXT    NOT NULL,
  path               TEXT    NOT NULL,
  model              TEXT    NOT NULL,
  stream             INTEGER NOT NULL,
  status             INTEGER NOT NULL,
  complete           INTEGER NOT NULL,
  request_bytes      INTEGER NOT NULL,
  response_bytes     INTEGER NOT NULL,
  capture_truncated  INTEGER NOT NULL,
  max_tokens         INTEGER NOT NULL,
  message_count      INTEGER NOT NULL,
  input_tokens       INTEGER NOT NULL,
  output_tokens      INTEGER NOT NULL,
  cache_read_tokens  INTEGER NOT NULL,
  cache_write_tokens INTEGER NOT NULL,
  reasoning_tokens   INTEGER NOT NULL,
  usage_present      INTEGER NOT NULL,
  estimated          INTEGER NOT NULL,
  estimate_reason    TEXT    NOT NULL,
  cost_usd           REAL    NOT NULL,
  price_known        INTEGER NOT NULL,
  error_type         TEXT    NOT NULL,
  retry_after_s      REAL,               -- NULL: no retry-after header
  ratelimit          TEXT    NOT NULL    -- JSON object of rate-limit headers
);
CREATE INDEX calls_ts ON calls(ts_unix_ns);
CREATE INDEX calls_cgroup_ts ON calls(cgroup, ts_unix_ns);
CREATE TABLE events (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_unix_ns  INTEGER NOT NULL,
  kind        TEXT    NOT NULL,
  cgroup      TEXT    NOT NULL,
  pid         INTEGER NOT NULL,
  comm        TEXT    NOT NULL,
  detail      TEXT    NOT NULL
);
CREATE INDEX events_ts ON events(ts_unix_ns);
CREATE INDEX events_kind_ts ON events(kind, ts_unix_ns);
)sql",
};
static_assert(std::size(kMigrations) == Store::kSchemaVersion);

int read_schema_version(sqlite3* db, const std::string& path) {
  Stmt t(db, path, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_version'");
  t.step();
  if (t.i64(0) == 0) return 0;
  Stmt v(db, path, "SELECT max(version) FROM schema_version");
  if (!v.step() || v.null(0)) return 0;
  return static_cast<int>(v.i64(0));
}

// Directory and file ownership: root:agentbrake when that group exists (so its members can
// read with the CLI), otherwise only the owner and root.
std::optional<gid_t> agentbrake_gid() {
  struct group gr {};
  struct group* res = nullptr;
  std::vector<char> buf(16384);
  if (getgrnam_r("agentbrake", &gr, buf.data(), buf.size(), &res) == 0 && res) return gr.gr_gid;
  return std::nullopt;
}

void make_parent_dirs(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  if (std::filesystem::is_directory(parent, ec)) return;
  // create each missing level 0750
  std::filesystem::path acc;
  for (const auto& part : parent) {
    acc /= part;
    if (std::filesystem::is_directory(acc, ec)) continue;
    if (::mkdir(acc.c_str(), 0750) != 0 && errno != EEXIST)
      throw std::runtime_error("database " + path + ": cannot create directory " + acc.string() +
                               ": " + std::strerror(errno));
    if (auto gid = agentbrake_gid(); gid && geteuid() == 0) {
      if (::chown(acc.c_str(), 0, *gid) != 0)
        spdlog::warn("store: chown {} root:agentbrake: {}", acc.string(), std::strerror(errno));
    }
  }
}

int64_t call_ts(const ab::LlmCall& c) {
  if (c.end_unix_ns > 0) return c.end_unix_ns;
  if (c.start_unix_ns > 0) return c.start_unix_ns;
  return 0;
}

// Never throws on odd bytes: process names and paths are not guaranteed to be UTF-8.
template <class J>
std::string safe_dump(const J& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

// ---- By ---------------------------------------------------------------------------------------

const char* to_string(By by) {
  switch (by) {
    case By::Cgroup: return "cgroup";
    case By::Process: return "process";
    case By::Model: return "model";
    case By::Provider: return "provider";
  }
  return "cgroup";
}

std::optional<By> parse_by(std::string_view s) {
  if (s == "cgroup") return By::Cgroup;
  if (s == "process") return By::Process;
  if (s == "model") return By::Model;
  if (s == "provider") return By::Provider;
  return std::nullopt;
}

UsageRow UsageReport::total() const {
  UsageRow t;
  t.key = "TOTAL";
  for (const auto& r : rows) {
    t.calls += r.calls;
    t.input_tokens += r.input_tokens;
    t.output_tokens += r.output_tokens;
    t.cache_read_tokens += r.cache_read_tokens;
    t.cache_write_tokens += r.cache_write_tokens;
    t.cost_usd += r.cost_usd;
    t.estimated_calls += r.estimated_calls;
  }
  return t;
}

nlohmann::ordered_json UsageReport::to_json() const {
  nlohmann::ordered_json j;
  j["by"] = to_string(by);
  j["since"] = util::format_rfc3339(since_ns, false);
  j["until"] = util::format_rfc3339(until_ns, false);
  auto arr = nlohmann::ordered_json::array();
  for (const auto& r : rows) {
    nlohmann::ordered_json o;
    o["key"] = r.key;
    o["calls"] = r.calls;
    o["input_tokens"] = r.input_tokens;
    o["output_tokens"] = r.output_tokens;
    o["cache_read_tokens"] = r.cache_read_tokens;
    o["cache_write_tokens"] = r.cache_write_tokens;
    o["cost_usd"] = r.cost_usd;
    o["estimated_calls"] = r.estimated_calls;
    arr.push_back(std::move(o));
  }
  j["rows"] = std::move(arr);
  return j;
}

nlohmann::ordered_json event_to_json(const EventRow& r) {
  nlohmann::ordered_json j;
  j["ts"] = util::format_rfc3339(r.ts_unix_ns, true);
  j["kind"] = r.kind;
  j["cgroup"] = r.cgroup;
  j["pid"] = r.pid;
  j["comm"] = r.comm;
  auto d = nlohmann::ordered_json::parse(r.detail_text, nullptr, false);
  j["detail"] = d.is_discarded() ? nlohmann::ordered_json::object() : std::move(d);
  j["id"] = r.id;
  return j;
}

// ---- Store --------------------------------------------------------------------------------------

struct Store::Statements {
  Stmt insert_call;
  Stmt insert_event;
};

Store::Store(std::string path, OpenMode mode, sqlite3* db)
    : path_(std::move(path)), mode_(mode), db_(db), st_(std::make_unique<Statements>()) {}

Store::~Store() {
  if (mode_ == OpenMode::ReadWrite) {
    try {
      flush();
    } catch (...) {
    }
  }
  st_.reset();  // finalize statements before closing
  sqlite3_close_v2(db_);
}

std::unique_ptr<Store> Store::open(const std::string& path, OpenMode mode) {
  if (path.empty()) throw std::runtime_error("database path is empty");
  bool created = false;
  if (mode == OpenMode::ReadOnly) {
    struct stat sb {};
    if (::stat(path.c_str(), &sb) != 0)
      throw std::runtime_error("database " + path + ": " + std::strerror(errno));
    if (!S_ISREG(sb.st_mode)) throw std::runtime_error("database " + path + ": not a regular file");
    if (::access(path.c_str(), R_OK) != 0)
      throw std::runtime_error("database " + path + ": " + std::strerror(errno));
  } else {
    make_parent_dirs(path);
    struct stat sb {};
    if (::stat(path.c_str(), &sb) != 0) {
      // create it ourselves so the mode is ours (0640), not the umask's
      int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
      if (fd < 0 && errno != EEXIST)
        throw std::runtime_error("database " + path + ": cannot create: " + std::strerror(errno));
      if (fd >= 0) {
        created = true;
        if (auto gid = agentbrake_gid(); gid && geteuid() == 0) {
          if (::fchown(fd, 0, *gid) != 0)
            spdlog::warn("store: chown {} root:agentbrake: {}", path, std::strerror(errno));
        }
        ::close(fd);
      }
    }
  }

  int flags = SQLITE_OPEN_NOMUTEX;  // we serialize access ourselves
  flags |= mode == OpenMode::ReadOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    throw std::runtime_error("database " + path + ": cannot open: " + msg);
  }
  sqlite3_extended_result_codes(db, 1);
  std::unique_ptr<Store> s(new Store(path, mode, db));
  sqlite3_busy_timeout(db, mode == OpenMode::ReadOnly ? 5000 : 2000);

  if (mode == OpenMode::ReadWrite) {
    if (created) exec(db, path, "PRAGMA auto_vacuum=INCREMENTAL");
    {
      Stmt jm(db, path, "PRAGMA journal_mode=WAL");
      jm.step();
      if (jm.text(0) != "wal") fail(db, path, "cannot switch to WAL (journal_mode=" + jm.text(0) + ")");
    }
    // synchronous=NORMAL in WAL: a committed transaction survives a process crash (only an OS
    // crash or power loss can lose the last ones), which is the durability promised.
    exec(db, path, "PRAGMA synchronous=NORMAL");
    exec(db, path, "PRAGMA foreign_keys=ON");
    exec(db, path, ("PRAGMA journal_size_limit=" + std::to_string(kWalSizeLimit)).c_str());
    // Keep -wal/-shm after the daemon exits, so read-only readers (the CLI, group members
    // without write access to the directory) can still open the database.
    int persist = 1;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    s->migrate();
    s->st_->insert_call = Stmt(db, s->path_,
        "INSERT INTO calls (ts_unix_ns, start_unix_ns, end_unix_ns, latency_ms, pid, comm, exe,"
        " cgroup, cgroup_id, tree_root_pid, uid, provider, api, host, method, path, model, stream,"
        " status, complete, request_bytes, response_bytes, capture_truncated, max_tokens,"
        " message_count, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
        " reasoning_tokens, usage_present, estimated, estimate_reason, cost_usd, price_known,"
        " error_type, retry_after_s, ratelimit) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,"
        "?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28,?29,?30,?31,?32,?33,"
        "?34,?35,?36,?37,?38)");
    s->st_->insert_event = Stmt(db, s->path_,
        "INSERT INTO events (ts_unix_ns, kind, cgroup, pid, comm, detail) VALUES (?1,?2,?3,?4,?5,?6)");
  } else {
    int v = read_schema_version(db, path);
    if (v == 0)
      throw std::runtime_error("database " + path + ": not initialized (no schema); start agentbraked first");
    if (v < kSchemaVersion)
      throw std::runtime_error("database " + path + ": schema version " + std::to_string(v) +
                               " is older than this build's " + std::to_string(kSchemaVersion) +
                               "; start agentbraked to migrate it");
    if (v > kSchemaVersion)
      throw std::runtime_error("database " + path + ": schema version " + std::to_string(v) +
                               " is newer than this build's " + std::to_string(kSchemaVersion));
  }
  return s;
}

void Store::migrate() {
  std::lock_guard lk(db_mu_);
  exec(db_, path_, "BEGIN IMMEDIATE");
  try {
    exec(db_, path_, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    int v = read_schema_version(db_, path_);
    if (v > kSchemaVersion)
      throw std::runtime_error("database " + path_ + ": schema version " + std::to_string(v) +
                               " is newer than this build's " + std::to_string(kSchemaVersion) +
                               " (downgrade refused)");
    for (int i = v; i < kSchemaVersion; ++i) {
      exec(db_, path_, kMigrations[i]);
      spdlog::info("store: migrated {} to schema version {}", path_, i + 1);
    }
    if (v != kSchemaVersion) {
      exec(db_, path_, "DELETE FROM schema_version");
      Stmt up(db_, path_, "INSERT INTO schema_version (version) VALUES (?1)");
      up.bind(1, int64_t{kSchemaVersion}).run();
    }
    exec(db_, path_, "COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

int Store::schema_version() const {
  std::lock_guard lk(db_mu_);
  return read_schema_version(db_, path_);
}

std::string Store::journal_mode() const {
  std::lock_guard lk(db_mu_);
  Stmt s(db_, path_, "PRAGMA journal_mode");
  s.step();
  return s.text(0);
}

void Store::require_writable(const char* what) const {
  if (mode_ != OpenMode::ReadWrite)
    throw std::logic_error(std::string("store: ") + what + " on a read-only database " + path_);
}

// ---- writes ---------------------------------------------------------------------------------

nlohmann::ordered_json Store::llm_call_detail(const ab::LlmCall& c) {
  nlohmann::ordered_json d;
  d["provider"] = c.provider;
  d["api"] = c.api;
  d["host"] = c.host;
  d["path"] = util::redact_path(c.path);
  d["model"] = c.model;
  d["stream"] = c.stream;
  d["status"] = c.status;
  d["input_tokens"] = c.input_tokens;
  d["output_tokens"] = c.output_tokens;
  d["cache_read_tokens"] = c.cache_read_tokens;
  d["cache_write_tokens"] = c.cache_write_tokens;
  d["cost_usd"] = c.cost_usd;
  d["latency_ms"] = c.latency_ms;
  d["tree_root_pid"] = c.who.tree_root_pid;
  d["complete"] = c.complete;
  d["estimated"] = c.estimated;
  d["estimate_reason"] = c.estimate_reason;
  d["error_type"] = c.error_type;
  if (c.retry_after_s >= 0)
    d["retry_after_s"] = c.retry_after_s;
  else
    d["retry_after_s"] = nullptr;
  return d;
}

void Store::enqueue(Item item) {
  std::lock_guard lk(q_mu_);
  if (queue_.size() >= kMaxPending) {
    queue_.pop_front();
    ++dropped_;
  }
  queue_.push_back(std::move(item));
}

void Store::add_call(const ab::LlmCall& call) {
  require_writable("add_call");
  ab::LlmCall c = call;
  if (call_ts(c) == 0) c.end_unix_ns = util::now_unix_ns();
  c.path = util::redact_path(c.path);
  // keep only rate-limit headers (defence in depth: nothing else belongs there)
  for (auto it = c.ratelimit.begin(); it != c.ratelimit.end();) {
    std::string k = it->first;
    std::transform(k.begin(), k.end(), k.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (k.find("ratelimit") == std::string::npos && k != "retry-after")
      it = c.ratelimit.erase(it);
    else
      ++it;
  }
  EventRec ev{call_ts(c), "llm_call", c.who.cgroup, c.who.pid, c.who.comm,
              safe_dump(llm_call_detail(c))};
  std::lock_guard lk(q_mu_);
  for (int i = 0; i < 2 && queue_.size() >= kMaxPending; ++i) {
    queue_.pop_front();
    ++dropped_;
  }
  queue_.push_back(std::move(c));
  queue_.push_back(std::move(ev));
}

void Store::add_event(const Event& e) {
  require_writable("add_event");
  EventRec rec{e.ts_unix_ns ? e.ts_unix_ns : util::now_unix_ns(), e.kind, e.cgroup, e.pid, e.comm,
               e.detail.is_null() ? std::string("{}") : safe_dump(e.detail)};
  enqueue(std::move(rec));
}

size_t Store::pending() const {
  std::lock_guard lk(q_mu_);
  return queue_.size();
}

uint64_t Store::dropped() const {
  std::lock_guard lk(q_mu_);
  return dropped_;
}

uint64_t Store::write_errors() const {
  std::lock_guard lk(q_mu_);
  return write_errors_;
}

void Store::write_item(const Item& item) {
  if (const auto* c = std::get_if<ab::LlmCall>(&item)) {
    Stmt& s = st_->insert_call;
    nlohmann::json rl = nlohmann::json::object();
    for (const auto& [k, v] : c->ratelimit) rl[k] = v;
    s.bind(1, call_ts(*c))
        .bind(2, c->start_unix_ns)
        .bind(3, c->end_unix_ns)
        .bind(4, c->latency_ms)
        .bind(5, int64_t{c->who.pid})
        .bind(6, c->who.comm)
        .bind(7, c->who.exe)
        .bind(8, c->who.cgroup)
        .bind(9, static_cast<int64_t>(c->who.cgroup_id))
        .bind(10, int64_t{c->who.tree_root_pid})
        .bind(11, int64_t{c->who.uid})
        .bind(12, c->provider)
        .bind(13, c->api)
        .bind(14, c->host)
        .bind(15, c->method)
        .bind(16, c->path)
        .bind(17, c->model)
        .bind(18, int64_t{c->stream})
        .bind(19, int64_t{c->status})
        .bind(20, int64_t{c->complete})
        .bind(21, static_cast<int64_t>(c->request_bytes))
        .bind(22, static_cast<int64_t>(c->response_bytes))
        .bind(23, int64_t{c->capture_truncated})
        .bind(24, c->max_tokens)
        .bind(25, int64_t{c->message_count})
        .bind(26, c->input_tokens)
        .bind(27, c->output_tokens)
        .bind(28, c->cache_read_tokens)
        .bind(29, c->cache_write_tokens)
        .bind(30, c->reasoning_tokens)
        .bind(31, int64_t{c->usage_present})
        .bind(32, int64_t{c->estimated})
        .bind(33, c->estimate_reason)
        .bind(34, c->cost_usd)
        .bind(35, int64_t{c->price_known})
        .bind(36, c->error_type);
    if (c->retry_after_s >= 0)
      s.bind(37, c->retry_after_s);
    else
      s.bind_null(37);
    s.bind(38, safe_dump(rl));
    s.run();
    s.reset();
  } else {
    const auto& e = std::get<EventRec>(item);
    Stmt& s = st_->insert_event;
    s.bind(1, e.ts_unix_ns)
        .bind(2, e.kind)
        .bind(3, e.cgroup)
        .bind(4, int64_t{e.pid})
        .bind(5, e.comm)
        .bind(6, e.detail_text);
    s.run();
    s.reset();
  }
}

size_t Store::flush() {
  if (mode_ != OpenMode::ReadWrite) return 0;
  std::deque<Item> batch;
  {
    std::lock_guard lk(q_mu_);
    batch.swap(queue_);
  }
  if (batch.empty()) return 0;
  std::lock_guard lk(db_mu_);
  try {
    exec(db_, path_, "BEGIN IMMEDIATE");
    try {
      for (const auto& item : batch) write_item(item);
      exec(db_, path_, "COMMIT");
    } catch (...) {
      st_->insert_call.reset();
      st_->insert_event.reset();
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  } catch (const std::exception& e) {
    std::lock_guard qlk(q_mu_);
    ++write_errors_;
    spdlog::error("store: flush of {} rows failed, kept queued: {}", batch.size(), e.what());
    // put the batch back in front of whatever arrived meanwhile, within the bound
    while (!queue_.empty()) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    while (batch.size() > kMaxPending) {
      batch.pop_front();
      ++dropped_;
    }
    queue_.swap(batch);
    return 0;
  }
  return batch.size();
}

size_t Store::prune(int64_t older_than_ns, size_t max_rows) {
  require_writable("prune");
  constexpr int64_t kBatch = 2000;
  size_t total = 0;
  for (const char* table : {"calls", "events"}) {
    std::string sql = std::string("DELETE FROM ") + table + " WHERE id IN (SELECT id FROM " + table +
                      " WHERE ts_unix_ns < ?1 ORDER BY ts_unix_ns LIMIT ?2)";
    while (total < max_rows) {
      int64_t n = static_cast<int64_t>(std::min<size_t>(kBatch, max_rows - total));
      std::lock_guard lk(db_mu_);
      Stmt del(db_, path_, sql);
      del.bind(1, older_than_ns).bind(2, n).run();
      size_t changed = static_cast<size_t>(sqlite3_changes(db_));
      total += changed;
      if (changed < static_cast<size_t>(n)) break;
    }
  }
  if (total > 0) {
    std::lock_guard lk(db_mu_);
    sqlite3_exec(db_, "PRAGMA incremental_vacuum(2000)", nullptr, nullptr, nullptr);
  }
  return total;
}

uint64_t Store::used_bytes() const {
  std::lock_guard lk(db_mu_);
  auto pragma = [&](const char* name) {
    Stmt st(db_, path_, std::string("PRAGMA ") + name);
    return st.step() ? st.i64(0) : int64_t{0};
  };
  int64_t pages = pragma("page_count") - pragma("freelist_count");
  return static_cast<uint64_t>(std::max<int64_t>(0, pages)) * static_cast<uint64_t>(pragma("page_size"));
}

size_t Store::prune_to_size(uint64_t max_bytes, size_t max_rows) {
  require_writable("prune_to_size");
  constexpr int64_t kBatch = 2000;
  size_t total = 0;
  while (total < max_rows && used_bytes() > max_bytes) {
    size_t round = 0;
    for (const char* table : {"calls", "events"}) {
      int64_t n = static_cast<int64_t>(std::min<size_t>(kBatch, max_rows - total));
      if (n <= 0) break;
      std::lock_guard lk(db_mu_);
      Stmt del(db_, path_,
               std::string("DELETE FROM ") + table + " WHERE id IN (SELECT id FROM " + table + " ORDER BY id LIMIT ?1)");
      del.bind(1, n).run();
      size_t changed = static_cast<size_t>(sqlite3_changes(db_));
      total += changed;
      round += changed;
    }
    if (round == 0) break;  // nothing left to delete: the cap is below the empty database
  }
  if (total > 0) {
    std::lock_guard lk(db_mu_);
    sqlite3_exec(db_, "PRAGMA incremental_vacuum", nullptr, nullptr, nullptr);
  }
  return total;
}

bool Store::checkpoint() {
  require_writable("checkpoint");
  std::lock_guard lk(db_mu_);
  int log = 0, done = 0;
  int rc = sqlite3_wal_checkpoint_v2(db_, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  return rc == SQLITE_OK && log == done;
}

// ---- reads ----------------------------------------------------------------------------------

namespace {
UsageRow read_usage_row(const Stmt& s, int first) {
  UsageRow r;
  r.calls = s.i64(first);
  r.input_tokens = s.i64(first + 1);
  r.output_tokens = s.i64(first + 2);
  r.cache_read_tokens = s.i64(first + 3);
  r.cache_write_tokens = s.i64(first + 4);
  r.cost_usd = s.dbl(first + 5);
  r.estimated_calls = s.i64(first + 6);
  return r;
}
constexpr const char* kSums =
    "count(*), coalesce(sum(input_tokens),0), coalesce(sum(output_tokens),0),"
    " coalesce(sum(cache_read_tokens),0), coalesce(sum(cache_write_tokens),0),"
    " coalesce(sum(cost_usd),0.0), coalesce(sum(estimated),0)";
}  // namespace

UsageReport Store::usage(By by, int64_t since_ns, int64_t until_ns) const {
  UsageReport rep;
  rep.by = by;
  rep.since_ns = since_ns;
  rep.until_ns = until_ns;
  std::string cols;
  switch (by) {
    case By::Cgroup: cols = "cgroup, ''"; break;
    case By::Process: cols = "pid, comm"; break;
    case By::Model: cols = "model, ''"; break;
    case By::Provider: cols = "provider, ''"; break;
  }
  std::string group = by == By::Process ? "pid, comm" : cols.substr(0, cols.find(','));
  std::string sql = "SELECT " + cols + ", " + kSums +
                    " FROM calls WHERE ts_unix_ns >= ?1 AND ts_unix_ns < ?2 GROUP BY " + group;
  std::lock_guard lk(db_mu_);
  Stmt s(db_, path_, sql);
  s.bind(1, since_ns).bind(2, until_ns);
  while (s.step()) {
    UsageRow r = read_usage_row(s, 2);
    r.key = by == By::Process ? std::to_string(s.i64(0)) + " " + s.text(1) : s.text(0);
    rep.rows.push_back(std::move(r));
  }
  std::sort(rep.rows.begin(), rep.rows.end(), [](const UsageRow& a, const UsageRow& b) {
    if (a.cost_usd != b.cost_usd) return a.cost_usd > b.cost_usd;
    if (a.calls != b.calls) return a.calls > b.calls;
    return a.key < b.key;
  });
  return rep;
}

UsageRow Store::sum_since(int64_t since_ns, const CallFilter& f) const {
  std::string sql = std::string("SELECT ") + kSums + " FROM calls WHERE ts_unix_ns >= ?1";
  if (!f.cgroup.empty()) sql += " AND (cgroup = ?2 OR substr(cgroup, 1, length(?2) + 1) = ?2 || '/')";
  if (f.pid) sql += " AND pid = ?3";
  if (f.tree_root_pid) sql += " AND tree_root_pid = ?4";
  if (!f.model.empty()) sql += " AND model = ?5";
  if (!f.provider.empty()) sql += " AND provider = ?6";
  std::lock_guard lk(db_mu_);
  Stmt s(db_, path_, sql);
  s.bind(1, since_ns);
  if (!f.cgroup.empty()) {
    // "/" is the root: its subtree is everything
    std::string cg = f.cgroup.size() > 1 && f.cgroup.back() == '/' ? f.cgroup.substr(0, f.cgroup.size() - 1)
                                                                   : f.cgroup;
    s.bind(2, cg == "/" ? std::string() : cg);
  }
  if (f.pid) s.bind(3, int64_t{f.pid});
  if (f.tree_root_pid) s.bind(4, int64_t{f.tree_root_pid});
  if (!f.model.empty()) s.bind(5, f.model);
  if (!f.provider.empty()) s.bind(6, f.provider);
  s.step();
  return read_usage_row(s, 0);
}

size_t Store::for_each_event(const EventQuery& q,
                             const std::function<bool(const EventRow&)>& fn) const {
  std::string sql =
      "SELECT id, ts_unix_ns, kind, cgroup, pid, comm, detail FROM events"
      " WHERE id > ?1 AND ts_unix_ns >= ?2 AND ts_unix_ns < ?3";
  if (!q.kinds.empty()) {
    sql += " AND kind IN (";
    for (size_t i = 0; i < q.kinds.size(); ++i) sql += (i ? ",?" : "?") + std::to_string(i + 5);
    sql += ")";
  }
  sql += " ORDER BY id LIMIT ?4";
  size_t n = 0;
  int64_t after = q.after_id;
  std::vector<EventRow> page;
  for (;;) {
    size_t want = kEventPage;
    if (q.limit != 0) want = std::min(want, q.limit - n);
    if (want == 0) break;
    page.clear();
    {
      std::lock_guard lk(db_mu_);
      Stmt s(db_, path_, sql);
      s.bind(1, after).bind(2, q.since_ns).bind(3, q.until_ns);
      s.bind(4, static_cast<int64_t>(want));
      for (size_t i = 0; i < q.kinds.size(); ++i) s.bind(static_cast<int>(i + 5), q.kinds[i]);
      while (s.step()) {
        EventRow r;
        r.id = s.i64(0);
        r.ts_unix_ns = s.i64(1);
        r.kind = s.text(2);
        r.cgroup = s.text(3);
        r.pid = static_cast<uint32_t>(s.i64(4));
        r.comm = s.text(5);
        r.detail_text = s.text(6);
        r.detail = nlohmann::json::parse(r.detail_text, nullptr, false);
        if (r.detail.is_discarded()) r.detail = nlohmann::json::object();
        page.push_back(std::move(r));
      }
    }  // statement finished: no read transaction while the callbacks run
    for (const EventRow& r : page) {
      ++n;
      after = r.id;
      if (!fn(r)) return n;
    }
    if (page.size() < want) break;
  }
  return n;
}

std::vector<EventRow> Store::events(const EventQuery& q) const {
  std::vector<EventRow> out;
  for_each_event(q, [&](const EventRow& r) {
    out.push_back(r);
    return true;
  });
  return out;
}

std::vector<EventRow> Store::events(int64_t since_ns, const std::vector<std::string>& kinds,
                                    int64_t after_id, size_t limit) const {
  EventQuery q;
  q.since_ns = since_ns;
  q.kinds = kinds;
  q.after_id = after_id;
  q.limit = limit;
  return events(q);
}

int64_t Store::last_event_id() const {
  std::lock_guard lk(db_mu_);
  Stmt s(db_, path_, "SELECT coalesce(max(id), 0) FROM events");
  s.step();
  return s.i64(0);
}

std::vector<ab::LlmCall> Store::calls(int64_t since_ns, int64_t until_ns, size_t limit) const {
  std::lock_guard lk(db_mu_);
  Stmt s(db_, path_,
         "SELECT start_unix_ns, end_unix_ns, latency_ms, pid, comm, exe, cgroup, cgroup_id,"
         " tree_root_pid, uid, provider, api, host, method, path, model, stream, status, complete,"
         " request_bytes, response_bytes, capture_truncated, max_tokens, message_count,"
         " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,"
         " usage_present, estimated, estimate_reason, cost_usd, price_known, error_type,"
         " retry_after_s, ratelimit FROM calls WHERE ts_unix_ns >= ?1 AND ts_unix_ns < ?2"
         " ORDER BY ts_unix_ns, id LIMIT ?3");
  s.bind(1, since_ns).bind(2, until_ns).bind(3, limit == 0 ? int64_t{-1} : static_cast<int64_t>(limit));
  std::vector<ab::LlmCall> out;
  while (s.step()) {
    ab::LlmCall c;
    int i = 0;
    c.start_unix_ns = s.i64(i++);
    c.end_unix_ns = s.i64(i++);
    c.latency_ms = s.dbl(i++);
    c.who.pid = static_cast<uint32_t>(s.i64(i++));
    c.who.comm = s.text(i++);
    c.who.exe = s.text(i++);
    c.who.cgroup = s.text(i++);
    c.who.cgroup_id = static_cast<uint64_t>(s.i64(i++));
    c.who.tree_root_pid = static_cast<uint32_t>(s.i64(i++));
    c.who.uid = static_cast<uint32_t>(s.i64(i++));
    c.provider = s.text(i++);
    c.api = s.text(i++);
    c.host = s.text(i++);
    c.method = s.text(i++);
    c.path = s.text(i++);
    c.model = s.text(i++);
    c.stream = s.i64(i++) != 0;
    c.status = static_cast<int>(s.i64(i++));
    c.complete = s.i64(i++) != 0;
    c.request_bytes = static_cast<uint64_t>(s.i64(i++));
    c.response_bytes = static_cast<uint64_t>(s.i64(i++));
    c.capture_truncated = s.i64(i++) != 0;
    c.max_tokens = s.i64(i++);
    c.message_count = static_cast<int>(s.i64(i++));
    c.input_tokens = s.i64(i++);
    c.output_tokens = s.i64(i++);
    c.cache_read_tokens = s.i64(i++);
    c.cache_write_tokens = s.i64(i++);
    c.reasoning_tokens = s.i64(i++);
    c.usage_present = s.i64(i++) != 0;
    c.estimated = s.i64(i++) != 0;
    c.estimate_reason = s.text(i++);
    c.cost_usd = s.dbl(i++);
    c.price_known = s.i64(i++) != 0;
    c.error_type = s.text(i++);
    c.retry_after_s = s.null(i) ? -1 : s.dbl(i);
    ++i;
    auto rl = nlohmann::json::parse(s.text(i++), nullptr, false);
    if (rl.is_object())
      for (auto it = rl.begin(); it != rl.end(); ++it)
        if (it.value().is_string()) c.ratelimit[it.key()] = it.value().get<std::string>();
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace ab::store

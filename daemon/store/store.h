// store.h — the SQLite database: every LLM call and every event the daemon records.
//
// One writer (the daemon) and any number of readers (the CLI, opened ReadOnly). WAL journal,
// so readers never block the writer. Writes are queued in memory by add_call()/add_event()
// and committed in ONE transaction by flush(), which the daemon calls every ~200 ms: a crash
// loses at most the unflushed queue. Nothing here blocks for long: flush() is one
// transaction, prune() deletes in bounded batches.
//
// Thread safety: every method may be called from any thread (the queue and the connection are
// each guarded by a mutex).
//
// Secrets: an LlmCall carries none by construction; as a second line of defence the store
// redacts credential-looking query parameters in `path` and keeps only rate-limit headers.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/llm_call.h"

struct sqlite3;

namespace ab::store {

enum class OpenMode {
  ReadWrite,  // creates missing parent directories and the file, migrates the schema
  ReadOnly,   // the file must exist with the current schema; never writes
};

// What `usage` groups by. Keys: cgroup path, "<pid> <comm>", model name, provider name.
enum class By { Cgroup, Process, Model, Provider };
const char* to_string(By by);                    // "cgroup", "process", "model", "provider"
std::optional<By> parse_by(std::string_view s);  // inverse of to_string

struct Event {
  int64_t ts_unix_ns = 0;  // 0 = now (stamped by add_event)
  std::string kind;        // llm_call, budget_exceeded, loop_detected, paused, ...
  std::string cgroup;
  uint32_t pid = 0;
  std::string comm;
  nlohmann::json detail = nlohmann::json::object();
};

struct EventRow {
  int64_t id = 0;  // strictly increasing, never reused (AUTOINCREMENT): --follow polls by id
  int64_t ts_unix_ns = 0;
  std::string kind;
  std::string cgroup;
  uint32_t pid = 0;
  std::string comm;
  std::string detail_text;  // the JSON text as stored (key order preserved)
  nlohmann::json detail;    // the same, parsed
};

struct UsageRow {
  std::string key;
  int64_t calls = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cache_read_tokens = 0;
  int64_t cache_write_tokens = 0;
  double cost_usd = 0;
  int64_t estimated_calls = 0;
};

struct UsageReport {
  By by = By::Cgroup;
  int64_t since_ns = 0;
  int64_t until_ns = 0;
  std::vector<UsageRow> rows;  // most expensive first, then most calls, then key
  UsageRow total() const;      // key "TOTAL"
  // Exactly docs/interface.md `usage --json`: {"by","since","until","rows":[{key,calls,...}]}.
  nlohmann::ordered_json to_json() const;
};

struct EventQuery {
  int64_t since_ns = 0;                                  // ts_unix_ns >= since_ns
  int64_t until_ns = std::numeric_limits<int64_t>::max();  // ts_unix_ns < until_ns
  std::vector<std::string> kinds;                        // empty = every kind
  int64_t after_id = 0;                                  // id > after_id
  size_t limit = 0;                                      // 0 = no limit
};

// Which calls a sum covers. Empty fields match everything. `cgroup` matches the cgroup and
// its whole subtree ("/agents" covers "/agents/a/b").
struct CallFilter {
  std::string cgroup;
  uint32_t pid = 0;
  uint32_t tree_root_pid = 0;
  std::string model;
  std::string provider;
};

// One `events --json` line: {"ts":"2026-11-29T10:00:01.250Z","kind","cgroup","pid","comm",
// "detail":{...},"id":N} (ts in RFC 3339 UTC with milliseconds; detail in its stored order).
nlohmann::ordered_json event_to_json(const EventRow& row);

class Store {
 public:
  static constexpr int kSchemaVersion = 1;
  static constexpr size_t kMaxPending = 200'000;  // beyond this the oldest writes are dropped
  static constexpr size_t kEventPage = 512;
  static constexpr int64_t kWalSizeLimit = 64 << 20;  // the WAL file is truncated to this after a checkpoint

  // Throws std::runtime_error("database <path>: <reason>") when the file cannot be opened,
  // does not exist (ReadOnly), or has a schema this build cannot read.
  static std::unique_ptr<Store> open(const std::string& path, OpenMode mode);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // ---- writes (queued; ReadOnly stores throw std::logic_error) ----
  // Queues the call row and its `llm_call` event (detail = llm_call_detail(call)).
  void add_call(const ab::LlmCall& call);
  void add_event(const Event& event);
  // Commits everything queued in one transaction. Returns the number of rows written
  // (calls + events). On failure the batch stays queued (bounded by kMaxPending), the error is
  // logged and counted in write_errors(), and 0 is returned: it never throws.
  size_t flush();
  size_t pending() const;
  uint64_t dropped() const;       // writes lost because the queue overflowed
  uint64_t write_errors() const;  // failed flushes

  // Deletes calls and events older than `older_than_ns`, in batches of a few thousand rows
  // (each its own short transaction), at most `max_rows` rows in all. Returns rows deleted;
  // call again while it returns max_rows to continue.
  size_t prune(int64_t older_than_ns, size_t max_rows = std::numeric_limits<size_t>::max());
  // Size cap: while the rows take more than `max_bytes` (pages in use, free pages excluded),
  // deletes the oldest calls and events in batches, at most `max_rows` in all, then gives the
  // freed pages back. Returns rows deleted; 0 when under the cap.
  size_t prune_to_size(uint64_t max_bytes, size_t max_rows = std::numeric_limits<size_t>::max());
  uint64_t used_bytes() const;  // pages in use × page size
  // A passive WAL checkpoint (never waits for readers). Returns true when every frame of the
  // WAL is in the database now, false when a reader's snapshot kept some back.
  bool checkpoint();

  // ---- reads (see committed data only) ----
  UsageReport usage(By by, int64_t since_ns, int64_t until_ns) const;
  UsageRow sum_since(int64_t since_ns, const CallFilter& filter = {}) const;  // key ""
  std::vector<EventRow> events(const EventQuery& q) const;
  std::vector<EventRow> events(int64_t since_ns, const std::vector<std::string>& kinds,
                               int64_t after_id = 0, size_t limit = 0) const;
  // Streams rows oldest first (by id); the callback returns false to stop. Returns rows seen.
  // Rows are read in pages of kEventPage, each page's statement finished before its callbacks
  // run: a slow consumer (`events --follow` into a pager) never holds a read transaction, which
  // would keep the writer's WAL from being checkpointed and let it grow without bound.
  size_t for_each_event(const EventQuery& q, const std::function<bool(const EventRow&)>& fn) const;
  int64_t last_event_id() const;  // 0 when empty
  // Calls whose time (end, or start when no end) is in [since, until), oldest first.
  std::vector<ab::LlmCall> calls(int64_t since_ns, int64_t until_ns, size_t limit = 0) const;

  int schema_version() const;
  std::string journal_mode() const;  // "wal"
  const std::string& path() const { return path_; }
  OpenMode mode() const { return mode_; }

  // The detail object of an `llm_call` event: exactly the docs/interface.md fields, in that order.
  static nlohmann::ordered_json llm_call_detail(const ab::LlmCall& call);

 private:
  struct EventRec {
    int64_t ts_unix_ns;
    std::string kind, cgroup;
    uint32_t pid;
    std::string comm, detail_text;
  };
  using Item = std::variant<ab::LlmCall, EventRec>;

  Store(std::string path, OpenMode mode, sqlite3* db);
  void require_writable(const char* what) const;
  void enqueue(Item item);
  void migrate();
  void write_item(const Item& item);  // db_mu_ held, inside a transaction

  std::string path_;
  OpenMode mode_;
  sqlite3* db_ = nullptr;
  mutable std::mutex db_mu_;
  mutable std::mutex q_mu_;
  std::deque<Item> queue_;
  uint64_t dropped_ = 0;
  uint64_t write_errors_ = 0;
  struct Statements;
  std::unique_ptr<Statements> st_;
};

}  // namespace ab::store

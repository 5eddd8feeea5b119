// daemon_impl.h — the manager class behind run_daemon() (daemon.h). Internal to daemon/core:
// the event loop and capture live in daemon.cpp, budget enforcement in enforce.cpp, loop
// detection in loops_glue.cpp, alerts and metrics in operate.cpp.
#pragma once
#include <atomic>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "accounting/live_usage.h"
#include "accounting/prices.h"
#include "alerts/dispatcher.h"
#include "alerts/metrics.h"
#include "brake/budget_engine.h"
#include "capture/opaque_calls.h"
#include "capture/stream_table.h"
#include "control/control.h"
#include "core/capture_freeze.h"
#include "core/daemon.h"
#include "core/endpoints.h"
#include "core/resolver.h"
#include "loader/bpf_runtime.h"
#include "loader/tls_attach.h"
#include "loops/loop_detectors.h"
#include "policy/policy.h"
#include "process/cgroup.h"
#include "process/lineage.h"
#include "store/store.h"
#include "util/duration.h"
#include "util/redact.h"
#include "util/timefmt.h"

struct ring_buffer;

namespace ab::core {

using json = nlohmann::json;

int64_t clock_ns(clockid_t c);
// Whether an entity key ("cgroup:/a", "tree:42", "process:42") covers a process.
bool entity_covers(const std::string& key, const std::string& cgroup, uint32_t tree_root_pid, uint32_t pid);

class Daemon {
 public:
  explicit Daemon(const DaemonOptions& o) : opts_(o) {}
  ~Daemon() { shutdown(); }
  int start();
  int loop();

 private:
  // ---- start-up pieces
  bool load_initial_policy();
  void apply_policy(std::shared_ptr<const policy::Policy> p);
  void sync_endpoints_map();
  void refresh_matches();
  std::vector<const policy::Match*> selecting_rules() const;  // budget and loop rules with a match
  bool selected_as_process(const std::vector<const policy::Match*>& rules, policy::ProcessFacts f) const;
  // Processes already connected to an endpoint get probes; `only`: to one of these keys (just
  // learned), and not watched yet.
  void scan_existing(const std::vector<ab_endpoint_key>* only = nullptr);

  // ---- events
  void drain_ring();
  static int on_ring_record(void* ctx, void* data, size_t size);
  void on_record(const void* data, size_t size);
  void on_proc_event(const ab_proc_event& e);
  void on_connect(const ab_hold_event& e);
  void on_dns(const ab_dns_event& e);
  void on_resolved();  // endpoint names resolved by resolver_
  void on_attach_done();
  void request_attach(uint32_t pid, const char* why);
  void process_exchanges();
  void record_call(LlmCall call, uint32_t pid, uint64_t ssl, uint64_t start_mono, uint64_t end_mono,
                   uint64_t response_end_mono, const Attribution* who = nullptr);
  void confirm_endpoint(uint32_t pid, const protocol::Exchange& ex);
  void on_tick();
  void sweep_watch_map();
  void sweep_stale_holds();
  void on_signal();
  void reload_policy(const std::string& why);
  void shutdown();

  // ---- helpers
  Attribution attribute(uint32_t pid);
  void release_capture_hold(uint32_t pid, const char* why);
  int64_t mono_to_unix(uint64_t mono_ns) const { return int64_t(mono_ns) + unix_minus_mono_; }
  void record_event(const std::string& kind, uint32_t pid, const std::string& cgroup, const std::string& comm,
                    json detail);
  void set_watch(uint32_t pid, uint32_t state);

  // ---- holds as events (holds.cpp): every hold a `paused`, its end a `resumed`
  enum class HoldKind { Capture, Brake };  // a process may be in one of each at once
  struct ActiveHold {
    std::string reason;     // budget, loop, fan_out, pacing, capture
    int64_t since_ns = 0;   // CLOCK_MONOTONIC
    std::string cgroup, comm;
    bool recorded = false;  // its `paused` was recorded, so its `resumed` will be
    json context;           // detail fields both events carry (budgets, detector, entity, via)
  };
  // A hold was taken (the process is stopped or its cgroup frozen). `via`: sigstop | freeze;
  // since_ns: when it was taken (the kernel's record, CLOCK_MONOTONIC), 0 = now.
  void hold_started(HoldKind kind, uint32_t pid, const std::string& reason, const char* via, int64_t since_ns,
                    json context = json::object());
  // The hold of `pid` (if any) ended; `released` says how (room, attached, exited, ...);
  // `end_reason` replaces the reason when the end is itself the news (max_hold, release_all).
  // Returns whether a `resumed` was recorded.
  bool hold_ended(HoldKind kind, uint32_t pid, const std::string& released, const char* end_reason = nullptr,
                  json extra = json::object());
  void end_all_holds(HoldKind kind, const std::string& released, const char* end_reason);
  // Dry run: a request that would have been held (nothing waits: no `resumed` follows).
  void record_dry_run_hold(uint32_t pid, const std::string& reason, json context);
  void count_hold(const std::string& cgroup, const std::string& reason);
  bool capture_event_allowed(uint32_t pid, int64_t now);
  // What holds a loop-paced process: {reason (loop | pacing), detector}.
  std::pair<std::string, std::string> pace_reason(uint32_t pid, int64_t now);

  // ---- opaque processes: no readable TLS, counted at the socket (opaque.cpp)
  // The attach found nothing to read: a process that talks to an endpoint becomes opaque
  // (true); any other stays ignored (false).
  bool judge_unreadable(uint32_t pid, const std::string& why);
  // The kernel says its executable is known opaque (AB_SOCK_OPAQUE on a first connect).
  void opaque_from_kernel(uint32_t pid);
  void become_opaque(uint32_t pid, const std::string& why, bool cached);
  void opaque_track_socket(uint32_t pid, int fd);
  void on_opaque_event(const ab_opaque_event& e);
  void account_opaque(const capture::OpaqueCall& c);
  void opaque_on_exit(uint32_t pid);
  void opaque_tick();
  void note_tls_bytes(const void* record);  // attach health: bytes of a hooked process
  void check_attach_health(int64_t now);
  void opaque_start();
  json opaque_status() const;

  // ---- budgets (enforce.cpp)
  static policy::ProcessFacts facts_of(const Attribution& who);
  brake::CallFacts typical_call(uint32_t pid);
  brake::CallFacts request_facts(uint32_t pid, const protocol::RequestInfo& r);
  void brake_policy_changed();
  bool gated(uint32_t pid);
  void write_gate(uint32_t pid, int64_t credits);
  void drop_gate(uint32_t pid);
  void refresh_gates();
  void note_exceeded(const brake::Decision& d, uint32_t pid, bool held = false);
  void on_request_seen(const capture::CapturedRequest& cr);
  void settle_call(const LlmCall& call, uint32_t pid, uint64_t ssl);
  void on_budget_hold(const ab_hold_event& e);
  // Returns whether a `resumed` was recorded for it.
  bool release_pid(uint32_t pid, uint64_t start_time, const char* why, const char* end_reason = nullptr,
                   json extra = json::object());
  void release_ready_holds();
  void brake_tick();
  void brake_forget(uint32_t pid);
  std::vector<int> entity_pids(const std::string& key);
  void kill_entity(const std::string& key, uint32_t pid, const std::string& reason, const std::string& budget);
  void deny_entity(const std::string& key, uint32_t pid, const std::string& budget);
  void undeny_for(uint32_t pid);
  void release_all_brakes(const char* reason);
  void restore_budgets();

  // ---- loop detectors (loops_glue.cpp)
  loops::ProcessInfo loop_info(uint32_t pid);
  bool loops_enabled() const;
  void scan_channels();
  void loops_on_request(const capture::CapturedRequest& cr, uint64_t call_id);
  void loops_on_response(const LlmCall& call, uint32_t pid, uint64_t call_id, uint64_t start_mono, uint64_t end_mono);
  void act_on_findings(const std::vector<loops::Finding>& findings);
  bool loop_holds(uint32_t pid, int64_t now);  // paced by a loop finding (fan-out aside)
  std::optional<std::string> fan_out_entity(uint32_t pid);
  void report_fan_out_hold(uint32_t pid, const std::string& entity, int64_t now);
  // Calls the entity may still start: max_concurrent less calls in flight and places held
  // (credits out, releases not yet seen) by its processes other than `except_pid`.
  int64_t fan_out_room(const std::string& entity, int64_t now, uint32_t except_pid = 0);
  bool fan_out_full(uint32_t pid, int64_t now);  // its next request start would pass max_concurrent
  int64_t places_held(uint32_t pid) const;
  size_t calls_in_flight(uint32_t pid) const;  // requests seen whose response has not ended

  // ---- pacing and projected spend (pacing.cpp)
  void pace_on_response(const LlmCall& call, uint32_t pid);
  void project_spend(const LlmCall& call, uint32_t pid);

  // ---- alerts, metrics, retention (operate.cpp)
  void operate_policy_changed();
  void on_event_recorded(const store::Event& e);
  void on_alert_results();
  void publish_metrics();
  void start_pruner();
  void stop_pruner();

  // ---- control
  void register_commands();
  json cmd_status();
  json cmd_agents();
  json cmd_brake(const std::string& what, const json& args);
  void save_manual_pauses();

  DaemonOptions opts_;
  std::string pin_dir_;
  std::shared_ptr<const policy::Policy> policy_;
  accounting::PriceTable prices_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<loader::BpfRuntime> rt_;
  std::unique_ptr<loader::AttachWorker> worker_;
  std::unique_ptr<control::Server> server_;
  ring_buffer* ring_ = nullptr;
  std::string cg_mount_;
  std::unique_ptr<process::CgroupResolver> cgroups_;
  process::ProcessTable procs_;
  std::unique_ptr<capture::StreamTable> streams_;
  std::unique_ptr<CaptureFreezer> freezer_;
  EndpointSet endpoints_;
  std::unique_ptr<Resolver> resolver_;  // endpoint names, resolved off the loop
  std::set<ab_endpoint_key, EndpointKeyLess> kernel_endpoints_;
  std::set<uint64_t> matched_cgroups_;
  std::set<uint32_t> matched_pids_;
  accounting::LiveUsage live_;

  struct Watched {
    uint64_t start_ns = 0;
    bool attaching = false;
    bool attached = false;
    std::vector<std::string> objects;
    std::string endpoint_host;
    std::string endpoint_api;
    uint64_t llm_calls = 0;
    uint64_t host_mismatches = 0;  // non-LLM exchanges whose Host is not the endpoint's name
    bool opaque = false;            // no readable TLS: counted at the socket (`attached` too)
    uint64_t exchanges = 0;         // HTTP exchanges parsed (LLM or not)
    uint64_t tls_out = 0, tls_in = 0;  // plaintext bytes captured each way (attach health)
    int64_t tls_first_ns = 0;          // when the first of them arrived (mono)
    bool health_reported = false;      // capture_blind for "bytes but nothing parsed" recorded
    std::vector<int> endpoint_fds;  // fds of its connects to endpoints before it was judged
  };
  std::unordered_map<uint32_t, Watched> watched_;

  struct Agent {  // one agent tree, as `agents` shows it
    uint32_t root = 0;
    std::string cgroup, comm, provider, model;
    std::set<uint32_t> pids;
    uint64_t calls = 0;
    int64_t input = 0, output = 0;
    double cost = 0;
    int64_t last_unix_ns = 0;
    bool opaque = false;  // some of its calls were counted at the socket (capture: opaque)
  };
  std::map<uint32_t, Agent> agents_;

  // opaque processes (opaque.cpp)
  struct OpaqueExe {
    int64_t mtime_sec = 0;
    uint32_t mtime_nsec = 0;
    std::string why;
  };
  std::map<std::pair<uint64_t, uint64_t>, OpaqueExe> opaque_exes_;  // (kernel dev, inode)
  capture::OpaqueTracker opaque_;
  std::unordered_map<uint32_t, Attribution> opaque_who_;     // pid → who, kept past its exit
  std::unordered_map<uint32_t, int64_t> opaque_exited_;      // pid → exit (mono): leftovers end later
  std::unordered_map<uint32_t, std::string> opaque_why_;     // pid → why it is opaque
  std::unordered_map<uint32_t, std::pair<std::string, std::string>> opaque_ep_;  // pid → endpoint (api, host)
  bool opaque_capture_ = false;                              // sock.bpf.c attached
  struct Paused {
    std::string target, reason;
    bool cgroup = false;
    uint64_t start_ns = 0;
    int64_t since_mono_ns = 0;  // when the pause was taken (held_ms of its `resumed`)
  };
  std::map<std::string, Paused> paused_;  // manual brakes in force, by target

  // budgets
  std::unique_ptr<brake::BudgetEngine> engine_;
  std::unique_ptr<CaptureFreezer> budget_freezer_;  // foreground jobs held by a budget
  std::map<std::pair<uint32_t, uint64_t>, std::deque<uint64_t>> reservations_;  // (pid, SSL*) → FIFO
  std::unordered_map<uint32_t, uint64_t> prereserved_;  // admitted at release, for its next request
  std::unordered_map<uint32_t, int64_t> gate_credits_;  // what the gate map holds (less what was seen used)
  // Requests let go at a hold's release and not seen yet: each takes a fan-out place until seen.
  std::unordered_map<uint32_t, int64_t> released_unseen_;
  std::unordered_map<uint32_t, uint64_t> held_pids_;    // held by a budget → start time
  struct LastCall {
    int64_t input = 0, output = 0;
    double cost = 0;
  };
  std::unordered_map<uint32_t, LastCall> last_call_;
  struct DeniedEntity {
    std::vector<uint64_t> cgroups;
    std::vector<uint32_t> pids;
  };
  std::map<std::string, DeniedEntity> denied_entities_;
  std::set<uint32_t> denied_pids_;
  struct KilledEntity {
    std::string reason;
    int64_t at_ns = 0;
  };
  std::map<std::string, KilledEntity> killed_;
  bool deny_available_ = false;
  std::map<std::string, int64_t> last_exceeded_;  // budget + bucket → last budget_exceeded (mono)

  // loops
  loops::LoopDetectors loops_;
  std::unordered_map<uint32_t, int64_t> loop_paced_until_;  // pid → mono ns
  std::unordered_map<uint32_t, std::string> paced_by_;  // pid → the detector (or "pacing") that set it
  std::set<uint32_t> loop_held_;  // held at a request start by a loop rule
  std::map<std::string, int64_t> fan_out_room_;  // scratch of refresh_gates()
  std::map<std::string, int64_t> fan_out_reported_;  // entity → last held (episode tracking)
  std::unordered_map<uint32_t, int64_t> storm_until_;  // retry storm found: pace by retry-after until
  std::map<std::pair<uint32_t, uint64_t>, std::deque<uint64_t>> call_ids_;  // (pid, SSL*) → FIFO
  uint64_t next_call_id_ = 1;

  // pacing / projection
  std::map<std::string, std::deque<std::pair<int64_t, double>>> spend_samples_;  // bucket → (mono, usd)
  std::map<std::string, int64_t> last_projected_;

  // operate
  std::unique_ptr<alerts::AlertDispatcher> alerts_;
  std::unique_ptr<alerts::MetricsServer> metrics_;
  std::string metrics_listen_;
  struct ActionCounts {
    std::map<std::string, uint64_t> holds;  // by reason
    uint64_t denials = 0, kills = 0;
  };
  std::map<std::string, ActionCounts> metric_actions_;
  std::map<std::string, uint64_t> detector_firings_;
  std::unordered_map<uint32_t, ActiveHold> capture_holds_, brake_holds_;
  std::unordered_map<uint32_t, int64_t> capture_recorded_at_;  // pid → its last recorded capture hold
  double capture_event_tokens_ = -1;  // capture holds recorded: a token bucket (-1: full, unset)
  int64_t capture_event_tokens_at_ = 0;
  std::thread pruner_;
  std::mutex pruner_mu_;
  std::condition_variable pruner_cv_;
  bool pruner_stop_ = false;
  std::atomic<int64_t> retention_ms_{30LL * 24 * 3600 * 1000};

  int epfd_ = -1, sigfd_ = -1, timerfd_ = -1;
  bool stop_ = false;
  int64_t started_mono_ = 0;
  int64_t unix_minus_mono_ = 0;
  uint64_t tick_ = 0;
  uint64_t watchdog_usec_ = 0;
  std::map<std::string, uint64_t> stats_;  // daemon-side counters (status/metrics)
};


}  // namespace ab::core

// daemon_impl.h — the manager class behind run_daemon() (daemon.h). Internal to daemon/core:
// the event loop and capture live in daemon.cpp; admission is the gate's (daemon/gate), driven
// from enforce.cpp and applied by KernelEffects (kernel_effects.h); loop detection in
// loops_glue.cpp, provider pacing in pacing.cpp, alerts and metrics in operate.cpp.
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
#include "telemetry/otlp_exporter.h"
#include "brake/budget_engine.h"
#include "capture/opaque_calls.h"
#include "capture/stream_table.h"
#include "control/control.h"
#include "gate/ledger.h"
#include "core/capture_freeze.h"
#include "core/daemon.h"
#include "core/endpoints.h"
#include "core/kernel_effects.h"
#include "core/resolver.h"
#include "fleet/fleet_worker.h"
#include "fleet/lease_book.h"
#include "loader/bpf_runtime.h"
#include "loader/tls_attach.h"
#include "loops/loop_detectors.h"
#include "policy/policy.h"
#include "process/cgroup.h"
#include "process/lineage.h"
#include "store/store.h"
#include "util/duration.h"
#include "util/redact.h"
#include "core/daemon_counters.h"
#include "util/timefmt.h"

struct ring_buffer;

namespace ab::core {

using json = nlohmann::json;

int64_t clock_ns(clockid_t c);
inline constexpr int64_t kTickMs = 100;  // the timer's period
// Lets go of the manual pauses recorded in RUN_DIR/manual-paused (a crashed daemon's) and
// removes the record. Returns the targets released. (manual_brake.cpp)
std::vector<std::string> release_manual_pauses(const std::string& run_dir, const std::string& cg_mount);
// The --cgroup-scope a daemon of these options ran with: the flag, else the one its start-up
// recorded in the run dir, else "/" (cgroup_scope.cpp). Recorded cgroups are relative to it.
std::string cgroup_scope_for_release(const DaemonOptions& opts);
// A capture hold never lasts longer (the gate's capture bound; stale kernel records too).
inline constexpr int64_t kStaleCaptureHoldNs = 5'000'000'000;
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
  // --cgroup-scope: checks the scope, makes it process-wide and tells the kernel side its root
  // (cgroup_scope.cpp). false (logged) when it is not a cgroup v2 directory.
  bool set_up_cgroup_scope(loader::RuntimeOptions& ro);
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
  // Tells the gate of a capture hold at a first connect (it ends when the process is gated).
  void report_capture_hold(const ab_hold_event& e, gate::HoldReport::Taken taken);
  // ---- endpoints learned (learn_endpoints.cpp): hints for the teaching uid until confirmed
  void on_dns(const ab_dns_event& e);
  // The first write of a candidate's socket to an unknown address: its ClientHello's server
  // name, when it is an endpoint's, teaches that address like a DNS answer.
  void on_sni(const ab_sni_event& e);
  void learn_endpoint(uint32_t uid, const std::string& name, const std::vector<ab_endpoint_key>& addrs,
                      const char* source);
  void on_resolved();  // endpoint names resolved by resolver_ (the daemon's own answers)
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
  // A capture record the gate may not know of (its ring event was lost): let go if still one.
  void release_kernel_capture_hold(uint32_t pid);
  int64_t mono_to_unix(uint64_t mono_ns) const { return int64_t(mono_ns) + unix_minus_mono_; }
  void record_event(const std::string& kind, uint32_t pid, const std::string& cgroup, const std::string& comm,
                    json detail);
  void set_watch(uint32_t pid, uint32_t state);

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

  // ---- the gate (enforce.cpp): inputs to the ledger, its effects applied and recorded
  static policy::ProcessFacts facts_of(const Attribution& who);
  gate::ProcessInfo gate_info(uint32_t pid);
  void apply_gate(const gate::EffectList& effects);
  void record_gate_event(const gate::Event& e);
  void brake_policy_changed();
  void on_request_seen(const capture::CapturedRequest& cr);
  void settle_call(const LlmCall& call, uint32_t pid, uint64_t ssl);
  void on_budget_hold(const ab_hold_event& e);
  void brake_tick();
  void brake_forget(uint32_t pid);
  void release_all_brakes();
  void restore_budgets();
  void count_hold(const std::string& cgroup, const std::string& reason);  // agentbrake_holds_total

  // ---- loop detectors (loops_glue.cpp)
  loops::ProcessInfo loop_info(uint32_t pid);
  bool loops_enabled() const;
  void scan_channels();
  void loops_on_request(const capture::CapturedRequest& cr, uint64_t call_id);
  void loops_on_response(const LlmCall& call, uint32_t pid, uint64_t call_id, uint64_t start_mono, uint64_t end_mono);
  void act_on_findings(const std::vector<loops::Finding>& findings);

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

  // ---- OTLP export, per-model and budget metrics (telemetry.cpp)
  void telemetry_policy_changed();
  void telemetry_on_call(const LlmCall& call);
  void telemetry_tick();
  void fill_model_and_budget_metrics(std::map<std::pair<std::string, std::string>, alerts::ModelAggregate>& models,
                                     std::vector<alerts::BudgetGauge>& budgets, uint64_t& folded);
  void add_telemetry_counters(json& counters);

  // ---- fleet budgets (fleet_glue.cpp)
  void fleet_policy_changed();
  void fleet_watch_fd();
  void fleet_tick();
  void on_fleet_ready();
  json cmd_fleet_status();
  json fleet_summary() const;
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
  // Holds foreground jobs whose cgroup is shared (both freezers'; the loop thread is the tracer).
  std::shared_ptr<PtraceHolder> tracer_;
  std::unique_ptr<CaptureFreezer> freezer_;
  EndpointSet endpoints_;
  std::unique_ptr<Resolver> resolver_;  // endpoint names, resolved off the loop
  std::set<ab_endpoint_key, EndpointKeyLess> kernel_endpoints_;
  std::set<EndpointHint, EndpointHintLess> kernel_hints_;  // mirrored in the endpoint_hints map
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
    bool plain_wanted = false;      // it connected to a plain-HTTP endpoint (`tls: false`)
    bool plain = false;             // its plain-HTTP probes are attached
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

  // the gate
  std::unique_ptr<gate::Ledger> gate_;
  std::unique_ptr<KernelEffects> effects_;
  std::unique_ptr<CaptureFreezer> budget_freezer_;  // foreground jobs held at a request start
  std::map<std::pair<uint32_t, bool>, json> hold_context_;  // (pid, capture?) → its paused's context
  bool deny_available_ = false;

  // fleet budgets: the leases (the engine's LeaseSource) and the Redis worker
  std::unique_ptr<fleet::LeaseBook> fleet_book_;
  std::unique_ptr<fleet::FleetWorker> fleet_worker_;
  // loops
  loops::LoopDetectors loops_;
  struct Storm {  // a retry storm found: every later request waits out its retry-after
    int64_t until_ns = 0;
    policy::Action action = policy::Action::Throttle;
    std::vector<gate::EntityKey> entities;
  };
  std::unordered_map<uint32_t, Storm> storm_until_;
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
  alerts::CallMetrics call_metrics_;                 // by bounded (provider, model)
  std::unique_ptr<telemetry::OtlpExporter> otlp_;    // created at the first `otlp:`, kept (disabled) after
  int64_t otlp_next_metrics_mono_ = 0;
  std::thread pruner_;
  std::mutex pruner_mu_;
  std::condition_variable pruner_cv_;
  bool pruner_stop_ = false;
  std::atomic<int64_t> retention_ms_{30LL * 24 * 3600 * 1000};
  std::atomic<uint64_t> retention_max_bytes_{0};  // 0: no size cap

  int epfd_ = -1, sigfd_ = -1, timerfd_ = -1;
  bool stop_ = false;
  int64_t started_mono_ = 0;
  int64_t unix_minus_mono_ = 0;
  uint64_t tick_ = 0;
  uint64_t watchdog_usec_ = 0;
  uint32_t drain_records_ = 0;      // records read in this ring pass (drain_ring bounds it)
  bool quiet_data_records_ = false;  // data records need not wake the loop while it polls
  bool polling_ring_ = false;        // records flow: the loop drains every kQuietDrainMs
  uint32_t idle_polls_ = 0;          // polls in a row that read nothing
  int64_t drain_deadline_ns_ = 0;   // and until when it may go on
  DaemonCounters stats_;  // daemon-side counters (status/metrics)
};


}  // namespace ab::core

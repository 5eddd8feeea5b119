// enforce.cpp — the gate, driven: what the daemon tells the ledger (daemon/gate) and where its
// effects are applied (KernelEffects) and recorded.
//
// Every admission decision is the ledger's: credits, holds of every kind, releases oldest
// first, fan-out places, max_hold and its escalation, deny and kill. This file turns kernel
// records and reassembled calls into ledger inputs, the ledger's effects into map writes,
// signals and events, and answers what status, agents and metrics ask of it.
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/daemon_impl.h"
#include "gate/event_json.h"
#include "loops/loop_detectors.h"
#include "process/procfs.h"

namespace ab::core {

bool entity_covers(const std::string& key, const std::string& cgroup, uint32_t tree_root_pid, uint32_t pid) {
  auto e = gate::EntityKey::parse(key);
  return e && e->covers(cgroup, tree_root_pid, pid);
}

policy::ProcessFacts Daemon::facts_of(const Attribution& who) {
  policy::ProcessFacts f;
  f.cgroup = who.cgroup.empty() ? "/" : who.cgroup;
  if (auto u = process::systemd_unit_of(f.cgroup)) f.unit = *u;
  f.exe = who.exe;
  f.comm = who.comm;
  f.uid = who.uid;
  return f;
}

gate::ProcessInfo Daemon::gate_info(uint32_t pid) {
  const Attribution who = attribute(pid);
  gate::ProcessInfo i;
  i.pid = pid;
  if (const auto* e = procs_.find(static_cast<int>(pid))) i.start_time = e->start_ns;
  i.tree_root_pid = who.tree_root_pid;
  i.facts = facts_of(who);
  return i;
}

void Daemon::apply_gate(const gate::EffectList& effects) {
  if (effects_) effects_->apply_all(effects);
}

void Daemon::brake_policy_changed() {
  const int64_t now = clock_ns(CLOCK_MONOTONIC);
  if (!effects_) {
    KernelEffects::Hooks hooks;
    hooks.record = [this](const gate::Event& e) { record_gate_event(e); };
    hooks.cgroup_of = [this](uint32_t pid) { return attribute(pid).cgroup; };
    hooks.members = [this](const gate::EntityKey& e) {
      std::vector<std::pair<int, uint64_t>> out;
      std::vector<int> pids = e.kind == gate::EntityKey::Kind::Tree ? procs_.tree_members(static_cast<int>(e.pid))
                                                                    : std::vector<int>{static_cast<int>(e.pid)};
      for (int p : pids) {
        const auto* pe = procs_.find(p);
        out.emplace_back(p, pe ? pe->start_ns : 0);
      }
      return out;
    };
    hooks.hold_taken = [this](uint32_t pid, gate::HoldReason r) {
      count_hold(attribute(pid).cgroup, std::string(gate::to_string(r)));
    };
    const std::string self_cg = process::read_cgroup_path(getpid()).value_or("/");
    effects_ = std::make_unique<KernelEffects>(*rt_, freezer_.get(), budget_freezer_.get(), cg_mount_, self_cg,
                                               std::move(hooks));
    effects_->set_deny_available(deny_available_);
  }
  if (!gate_) {
    gate::Ledger::Options o;
    o.dry_run = opts_.dry_run;
    o.capture_bound_ns = kStaleCaptureHoldNs;
    o.price = [this](const std::string& model, int64_t in, int64_t out) {
      LlmCall est;
      est.model = model;
      est.input_tokens = in;
      est.output_tokens = out;
      accounting::price_call(est, prices_);
      return est.cost_usd;
    };
    gate_ = std::make_unique<gate::Ledger>(policy_, std::move(o));
    apply_gate(gate_->tick(now));
  } else {
    apply_gate(gate_->set_policy(policy_, now));
  }
}

// What each gate event looks like in the store: the ledger's detail (gate/event_json.h) and
// what only the host knows (a fan-out episode's members, a kill's processes, a hold's context
// repeated on its resumed).
void Daemon::record_gate_event(const gate::Event& e) {
  const Attribution who = attribute(e.pid);
  json d = gate::detail_json(e);
  std::string kind(gate::to_string(e.kind()));
  if (const auto* p = std::get_if<gate::Paused>(&e.what)) {
    if (!e.dry_run) {
      json ctx = json::object();
      for (const char* k : {"budgets", "buckets", "detector", "entity"})
        if (d.contains(k)) ctx[k] = d[k];
      hold_context_[{e.pid, p->reason == gate::HoldReason::Capture}] = std::move(ctx);
    }
  } else if (const auto* r = std::get_if<gate::Resumed>(&e.what)) {
    auto it = hold_context_.find({e.pid, r->reason == gate::HoldReason::Capture});
    if (it != hold_context_.end()) {
      for (const auto& [k, v] : it->second.items()) d.emplace(k, v);
      hold_context_.erase(it);
    }
    if (r->end == gate::HoldEnd::MaxHold)
      spdlog::warn("pid {} held {:.1f}s ≥ max_hold: {}", e.pid, double(r->held_ns) / 1e9,
                   r->escalation ? std::string(policy::to_string(*r->escalation)) : "released");
  } else if (const auto* b = std::get_if<gate::BudgetExceeded>(&e.what)) {
    const auto& x = b->exceeded;
    spdlog::warn("budget {} exceeded by {}: {} {}/{} in {} → {}{}", x.bucket.budget, x.bucket.key,
                 d["kind"].get<std::string>(), x.level, x.limit,
                 d["window"].is_null() ? "flight" : d["window"].get<std::string>(), d["action"].get<std::string>(),
                 e.dry_run ? " (dry run)" : "");
  } else if (const auto* k = std::get_if<gate::Killed>(&e.what)) {
    std::vector<int> pids;
    if (k->entity.kind == gate::EntityKey::Kind::Cgroup) {
      if (!cg_mount_.empty()) pids = process::cgroup_procs_recursive(cg_mount_, k->entity.cgroup);
    } else if (k->entity.kind == gate::EntityKey::Kind::Tree) {
      pids = procs_.tree_members(static_cast<int>(k->entity.pid));
    } else {
      pids = {static_cast<int>(k->entity.pid)};
    }
    d["pids"] = pids;
    if (effects_ && effects_->refused(k->entity))
      d["error"] = "refused: the entity holds the daemon, init or the root cgroup";
    spdlog::warn("killed {} ({} process(es), reason {}{})", k->entity.str(), pids.size(), d["reason"].get<std::string>(),
                 e.dry_run ? ", dry run" : "");
  } else if (const auto* dn = std::get_if<gate::Denied>(&e.what)) {
    d["connects_refused"] = deny_available_;
    if (effects_ && effects_->refused(dn->entity))
      d["error"] = "refused: the entity holds the daemon, init or the root cgroup";
  } else if (const auto* f = std::get_if<gate::FanOutHeld>(&e.what)) {
    // The fan-out finding (the detector never sees the excess call: it never leaves): its
    // members are the entity's watched processes.
    loops::Finding fd;
    fd.detector = std::string(loops::kFanOut);
    fd.entity = f->entity.str();
    fd.entities = {fd.entity};
    fd.action = f->action;
    const int64_t now = clock_ns(CLOCK_MONOTONIC);
    fd.at_ns = now;
    fd.evidence.concurrent = f->concurrent;
    fd.evidence.since_ns = now;
    for (const auto& [p, w] : watched_) {
      if (!w.attached || fd.members.size() >= loops::kMaxMembers) continue;
      if (gate_ && gate_->fan_out_entity(p) == f->entity) fd.members.push_back(loop_info(p).member());
    }
    if (fd.members.empty()) fd.members.push_back(loop_info(e.pid).member());
    json ld = loops::to_json(fd);
    ld["action"] = std::string(policy::to_string(f->action));
    ld["dry_run"] = e.dry_run;
    ld["concurrent"] = f->concurrent;
    spdlog::warn("loop detected (fan_out) in {}: {} member(s) → {}", fd.entity, fd.members.size(),
                 ld["action"].get<std::string>());
    const auto& first = fd.members.front();
    record_event("loop_detected", first.pid, first.cgroup, first.comm, std::move(ld));
    return;
  }
  record_event(kind, e.pid, who.cgroup, who.comm, std::move(d));
}

void Daemon::on_request_seen(const capture::CapturedRequest& cr) {
  if (!gate_) return;
  gate::RequestStart r;
  r.pid = cr.pid;
  r.stream = cr.ssl;
  r.gated_start = cr.request.method == "POST";  // the kernel gates request starts that begin "POST "
  r.is_llm = cr.request.is_llm;
  r.est_input_tokens = std::max<int64_t>(1, static_cast<int64_t>(cr.request.request_bytes / 4));
  r.max_tokens = cr.request.max_tokens > 0 ? cr.request.max_tokens : -1;
  r.model = cr.request.model;
  apply_gate(gate_->request_seen(r, clock_ns(CLOCK_MONOTONIC)));
}

void Daemon::settle_call(const LlmCall& call, uint32_t pid, uint64_t ssl) {
  if (!gate_) return;
  gate::ResponseEnd r;
  r.pid = pid;
  r.stream = ssl;
  r.input_tokens = call.input_tokens;
  r.output_tokens = call.output_tokens;
  r.cost_usd = call.cost_usd;
  r.usage_malformed = call.usage_malformed;
  apply_gate(gate_->response_ended(r, clock_ns(CLOCK_MONOTONIC)));
}

// The kernel stopped (or, for a foreground job, could not stop) a request start without credit.
void Daemon::on_budget_hold(const ab_hold_event& e) {
  if (!gate_) return;
  gate::HoldReport r;
  r.pid = e.hdr.pid;
  r.start_time = e.start_time_ns;
  r.capture = false;
  r.at_ns = static_cast<int64_t>(e.hdr.ts_ns);
  if (e.sock.flags & AB_SOCK_HELD) r.taken = gate::HoldReport::Taken::Stopped;
  else if (e.sock.flags & AB_SOCK_FOREGROUND) r.taken = gate::HoldReport::Taken::Foreground;
  else r.taken = gate::HoldReport::Taken::Joined;  // held already by another of its threads
  apply_gate(gate_->hold_reported(r, clock_ns(CLOCK_MONOTONIC)));
}

void Daemon::brake_tick() {
  if (!gate_) return;
  apply_gate(gate_->tick(clock_ns(CLOCK_MONOTONIC)));
  if (budget_freezer_)
    budget_freezer_->sweep(static_cast<uint64_t>(clock_ns(CLOCK_MONOTONIC)),
                           static_cast<uint64_t>(policy_->max_hold.count()) * 1'000'000 + 5'000'000'000ull);
}

void Daemon::brake_forget(uint32_t pid) {
  hold_context_.erase({pid, true});
  hold_context_.erase({pid, false});
  if (!gate_) return;
  apply_gate(gate_->process_exited(pid, clock_ns(CLOCK_MONOTONIC)));
  gate_->budgets().forget_process(pid);  // its cached budget matches
}

void Daemon::release_all_brakes() {
  if (!gate_) return;
  apply_gate(gate_->release_all(clock_ns(CLOCK_MONOTONIC)));
  if (budget_freezer_) budget_freezer_->release_all();
}

// Day and hour windows survive a restart: rebuilt from the calls in the database.
void Daemon::restore_budgets() {
  if (!gate_ || policy_->budgets.empty()) return;
  int64_t longest_ms = 0;
  for (const auto& b : policy_->budgets)
    for (const auto& l : b.limits) longest_ms = std::max<int64_t>(longest_ms, l.window.count());
  if (longest_ms <= 0) return;
  const int64_t now_unix = clock_ns(CLOCK_REALTIME), now_mono = clock_ns(CLOCK_MONOTONIC);
  std::vector<brake::HistoryRecord> hist;
  for (const auto& c : store_->calls(now_unix - longest_ms * 1'000'000, now_unix)) {
    brake::HistoryRecord h;
    h.ts_ns = c.start_unix_ns - now_unix + now_mono;
    h.pid = c.who.pid;
    h.tree_root_pid = c.who.tree_root_pid;
    h.facts = facts_of(c.who);
    h.tokens = c.input_tokens + c.output_tokens;
    h.cost_usd = c.cost_usd;
    hist.push_back(std::move(h));
  }
  gate_->budgets().restore(hist, now_mono);
  if (!hist.empty()) spdlog::info("budgets: {} past call(s) restored into their windows", hist.size());
}

}  // namespace ab::core

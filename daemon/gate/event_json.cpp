#include "gate/event_json.h"

#include <chrono>

#include "util/duration.h"

namespace ab::gate {

namespace {

using json = nlohmann::json;

struct Detail {
  const Event& e;

  json operator()(const BudgetExceeded& b) const {
    const auto& x = b.exceeded;
    json d{{"budget", x.bucket.budget}, {"bucket", x.bucket.key}, {"action", std::string(policy::to_string(x.action))},
           {"dry_run", e.dry_run},      {"requested", x.requested}, {"limit", x.limit},
           {"level", x.level}};
    if (x.reason == brake::Exceeded::Reason::Inflight) {
      d["kind"] = "inflight";
      d["window"] = nullptr;
    } else {
      d["kind"] = std::string(policy::to_string(x.kind));
      d["window"] = util::format_policy_duration(std::chrono::milliseconds(x.window_ns / 1'000'000));
    }
    return d;
  }
  json operator()(const Paused& p) const {
    json d{{"target", std::to_string(e.pid)}, {"pid", e.pid}, {"reason", std::string(to_string(p.reason))},
           {"via", std::string(to_string(p.via))}, {"dry_run", e.dry_run}};
    if (p.reason == HoldReason::Budget) {
      d["budgets"] = p.budgets;
      d["buckets"] = p.buckets;
    }
    if (!p.detector.empty()) d["detector"] = p.detector;
    if (p.entity) d["entity"] = p.entity->str();
    return d;
  }
  json operator()(const Resumed& r) const {
    const bool news = r.end == HoldEnd::MaxHold || r.end == HoldEnd::ReleaseAll;
    json d{{"target", std::to_string(e.pid)},
           {"pid", e.pid},
           {"reason", std::string(news ? to_string(r.end) : to_string(r.reason))},
           {"via", std::string(to_string(r.via))},
           {"dry_run", e.dry_run},
           {"held_ms", double(r.held_ns / 1000) / 1000.0},
           {"released", std::string(to_string(r.end))}};
    if (news) d["hold_reason"] = std::string(to_string(r.reason));
    if (r.escalation) {
      d["escalation"] = std::string(policy::to_string(*r.escalation));
      d["held_s"] = double(r.held_ns) / 1e9;
    }
    return d;
  }
  json operator()(const Undenied& u) const {
    return {{"target", u.entity.target()}, {"entity", u.entity.str()}, {"reason", "budget"},
            {"dry_run", e.dry_run},        {"was", "denied"}};
  }
  json operator()(const Denied& x) const {
    return {{"target", x.entity.target()}, {"entity", x.entity.str()}, {"reason", "budget"},
            {"budget", x.by},              {"dry_run", e.dry_run}};
  }
  json operator()(const Killed& k) const {
    json d{{"target", k.entity.target()}, {"entity", k.entity.str()}, {"reason", std::string(to_string(k.cause))},
           {"dry_run", e.dry_run}};
    if (!k.by.empty() && k.cause != KillCause::Loop) d["budget"] = k.by;
    return d;
  }
  json operator()(const FanOutHeld& f) const {
    return {{"detector", "fan_out"},       {"entity", f.entity.str()},
            {"entities", {f.entity.str()}}, {"action", std::string(policy::to_string(f.action))},
            {"dry_run", e.dry_run},        {"concurrent", f.concurrent}};
  }
};

}  // namespace

nlohmann::json detail_json(const Event& e) { return std::visit(Detail{e}, e.what); }

}  // namespace ab::gate

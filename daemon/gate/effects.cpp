#include "gate/effects.h"

namespace ab::gate {

std::string_view to_string(HoldReason r) {
  switch (r) {
    case HoldReason::Capture: return "capture";
    case HoldReason::Budget: return "budget";
    case HoldReason::Loop: return "loop";
    case HoldReason::FanOut: return "fan_out";
    case HoldReason::Pacing: return "pacing";
  }
  return "budget";
}

std::string_view to_string(HoldVia v) {
  return v == HoldVia::Freeze ? "freeze" : v == HoldVia::Ptrace ? "ptrace" : "sigstop";
}

std::string_view to_string(HoldEnd e) {
  switch (e) {
    case HoldEnd::Room: return "room";
    case HoldEnd::PauseOver: return "pause_over";
    case HoldEnd::MaxHold: return "max_hold";
    case HoldEnd::Killed: return "killed";
    case HoldEnd::Exited: return "exited";
    case HoldEnd::ReleaseAll: return "release_all";
    case HoldEnd::Attached: return "attached";
    case HoldEnd::NotAttached: return "not_attached";
    case HoldEnd::CaptureBound: return "capture_bound";
    case HoldEnd::BecameBudgetHold: return "budget_hold";
    case HoldEnd::Ungated: return "ungated";
  }
  return "room";
}

std::string_view to_string(EventKind k) {
  switch (k) {
    case EventKind::BudgetExceeded: return "budget_exceeded";
    case EventKind::Paused: return "paused";
    case EventKind::Resumed: return "resumed";
    case EventKind::Denied: return "denied";
    case EventKind::Killed: return "killed";
    case EventKind::LoopDetected: return "loop_detected";
  }
  return "paused";
}

std::string_view to_string(KillCause c) {
  switch (c) {
    case KillCause::Budget: return "budget";
    case KillCause::MaxHold: return "max_hold";
    case KillCause::Loop: return "loop";
  }
  return "budget";
}

EventKind Event::kind() const {
  struct Kind {
    EventKind operator()(const BudgetExceeded&) const { return EventKind::BudgetExceeded; }
    EventKind operator()(const Paused&) const { return EventKind::Paused; }
    EventKind operator()(const Resumed&) const { return EventKind::Resumed; }
    EventKind operator()(const Undenied&) const { return EventKind::Resumed; }
    EventKind operator()(const Denied&) const { return EventKind::Denied; }
    EventKind operator()(const Killed&) const { return EventKind::Killed; }
    EventKind operator()(const FanOutHeld&) const { return EventKind::LoopDetected; }
  };
  return std::visit(Kind{}, what);
}

bool brakes(const Effect& e) {
  if (const auto* h = std::get_if<Hold>(&e)) return h->reason != HoldReason::Capture;
  if (const auto* r = std::get_if<Release>(&e)) return r->reason != HoldReason::Capture;
  return acts(e);
}

void DryRunEffects::apply(const Effect& e) {
  if (brakes(e)) {
    withheld_++;
    return;
  }
  inner_.apply(e);
}

}  // namespace ab::gate

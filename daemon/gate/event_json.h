// event_json.h — the `detail` object of a gate event as the store keeps it (docs/interface.md,
// event table). Pure: the daemon adds what only it knows (a killed entity's pids, whether
// denied connects are refused, a fan-out finding's members).
#pragma once

#include <nlohmann/json.hpp>

#include "gate/effects.h"

namespace ab::gate {

// budget_exceeded  {budget, bucket, action, dry_run, requested, limit, level, kind, window}
//                  (kind "inflight" and window null for max_inflight)
// paused           {target, pid, reason, via, dry_run, + budgets, buckets | detector | entity}
// resumed          {target, pid, reason, via, dry_run, held_ms, released, + hold_reason}: the
//                  reason is the hold's, except when the end is the news (max_hold, with
//                  escalation and held_s; release_all): hold_reason then names the hold's
// resumed (deny)   {target, entity, reason "budget", dry_run, was "denied"}
// denied           {target, entity, reason "budget", budget, dry_run}
// killed           {target, entity, reason, dry_run, + budget}
// loop_detected    {detector "fan_out", entity, entities, action, dry_run, concurrent}
nlohmann::json detail_json(const Event& e);

}  // namespace ab::gate

#include "loops/loop_detectors.h"

namespace ab::loops {

namespace {

std::optional<std::string> key_for(const policy::LoopRule& rule, const ProcessInfo& who) {
  if (!rule.enabled) return std::nullopt;
  return policy::bucket_key(rule.match, rule.per, who.facts, who.pid, who.tree_root_pid);
}

}  // namespace

void LoopDetectors::set_policy(const policy::Policy& policy) {
  const policy::Loops& next = policy.loops;
  if (!next.repetition.enabled) repetition_.clear();
  if (!next.retry_storm.enabled) retry_storm_.clear();
  if (!next.fan_out.enabled) fan_out_.clear();
  if (!next.ping_pong.enabled) ping_pong_.clear_activity();
  loops_ = next;
  repetition_.set_rule(next.repetition);
  retry_storm_.set_rule(next.retry_storm);
  fan_out_.set_rule(next.fan_out);
  ping_pong_.set_rule(next.ping_pong);
}

std::vector<Finding> LoopDetectors::observe_call(const CallObservation& call) {
  std::vector<Finding> found;
  const Member who = call.who.member();
  if (auto key = key_for(loops_.repetition, call.who))
    if (auto f = repetition_.on_call(*key, who, call.call_id, call.fingerprint, call.now_ns)) found.push_back(std::move(*f));
  if (auto key = key_for(loops_.fan_out, call.who))
    if (auto f = fan_out_.call_started(*key, who, call.call_id, call.now_ns)) found.push_back(std::move(*f));
  return found;
}

std::vector<Finding> LoopDetectors::observe_response(const ResponseObservation& r) {
  std::vector<Finding> found;
  const Member who = r.who.member();
  fan_out_.call_finished(r.call_id, r.now_ns, r.tokens, r.cost_usd);  // by id: the start's entity
  if (auto key = key_for(loops_.repetition, r.who)) repetition_.on_usage(*key, r.call_id, r.tokens, r.cost_usd);
  if (auto key = key_for(loops_.retry_storm, r.who))
    if (auto f = retry_storm_.on_response(*key, who, r.status, r.retry_after_s, r.tokens, r.cost_usd, r.now_ns))
      found.push_back(std::move(*f));
  if (auto key = key_for(loops_.ping_pong, r.who))
    if (auto f = ping_pong_.on_llm_call(*key, who, r.start_ns, r.now_ns, r.tokens, r.cost_usd))
      found.push_back(std::move(*f));
  return found;
}

void LoopDetectors::on_spawn(const ProcessInfo& child, int64_t now_ns) {
  if (auto key = key_for(loops_.fan_out, child)) fan_out_.on_spawn(*key, now_ns);
}

void LoopDetectors::add_channel(uint32_t pid_a, uint32_t pid_b, ChannelKind kind, int64_t now_ns) {
  ping_pong_.add_channel(pid_a, pid_b, kind, now_ns);
}

void LoopDetectors::on_exit(uint32_t pid) {
  repetition_.forget_pid(pid);
  retry_storm_.forget_pid(pid);
  fan_out_.forget_pid(pid);
  ping_pong_.forget_pid(pid);
}

bool LoopDetectors::should_hold(const ProcessInfo& who, int64_t now_ns) const {
  auto key = key_for(loops_.fan_out, who);
  return key && fan_out_.should_hold(*key, now_ns);
}

int64_t LoopDetectors::pace_until_ns(const ProcessInfo& who, int64_t now_ns) const {
  auto key = key_for(loops_.retry_storm, who);
  return key ? retry_storm_.pace_until_ns(*key, now_ns) : 0;
}

void LoopDetectors::reset(const std::string& entity) {
  repetition_.reset(entity);
  retry_storm_.reset(entity);
  fan_out_.reset(entity);
  ping_pong_.reset(entity);
}

}  // namespace ab::loops

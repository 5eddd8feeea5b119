#include "core/endpoints.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <tuple>

namespace ab::core {

bool EndpointKeyLess::operator()(const ab_endpoint_key& a, const ab_endpoint_key& b) const {
  if (a.family != b.family) return a.family < b.family;
  if (a.port != b.port) return a.port < b.port;
  return std::memcmp(a.addr, b.addr, sizeof a.addr) < 0;
}

std::optional<protocol::ApiKind> api_kind_for(const std::string& api) {
  if (api == "openai") return protocol::ApiKind::OpenAIChat;
  if (api == "anthropic") return protocol::ApiKind::AnthropicMessages;
  if (api == "gemini") return protocol::ApiKind::GeminiGenerate;
  if (api == "ollama") return protocol::ApiKind::OllamaChat;
  // Bedrock's operations are told apart by their paths (classify_path); an unrecognised POST
  // to a Bedrock endpoint is read as Converse
  if (api == "bedrock") return protocol::ApiKind::BedrockConverse;
  return std::nullopt;
}

bool endpoint_key_for(const std::string& addr, uint16_t port, ab_endpoint_key* out) {
  ab_endpoint_key k{};
  k.port = port;
  if (inet_pton(AF_INET, addr.c_str(), k.addr) == 1) {
    k.family = AF_INET;
  } else if (inet_pton(AF_INET6, addr.c_str(), k.addr) == 1) {
    k.family = AF_INET6;
  } else {
    return false;
  }
  *out = k;
  return true;
}

bool name_matches(std::string_view pattern, std::string_view name) {
  if (pattern.find('*') == std::string_view::npos) return pattern == name;
  size_t pi = 0, ni = 0;
  while (pi < pattern.size()) {
    if (pattern[pi] != '*') {
      if (ni >= name.size() || name[ni] != pattern[pi]) return false;
      ++pi, ++ni;
      continue;
    }
    // '*': one or more characters of one label (never a '.'), then the rest of the pattern.
    ++pi;
    for (size_t run = 1; ni + run <= name.size(); ++run) {
      if (name[ni + run - 1] == '.') return false;
      if (name_matches(pattern.substr(pi), name.substr(ni + run))) return true;
    }
    return false;
  }
  return ni == name.size();
}

namespace {

bool is_pattern(const std::string& host) { return host.find('*') != std::string::npos; }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// The providers agentbrake knows without configuration (HTTPS on 443). A host with '*' is a
// pattern (see name_matches): it is never resolved, its addresses are learned from DNS
// look-ups of matching names. `api` is the hint for a POST whose path is not a known call
// (connection.h api_hint); Vertex's Anthropic :rawPredict and Bedrock's operations are
// classified by their paths (classify_path).
const std::vector<EndpointInfo>& builtin_providers() {
  static const std::vector<EndpointInfo> v{
      {"api.openai.com", 443, "openai", true},
      {"api.anthropic.com", 443, "anthropic", true},
      {"generativelanguage.googleapis.com", 443, "gemini", true},
      // OpenAI-compatible hosts (Chat Completions wire)
      {"openrouter.ai", 443, "openai", true},
      {"api.groq.com", 443, "openai", true},
      {"api.mistral.ai", 443, "openai", true},
      {"api.deepseek.com", 443, "openai", true},
      {"api.together.xyz", 443, "openai", true},
      {"api.fireworks.ai", 443, "openai", true},
      {"api.x.ai", 443, "openai", true},
      {"*.openai.azure.com", 443, "openai", true},
      // Google Vertex AI (Gemini paths are classified by path) and AWS Bedrock
      {"aiplatform.googleapis.com", 443, "gemini", true},
      {"*-aiplatform.googleapis.com", 443, "gemini", true},
      {"bedrock-runtime.*.amazonaws.com", 443, "bedrock", true},
      {"bedrock-runtime-fips.*.amazonaws.com", 443, "bedrock", true},
      // Ollama's default address, plain HTTP (a policy entry for the same address replaces it)
      {"localhost", 11434, "ollama", false},
  };
  return v;
}

// Numeric addresses and "localhost" need no look-up: their keys, else nullopt.
std::optional<std::vector<ab_endpoint_key>> literal_keys(const std::string& host, uint16_t port) {
  ab_endpoint_key k;
  if (endpoint_key_for(host, port, &k)) return std::vector<ab_endpoint_key>{k};
  if (host != "localhost") return std::nullopt;
  std::vector<ab_endpoint_key> out;
  if (endpoint_key_for("127.0.0.1", port, &k)) out.push_back(k);
  if (endpoint_key_for("::1", port, &k)) out.push_back(k);
  return out;
}

}  // namespace

const std::vector<EndpointInfo>& builtin_endpoints() { return builtin_providers(); }

std::vector<std::string> EndpointSet::set_policy(const std::vector<ab::policy::Endpoint>& eps) {
  std::vector<std::string> to_resolve;
  // Keys learned (from DNS or a look-up) for names that stay endpoints survive; policy keys
  // are rebuilt.
  std::map<std::string, EndpointInfo> names;
  std::vector<EndpointInfo> patterns;
  auto add_pattern = [&patterns](const EndpointInfo& info) {
    for (auto& p : patterns)
      if (p.host == info.host) {
        p = info;  // a policy entry replaces a built-in one
        return;
      }
    patterns.push_back(info);
  };
  decltype(by_key_) keys;
  for (const auto& b : builtin_providers()) {
    if (is_pattern(b.host)) add_pattern(b);
    else if (auto lit = literal_keys(b.host, b.port)) {
      for (const auto& key : *lit) keys[key] = b;
    } else {
      names[b.host] = b;
    }
  }
  std::vector<EndpointInfo> named;
  for (const auto& e : eps) {
    EndpointInfo info{lower(e.host), e.port, e.api, e.tls};
    if (is_pattern(info.host)) {  // learned from DNS only
      add_pattern(info);
      continue;
    }
    ab_endpoint_key k;
    if (!endpoint_key_for(info.host, info.port, &k)) names[info.host] = info;
    if (auto lit = literal_keys(info.host, info.port)) {
      for (const auto& key : *lit) keys[key] = info;
      continue;
    }
    named.push_back(info);
    if (std::find(to_resolve.begin(), to_resolve.end(), info.host) == to_resolve.end()) to_resolve.push_back(info.host);
  }
  for (const auto& [k, info] : by_key_) {
    if (keys.count(k)) continue;
    if (names.count(info.host) && names[info.host].port == info.port) {
      keys[k] = info;
      continue;
    }
    for (const auto& p : patterns)
      if (p.port == info.port && p.api == info.api && p.tls == info.tls && name_matches(p.host, info.host)) {
        keys[k] = info;
        break;
      }
  }
  by_key_ = std::move(keys);
  by_name_ = std::move(names);
  patterns_ = std::move(patterns);
  named_ = std::move(named);
  // Hints survive for names that stay endpoints (with the endpoint's new port and api).
  for (auto it = hints_.begin(); it != hints_.end();) {
    auto next = std::next(it);
    auto info = match_name(it->second.name);
    if (!info || (info->port != it->first.key.port && info->port != 0)) erase_hint(it);
    else it->second.info = *info;
    it = next;
  }
  return to_resolve;
}

namespace {

bool same_addr(const ab_endpoint_key& a, const ab_endpoint_key& b) {
  return a.family == b.family && std::memcmp(a.addr, b.addr, sizeof a.addr) == 0;
}

bool lists(const std::vector<ab_endpoint_key>& answer, const ab_endpoint_key& k) {
  return std::any_of(answer.begin(), answer.end(), [&](const ab_endpoint_key& a) { return same_addr(a, k); });
}

}  // namespace

bool EndpointHintLess::operator()(const EndpointHint& a, const EndpointHint& b) const {
  if (a.uid != b.uid) return a.uid < b.uid;
  return EndpointKeyLess{}(a.key, b.key);
}

void EndpointSet::erase_hint(std::map<EndpointHint, Hint, EndpointHintLess>::iterator it) {
  auto c = hints_per_uid_.find(it->first.uid);
  if (c != hints_per_uid_.end() && --c->second == 0) hints_per_uid_.erase(c);
  hints_.erase(it);
}

size_t EndpointSet::hints_of(uint32_t uid) const {
  auto it = hints_per_uid_.find(uid);
  return it == hints_per_uid_.end() ? 0 : it->second;
}

ResolvedLearned EndpointSet::on_resolved(const std::string& name, const std::vector<ab_endpoint_key>& addrs,
                                         int64_t now_ns) {
  ResolvedLearned out;
  const std::string n = lower(name);
  std::vector<EndpointInfo> infos;
  for (const auto& info : named_)
    if (info.host == n) infos.push_back(info);
  if (infos.empty())
    if (auto info = match_name(n)) infos.push_back(*info);
  if (infos.empty()) return out;  // not an endpoint (any more)
  for (const auto& info : infos)
    for (auto k : addrs) {
      k.port = info.port;
      if (by_key_.emplace(k, info).second) out.added.push_back(k);
    }
  auto& own = own_answers_[n];
  own.addrs.clear();
  for (auto k : addrs) {
    k.port = 0;
    own.addrs.push_back(k);
  }
  own.at_ns = now_ns;
  // Hints of that name: the ones it lists are host-wide now (their keys were added above);
  // the others stay the teacher's until they expire.
  for (auto it = hints_.begin(); it != hints_.end();) {
    if (it->second.name == n && lists(own.addrs, it->first.key)) {
      out.confirmed.push_back(it->first);
      auto next = std::next(it);
      erase_hint(it);
      it = next;
    } else {
      ++it;
    }
  }
  return out;
}

std::optional<EndpointInfo> EndpointSet::match_name(const std::string& name) const {
  const std::string n = lower(name);
  if (auto it = by_name_.find(n); it != by_name_.end()) return it->second;
  if (n.size() > 253) return std::nullopt;
  for (const auto& p : patterns_) {
    if (!name_matches(p.host, n)) continue;
    EndpointInfo info = p;
    info.host = n;  // the name itself: what its Host header will say (confirm_endpoint)
    return info;
  }
  return std::nullopt;
}

DnsLearned EndpointSet::on_dns(uint32_t uid, const std::string& name, const std::vector<ab_endpoint_key>& addrs,
                               int64_t now_ns) {
  DnsLearned out;
  auto info = match_name(name);
  if (!info) return out;
  const std::string n = lower(name);
  const auto own = own_answers_.find(n);
  const bool fresh = own != own_answers_.end() && now_ns - own->second.at_ns < limits_.own_answer_fresh_ns;
  bool unconfirmed = false;
  for (auto k : addrs) {
    k.port = info->port;
    if (by_key_.count(k)) continue;  // host-wide already
    if (fresh && lists(own->second.addrs, k)) {  // the daemon's own answer says so
      by_key_.emplace(k, *info);
      out.confirmed.push_back(k);
      continue;
    }
    unconfirmed = true;
    const EndpointHint h{uid, k};
    if (auto it = hints_.find(h); it != hints_.end()) {
      it->second.at_ns = now_ns;  // taught again: lasts longer
      continue;
    }
    if (hints_of(uid) >= limits_.hints_per_uid || hints_.size() >= limits_.hints_total) {
      out.dropped++;
      continue;
    }
    hints_.emplace(h, Hint{*info, n, now_ns});
    hints_per_uid_[uid]++;
    out.hinted.push_back(h);
  }
  if (unconfirmed && !fresh) out.resolve = n;
  return out;
}

std::vector<EndpointHint> EndpointSet::expire_hints(int64_t now_ns) {
  std::vector<EndpointHint> out;
  for (auto it = hints_.begin(); it != hints_.end();) {
    auto next = std::next(it);
    if (now_ns - it->second.at_ns >= limits_.hint_ttl_ns) {
      out.push_back(it->first);
      erase_hint(it);
    }
    it = next;
  }
  return out;
}

const EndpointInfo* EndpointSet::find_for(uint32_t uid, const ab_endpoint_key& k) const {
  if (const auto* info = find(k)) return info;
  auto it = hints_.find(EndpointHint{uid, k});
  if (it != hints_.end()) return &it->second.info;
  ab_endpoint_key any = k;
  any.port = 0;
  it = hints_.find(EndpointHint{uid, any});
  return it == hints_.end() ? nullptr : &it->second.info;
}

std::vector<EndpointHint> EndpointSet::hint_keys() const {
  std::vector<EndpointHint> out;
  out.reserve(hints_.size());
  for (const auto& [h, v] : hints_) out.push_back(h);
  return out;
}

const EndpointInfo* EndpointSet::find(const ab_endpoint_key& k) const {
  auto it = by_key_.find(k);
  if (it != by_key_.end()) return &it->second;
  ab_endpoint_key any = k;
  any.port = 0;
  it = by_key_.find(any);
  return it == by_key_.end() ? nullptr : &it->second;
}

std::vector<ab_endpoint_key> EndpointSet::keys() const {
  std::vector<ab_endpoint_key> out;
  out.reserve(by_key_.size());
  for (const auto& [k, v] : by_key_) out.push_back(k);
  return out;
}

}  // namespace ab::core

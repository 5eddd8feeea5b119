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
  return to_resolve;
}

std::vector<ab_endpoint_key> EndpointSet::on_resolved(const std::string& name,
                                                      const std::vector<ab_endpoint_key>& addrs) {
  std::vector<ab_endpoint_key> added;
  const std::string n = lower(name);
  for (const auto& info : named_) {
    if (info.host != n) continue;
    for (auto k : addrs) {
      k.port = info.port;
      if (by_key_.emplace(k, info).second) added.push_back(k);
    }
  }
  return added;
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

std::vector<ab_endpoint_key> EndpointSet::on_dns(const std::string& name,
                                                 const std::vector<ab_endpoint_key>& addrs) {
  std::vector<ab_endpoint_key> added;
  auto info = match_name(name);
  if (!info) return added;
  for (auto k : addrs) {
    k.port = info->port;
    if (by_key_.emplace(k, *info).second) added.push_back(k);
  }
  return added;
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

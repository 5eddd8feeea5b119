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

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// The providers agentbrake knows without configuration (HTTPS on 443).
const std::vector<EndpointInfo>& builtin_providers() {
  static const std::vector<EndpointInfo> v{
      {"api.openai.com", 443, "openai", true},
      {"api.anthropic.com", 443, "anthropic", true},
      {"generativelanguage.googleapis.com", 443, "gemini", true},
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

std::vector<std::string> EndpointSet::set_policy(const std::vector<ab::policy::Endpoint>& eps) {
  std::vector<std::string> to_resolve;
  // Keys learned (from DNS or a look-up) for names that stay endpoints survive; policy keys
  // are rebuilt.
  std::map<std::string, EndpointInfo> names;
  for (const auto& b : builtin_providers()) names[b.host] = b;
  decltype(by_key_) keys;
  std::vector<EndpointInfo> named;
  for (const auto& e : eps) {
    EndpointInfo info{lower(e.host), e.port, e.api, e.tls};
    ab_endpoint_key k;
    if (!endpoint_key_for(info.host, info.port, &k)) names[info.host] = info;
    if (auto lit = literal_keys(info.host, info.port)) {
      for (const auto& key : *lit) keys[key] = info;
      continue;
    }
    named.push_back(info);
    if (std::find(to_resolve.begin(), to_resolve.end(), info.host) == to_resolve.end()) to_resolve.push_back(info.host);
  }
  for (const auto& [k, info] : by_key_)
    if (names.count(info.host) && !keys.count(k) && names[info.host].port == info.port) keys[k] = info;
  by_key_ = std::move(keys);
  by_name_ = std::move(names);
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

std::vector<ab_endpoint_key> EndpointSet::on_dns(const std::string& name,
                                                 const std::vector<ab_endpoint_key>& addrs) {
  std::vector<ab_endpoint_key> added;
  auto it = by_name_.find(lower(name));
  if (it == by_name_.end()) return added;
  for (auto k : addrs) {
    k.port = it->second.port;
    if (by_key_.emplace(k, it->second).second) added.push_back(k);
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

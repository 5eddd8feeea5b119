#include "core/endpoints.h"

#include <arpa/inet.h>
#include <netdb.h>
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

std::vector<ab_endpoint_key> resolve(const std::string& host, uint16_t port, std::string* error) {
  std::vector<ab_endpoint_key> out;
  ab_endpoint_key k;
  if (endpoint_key_for(host, port, &k)) return {k};
  if (host == "localhost") {
    if (endpoint_key_for("127.0.0.1", port, &k)) out.push_back(k);
    if (endpoint_key_for("::1", port, &k)) out.push_back(k);
    return out;
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    *error = host + ": " + gai_strerror(rc);
    return out;
  }
  for (auto* ai = res; ai; ai = ai->ai_next) {
    ab_endpoint_key e{};
    e.port = port;
    if (ai->ai_family == AF_INET) {
      e.family = AF_INET;
      std::memcpy(e.addr, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, 4);
    } else if (ai->ai_family == AF_INET6) {
      e.family = AF_INET6;
      std::memcpy(e.addr, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, 16);
    } else {
      continue;
    }
    if (std::find_if(out.begin(), out.end(), [&](const ab_endpoint_key& x) {
          return !EndpointKeyLess{}(x, e) && !EndpointKeyLess{}(e, x);
        }) == out.end())
      out.push_back(e);
  }
  freeaddrinfo(res);
  return out;
}

}  // namespace

std::vector<std::string> EndpointSet::set_policy(const std::vector<ab::policy::Endpoint>& eps, bool do_resolve) {
  std::vector<std::string> errors;
  // Keys learned from DNS for names that stay endpoints survive; policy keys are rebuilt.
  std::map<std::string, EndpointInfo> names;
  for (const auto& b : builtin_providers()) names[b.host] = b;
  decltype(by_key_) keys;
  for (const auto& e : eps) {
    EndpointInfo info{lower(e.host), e.port, e.api, e.tls};
    ab_endpoint_key k;
    if (!endpoint_key_for(info.host, info.port, &k)) names[info.host] = info;
    if (!do_resolve) {
      if (endpoint_key_for(info.host, info.port, &k)) keys[k] = info;
      continue;
    }
    std::string err;
    for (const auto& key : resolve(info.host, info.port, &err)) keys[key] = info;
    if (!err.empty()) errors.push_back(err);
  }
  for (const auto& [k, info] : by_key_)
    if (names.count(info.host) && !keys.count(k) && names[info.host].port == info.port) keys[k] = info;
  by_key_ = std::move(keys);
  by_name_ = std::move(names);
  return errors;
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

// endpoints.h — which addresses are LLM endpoints, and what they speak.
//
// Sources: the policy's `endpoints:` (names resolved off the event loop after the policy is
// loaded, see resolver.h; names are also matched against DNS look-ups later) and the built-in providers (api.openai.com,
// api.anthropic.com, generativelanguage.googleapis.com), whose addresses are learned from the
// getaddrinfo probes as processes resolve them. The kernel's endpoints map is a mirror of
// keys(); the daemon writes it.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agentbrake_events.h"
#include "policy/policy.h"
#include "protocol/classify.h"

namespace ab::core {

struct EndpointInfo {
  std::string host;  // as configured ("127.0.0.1", "api.openai.com")
  uint16_t port = 0; // 0: any port
  std::string api;   // openai | anthropic | gemini | ollama
  bool tls = true;
};

struct EndpointKeyLess {
  bool operator()(const ab_endpoint_key& a, const ab_endpoint_key& b) const;
};

// "openai" → OpenAIChat, "anthropic" → AnthropicMessages, "gemini" → GeminiGenerate,
// "ollama" → OllamaChat; nullopt for anything else.
std::optional<protocol::ApiKind> api_kind_for(const std::string& api);

// Parses a numeric IPv4/IPv6 address into a key (port in host order). False if not numeric.
bool endpoint_key_for(const std::string& addr, uint16_t port, ab_endpoint_key* out);

class EndpointSet {
 public:
  // Replaces the policy part (built-ins stay). Numeric addresses become keys now, "localhost"
  // means 127.0.0.1 and ::1; never blocks. Returns the other names, to be resolved off the
  // event loop (Resolver) and handed to on_resolved(); they are also learned from DNS events.
  std::vector<std::string> set_policy(const std::vector<ab::policy::Endpoint>& eps);

  // The addresses of a policy endpoint name, resolved: keys for every endpoint of the policy
  // in force with that name (each with its port). A name the policy no longer has (a result
  // that outlived a reload) adds nothing. Returns the keys added.
  std::vector<ab_endpoint_key> on_resolved(const std::string& name, const std::vector<ab_endpoint_key>& addrs);

  // A getaddrinfo result seen by the kernel: when `name` is an endpoint name, its addresses
  // become endpoint keys. Returns the keys added (to mirror into the kernel map).
  std::vector<ab_endpoint_key> on_dns(const std::string& name, const std::vector<ab_endpoint_key>& addrs);

  // What a connection to (family, addr, port) talks to, if it is an endpoint.
  const EndpointInfo* find(const ab_endpoint_key& k) const;
  std::vector<ab_endpoint_key> keys() const;
  size_t size() const { return by_key_.size(); }

 private:
  std::map<ab_endpoint_key, EndpointInfo, EndpointKeyLess> by_key_;
  std::map<std::string, EndpointInfo> by_name_;  // lower-case names to learn from DNS
  std::vector<EndpointInfo> named_;              // the policy's endpoints given by name
};

}  // namespace ab::core

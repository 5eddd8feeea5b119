// endpoints.h — which addresses are LLM endpoints, and what they speak.
//
// Sources: the policy's `endpoints:` (names resolved off the event loop after the policy is
// loaded, see resolver.h; names are also matched against DNS look-ups later) and the built-in
// providers (builtin_endpoints(): OpenAI, Anthropic, Gemini, the OpenAI-compatible hosts,
// Azure OpenAI, Vertex AI, Bedrock), whose addresses are learned from the getaddrinfo probes
// as processes resolve them. A host with '*' (built-in "*.openai.azure.com", or a policy's) is
// a pattern: never resolved, matched against the names of DNS look-ups (name_matches). The
// kernel's endpoints map is a mirror of keys(); the daemon writes it.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
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

// DNS name pattern match, both lower-case: '*' stands for one or more characters inside ONE
// label (never a '.'), everything else is literal. "*.openai.azure.com" matches
// "res.openai.azure.com" (not "a.b.openai.azure.com", not "openai.azure.com");
// "*-aiplatform.googleapis.com" matches "us-central1-aiplatform.googleapis.com";
// "bedrock-runtime.*.amazonaws.com" matches "bedrock-runtime.us-east-1.amazonaws.com".
// A pattern without '*' matches only itself.
bool name_matches(std::string_view pattern, std::string_view name);

// The built-in providers (host, port 443, api hint, tls): see endpoints.cpp.
const std::vector<EndpointInfo>& builtin_endpoints();

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

  // The endpoint a DNS name is (exact names first, then patterns; a pattern's match carries
  // the name itself as host), or nullopt.
  std::optional<EndpointInfo> match_name(const std::string& name) const;

  // What a connection to (family, addr, port) talks to, if it is an endpoint.
  const EndpointInfo* find(const ab_endpoint_key& k) const;
  std::vector<ab_endpoint_key> keys() const;
  size_t size() const { return by_key_.size(); }

 private:
  std::map<ab_endpoint_key, EndpointInfo, EndpointKeyLess> by_key_;
  std::map<std::string, EndpointInfo> by_name_;  // lower-case names to learn from DNS
  std::vector<EndpointInfo> named_;              // the policy's endpoints given by name
  std::vector<EndpointInfo> patterns_;           // hosts with '*' (built-in and policy)
};

}  // namespace ab::core

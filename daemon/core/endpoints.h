// endpoints.h — which addresses are LLM endpoints, and what they speak.
//
// Sources: the policy's `endpoints:` (names resolved off the event loop after the policy is
// loaded, see resolver.h; names are also matched against DNS look-ups later) and the built-in
// providers (builtin_endpoints(): OpenAI, Anthropic, Gemini, the OpenAI-compatible hosts,
// Azure OpenAI, Vertex AI, Bedrock), whose addresses are learned from the getaddrinfo probes
// as processes resolve them. A host with '*' (built-in "*.openai.azure.com", or a policy's) is
// a pattern: never resolved, matched against the names of DNS look-ups (name_matches). The
// kernel's endpoints map is a mirror of keys(); the daemon writes it.
//
// Trust (docs/enforcement.md, "What is trusted to find endpoints"): a process's own
// getaddrinfo answer is that process's word — a user may have their own /etc/hosts (a mount or
// user namespace) that makes 127.0.0.1 "api.openai.com". So an address learned from a DNS
// event is a HINT for the uid that resolved it (hint_keys(), mirrored into the kernel's
// endpoint_hints map: an endpoint for connects of that uid only) until the daemon's own
// resolution of the name (on_resolved) lists it; then it is an endpoint host-wide (keys()).
// Each uid may teach at most Limits::hints_per_uid addresses, all uids together
// Limits::hints_total; more are dropped and counted. The daemon's own answers, policy
// addresses and "localhost" are trusted as they are.
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

// An unconfirmed address one uid taught (the key carries the endpoint's port).
struct EndpointHint {
  uint32_t uid = 0;
  ab_endpoint_key key{};
};

struct EndpointHintLess {
  bool operator()(const EndpointHint& a, const EndpointHint& b) const;
};

// What a DNS event taught (on_dns).
struct DnsLearned {
  std::vector<ab_endpoint_key> confirmed;  // host-wide now: the daemon's own recent answer lists them
  std::vector<EndpointHint> hinted;        // new hints for the resolving uid
  size_t dropped = 0;                      // addresses not kept: the uid's (or the total) cap is reached
  std::string resolve;                     // non-empty: resolve this name (the daemon's own look-up)
};

// What the daemon's own answer for a name did (on_resolved).
struct ResolvedLearned {
  std::vector<ab_endpoint_key> added;     // new host-wide keys
  std::vector<EndpointHint> confirmed;    // hints of that name its answer listed (now host-wide)
};

class EndpointSet {
 public:
  struct Limits {
    size_t hints_per_uid = 16;       // unconfirmed addresses one uid may teach
    size_t hints_total = 1024;       // all uids (the kernel map holds 4096)
    int64_t own_answer_fresh_ns = int64_t(30) * 1'000'000'000;  // a DNS event re-asks after this
    int64_t hint_ttl_ns = int64_t(600) * 1'000'000'000;         // an unconfirmed hint lasts this long
  };
  EndpointSet() = default;
  explicit EndpointSet(Limits l) : limits_(l) {}

  // Replaces the policy part (built-ins stay). Numeric addresses become keys now, "localhost"
  // means 127.0.0.1 and ::1; never blocks. Returns the other names, to be resolved off the
  // event loop (Resolver) and handed to on_resolved(); they are also learned from DNS events.
  std::vector<std::string> set_policy(const std::vector<ab::policy::Endpoint>& eps);

  // The daemon's own answer for an endpoint name (Resolver): keys for every endpoint of the
  // policy in force with that name (each with its port), or for the built-in or pattern
  // endpoint the name matches. A name that is no endpoint now (a result that outlived a
  // reload) adds nothing. Hints of that name whose address the answer lists become host-wide;
  // the answer is remembered (for `own_answer_fresh_ns`) to confirm later DNS events at once.
  ResolvedLearned on_resolved(const std::string& name, const std::vector<ab_endpoint_key>& addrs, int64_t now_ns = 0);

  // A getaddrinfo result of a process of `uid`, seen by the kernel: when `name` is an endpoint
  // name, each address is an endpoint host-wide if the daemon's own fresh answer lists it,
  // else a hint for `uid` (within the caps). `resolve` asks for the daemon's own look-up when
  // some address is unconfirmed and the last answer is not fresh.
  DnsLearned on_dns(uint32_t uid, const std::string& name, const std::vector<ab_endpoint_key>& addrs, int64_t now_ns = 0);

  // Hints older than hint_ttl_ns go (their uid may teach again). Returns those removed.
  std::vector<EndpointHint> expire_hints(int64_t now_ns);

  // The endpoint a DNS name is (exact names first, then patterns; a pattern's match carries
  // the name itself as host), or nullopt.
  std::optional<EndpointInfo> match_name(const std::string& name) const;

  // What a connection to (family, addr, port) talks to, if it is an endpoint (host-wide).
  const EndpointInfo* find(const ab_endpoint_key& k) const;
  // The same for a connection of `uid`: host-wide endpoints, then that uid's hints.
  const EndpointInfo* find_for(uint32_t uid, const ab_endpoint_key& k) const;
  std::vector<ab_endpoint_key> keys() const;
  std::vector<EndpointHint> hint_keys() const;
  size_t size() const { return by_key_.size(); }
  size_t hints() const { return hints_.size(); }
  size_t hints_of(uint32_t uid) const;
  const Limits& limits() const { return limits_; }

 private:
  struct Hint {
    EndpointInfo info;
    std::string name;  // the name it was learned for (lower-case)
    int64_t at_ns = 0;
  };
  struct OwnAnswer {
    std::vector<ab_endpoint_key> addrs;  // port 0
    int64_t at_ns = 0;
  };
  Limits limits_;
  std::map<EndpointHint, Hint, EndpointHintLess> hints_;
  std::map<uint32_t, size_t> hints_per_uid_;
  std::map<std::string, OwnAnswer> own_answers_;  // the daemon's own look-ups, by lower-case name
  void erase_hint(std::map<EndpointHint, Hint, EndpointHintLess>::iterator it);

  std::map<ab_endpoint_key, EndpointInfo, EndpointKeyLess> by_key_;
  std::map<std::string, EndpointInfo> by_name_;  // lower-case names to learn from DNS
  std::vector<EndpointInfo> named_;              // the policy's endpoints given by name
  std::vector<EndpointInfo> patterns_;           // hosts with '*' (built-in and policy)
};

}  // namespace ab::core

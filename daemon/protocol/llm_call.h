// llm_call.h — the normalized record of one LLM API call, produced by protocol/ (adapters),
// priced by accounting/, attributed by core/, stored by store/. Plain data, no behaviour.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace ab {

// Who made the call. Filled by the daemon core from the process table.
struct Attribution {
  uint32_t pid = 0;            // thread-group id
  std::string comm;            // process name
  std::string exe;             // executable path
  std::string cgroup;          // cgroup v2 path relative to the mount, starts with "/"
  uint64_t cgroup_id = 0;
  uint32_t tree_root_pid = 0;  // root of the agent tree (see process/lineage.h for the rule)
  uint32_t uid = 0;
};

struct LlmCall {
  // Timing. Wall clock (Unix epoch ns) for storage; latency from the kernel's monotonic stamps.
  int64_t start_unix_ns = 0;   // first byte of the request written
  int64_t end_unix_ns = 0;     // last byte of the response read (or when it was cut off)
  double latency_ms = 0;       // request start → response end

  Attribution who;

  // Where and what.
  std::string provider;        // openai, anthropic, google, ollama, or the endpoint's host
  std::string api;             // wire format: openai, anthropic, gemini, ollama
  std::string host;            // Host header (no port if default)
  std::string method;          // POST
  std::string path;            // request target without query string secrets (key= removed)
  std::string model;
  bool stream = false;
  int status = 0;              // HTTP status; 0 when no response arrived
  bool complete = false;       // false when the response was cut off (client died, reset)
  uint64_t request_bytes = 0;  // plaintext bytes on the wire, headers included
  uint64_t response_bytes = 0;
  bool capture_truncated = false;  // some bytes were not captured (kernel cap / ring loss)

  // Request-side facts (for reservations and loop detection).
  int64_t max_tokens = -1;     // max_tokens / max_completion_tokens / max_output_tokens; -1 absent
  int message_count = 0;

  // Usage, as the provider bills it (see docs/interface.md, "usage", for the exact meaning).
  int64_t input_tokens = 0;    // billed input, cache reads and writes included
  int64_t output_tokens = 0;   // output, reasoning included
  int64_t cache_read_tokens = 0;
  int64_t cache_write_tokens = 0;
  int64_t cache_write_1h_tokens = 0;  // of cache_write_tokens, those written with the 1-hour TTL
                                      // (Anthropic usage.cache_creation.ephemeral_1h_input_tokens);
                                      // priced, not stored
  int64_t reasoning_tokens = 0;
  bool usage_present = false;  // the response carried usage
  bool usage_malformed = false;  // it carried counts that are not counts (negative, huge): estimated instead
  bool estimated = false;      // tokens estimated (no usage on the wire, or cut off)
  std::string estimate_reason; // e.g. "stream_without_usage", "cut_off", "no_response"
  double cost_usd = 0;
  bool price_known = true;     // false: unknown model, cost 0, counted

  // Errors and quota headers (for retry storms and pacing).
  std::string error_type;      // provider error type, e.g. rate_limit_error, overloaded_error
  double retry_after_s = -1;   // retry-after header; -1 absent
  std::map<std::string, std::string> ratelimit;  // x-ratelimit-* / anthropic-ratelimit-* headers
};

}  // namespace ab

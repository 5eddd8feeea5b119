// resolver.h — endpoint names resolved off the event loop.
//
// A policy may name its endpoints (`host: llm.internal`). getaddrinfo blocks for as long as
// the resolver takes (seconds when no DNS server answers, as in CI), so the event loop never
// calls it: names are queued here, a worker thread resolves them one at a time, and the loop
// takes the results when notify_fd() (an eventfd it polls) is readable.
//
//   loop ── submit(names) ──► queue ──► worker: resolve(name) ──► results ──► eventfd ──► loop
//
// A name already queued or being resolved is not queued twice. Results may arrive after the
// policy that asked for them was replaced: the caller decides whether a name still matters.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agentbrake_events.h"

namespace ab::core {

class Resolver {
 public:
  // Addresses of `host` (port 0), or an empty list and `*error` set.
  using ResolveFn = std::function<std::vector<ab_endpoint_key>(const std::string& host, std::string* error)>;

  struct Result {
    std::string name;
    std::vector<ab_endpoint_key> addrs;
    std::string error;  // empty when resolved
  };

  // `fn` defaults to resolve_host_name (getaddrinfo).
  explicit Resolver(ResolveFn fn = {});
  // Stops the worker. A look-up in progress is not waited for: the worker is let go and ends
  // on its own once getaddrinfo returns (it owns what it touches).
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Queues names for resolution; never blocks. The worker starts at the first call.
  void submit(const std::vector<std::string>& names);
  // Results so far, oldest first; drains notify_fd().
  std::vector<Result> take_results();
  // Readable (an eventfd, non-blocking, close-on-exec) while results are waiting.
  int notify_fd() const;
  // Names queued or being resolved now.
  size_t pending() const;

 private:
  struct State;
  std::shared_ptr<State> st_;
  bool started_ = false;
};

// getaddrinfo(host) → the distinct IPv4/IPv6 addresses (port 0). Blocking: never on the loop.
std::vector<ab_endpoint_key> resolve_host_name(const std::string& host, std::string* error);

}  // namespace ab::core

// Endpoints learned without trusting the agent (issue 13 item 6; endpoints.h, and
// docs/enforcement.md "What is trusted to find endpoints"):
//
//   - a process's own getaddrinfo answer (AB_EV_DNS) is its word only: a user may have their
//     own /etc/hosts. Its addresses are hints for its uid (the kernel's endpoint_hints map:
//     an endpoint for that uid's connects only) until the daemon's own look-up of the name
//     (Resolver) lists them;
//   - so is the server name a process sends: agents with their own resolver (Go's, a
//     container's, a static binary's) never call the libc getaddrinfo the DNS probe reads, so
//     the address they connect to is learned from their TLS ClientHello (AB_EV_SNI,
//     bpf/sock.bpf.c), as a hint for its uid, confirmed the same way;
//   - the daemon's own answers are trusted: every address they list is an endpoint host-wide.
#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "core/daemon_impl.h"
#include "protocol/client_hello.h"

namespace ab::core {

void Daemon::learn_endpoint(uint32_t uid, const std::string& name, const std::vector<ab_endpoint_key>& addrs,
                            const char* source) {
  auto learned = endpoints_.on_dns(uid, name, addrs, clock_ns(CLOCK_MONOTONIC));
  if (learned.dropped) {
    stats_[DaemonCounter::EndpointHintsDropped] += learned.dropped;
    spdlog::warn("uid {} taught {} ({}): {} address(es) not kept as hints (at most {} per uid)", uid, name, source,
                 learned.dropped, endpoints_.limits().hints_per_uid);
  }
  stats_[DaemonCounter::EndpointHintsAdded] += learned.hinted.size();
  stats_[DaemonCounter::EndpointsConfirmedByResolution] += learned.confirmed.size();
  if (!learned.resolve.empty() && resolver_) resolver_->submit({learned.resolve});
  if (learned.confirmed.empty() && learned.hinted.empty()) return;
  spdlog::info("uid {} taught {} ({}): {} address(es) confirmed, {} hint(s) for that uid until resolved", uid, name,
               source, learned.confirmed.size(), learned.hinted.size());
  sync_endpoints_map();
}

void Daemon::on_dns(const ab_dns_event& e) {
  std::string name(e.name, strnlen(e.name, sizeof e.name));
  std::vector<ab_endpoint_key> addrs;
  for (uint32_t i = 0; i < e.naddrs && i < AB_DNS_MAX_ADDRS; i++) {
    ab_endpoint_key k{};
    k.family = e.family[i];
    std::memcpy(k.addr, e.addr[i], 16);
    addrs.push_back(k);
  }
  learn_endpoint(e.uid, name, addrs, "its DNS answer");
}

void Daemon::on_sni(const ab_sni_event& e) {
  const size_t n = std::min<size_t>(e.len, sizeof e.data);
  stats_[DaemonCounter::SniFirstWritesRead]++;
  auto name = protocol::client_hello_server_name({e.data, n});
  if (!name) return;  // not TLS, or no server name in what was captured
  auto info = endpoints_.match_name(*name);
  if (!info || (info->port != 0 && info->port != e.port)) return;  // not an endpoint (on that port)
  ab_endpoint_key k{};
  k.family = e.family;
  std::memcpy(k.addr, e.addr, sizeof k.addr);
  stats_[DaemonCounter::EndpointsNamedBySni]++;
  learn_endpoint(e.uid, *name, {k}, "its ClientHello");
  // The process itself talks to that endpoint: what it is watched for (an opaque verdict needs it).
  if (auto it = watched_.find(e.hdr.pid); it != watched_.end() && it->second.endpoint_host.empty()) {
    it->second.endpoint_host = info->host;
    it->second.endpoint_api = info->api;
  }
}

void Daemon::on_resolved() {
  if (!resolver_) return;
  std::vector<ab_endpoint_key> added;
  size_t confirmed = 0;
  for (const auto& r : resolver_->take_results()) {
    if (!r.error.empty()) {
      stats_[DaemonCounter::EndpointNamesUnresolved]++;
      spdlog::warn("endpoint not resolved now (learned from DNS later, as hints): {}", r.error);
      continue;
    }
    auto learned = endpoints_.on_resolved(r.name, r.addrs, clock_ns(CLOCK_MONOTONIC));
    spdlog::info("endpoint {} resolved: {} address(es), {} new, {} hint(s) confirmed", r.name, r.addrs.size(),
                 learned.added.size(), learned.confirmed.size());
    confirmed += learned.confirmed.size();
    added.insert(added.end(), learned.added.begin(), learned.added.end());
  }
  stats_[DaemonCounter::EndpointsConfirmedByResolution] += confirmed;
  if (added.empty() && !confirmed) return;
  sync_endpoints_map();
  if (!added.empty()) scan_existing(&added);  // processes that connected before their addresses were known
}

}  // namespace ab::core

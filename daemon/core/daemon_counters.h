#pragma once
// The daemon's own counters (the kernel's are in bpf/agentbrake_events.h): indexed by an enum
// so that the hot path increments an array slot, not a map keyed by string. `status` reports
// every one of them under its name (docs/interface.md, "status"); /metrics exports the loss
// counters among them.

#include <array>
#include <cstdint>
#include <string_view>

namespace ab::core {

enum class DaemonCounter : uint8_t {
  AttachDeadlineExceeded,
  AttachFailures,
  AttachRefusedOutOfScope,
  Attaches,
  Calls,
  CaptureBlind,
  CaptureBlindUnparsed,
  CaptureHolds,
  ConnectsRecoveredFromMap,
  DetachedHostMismatch,
  EndpointHintsAdded,
  EndpointHintsDropped,
  EndpointNamesUnresolved,
  EndpointsConfirmedByResolution,
  EndpointsNamedBySni,
  EstimatedCalls,
  FleetDegraded,
  FleetRestored,
  IncompleteCalls,
  MalformedRecords,
  MalformedUsage,
  OpaqueCalls,
  OpaqueExeCacheErrors,
  OpaqueExeCacheHits,
  OpaqueExesCached,
  OpaqueGateHolds,
  OpaqueProcesses,
  OpaqueRequests,
  OpaqueRequestsRefused,
  OpaqueSocketErrors,
  OpaqueSocketsAdded,
  OtlpConfigErrors,
  PlainAttachFailures,
  PlainAttachLate,
  PlainAttaches,
  ProcessesWithoutOpenssl,
  RingBufferConsumeErrors,
  RingDrainPassesCut,
  SniFirstWritesRead,
  StaleCaptureFreezesThawed,
  StaleCaptureHoldsReleased,
  UnpricedCalls,
  kCount,
};

// The name `status` reports a counter under (stable: scripts and tests read these).
constexpr std::string_view counter_name(DaemonCounter c) {
  switch (c) {
    case DaemonCounter::AttachDeadlineExceeded: return "attach_deadline_exceeded";
    case DaemonCounter::AttachFailures: return "attach_failures";
    case DaemonCounter::AttachRefusedOutOfScope: return "attach_refused_out_of_scope";
    case DaemonCounter::Attaches: return "attaches";
    case DaemonCounter::Calls: return "calls";
    case DaemonCounter::CaptureBlind: return "capture_blind";
    case DaemonCounter::CaptureBlindUnparsed: return "capture_blind_unparsed";
    case DaemonCounter::CaptureHolds: return "capture_holds";
    case DaemonCounter::ConnectsRecoveredFromMap: return "connects_recovered_from_map";
    case DaemonCounter::DetachedHostMismatch: return "detached_host_mismatch";
    case DaemonCounter::EndpointHintsAdded: return "endpoint_hints_added";
    case DaemonCounter::EndpointHintsDropped: return "endpoint_hints_dropped";
    case DaemonCounter::EndpointNamesUnresolved: return "endpoint_names_unresolved";
    case DaemonCounter::EndpointsConfirmedByResolution: return "endpoints_confirmed_by_resolution";
    case DaemonCounter::EndpointsNamedBySni: return "endpoints_named_by_sni";
    case DaemonCounter::EstimatedCalls: return "estimated_calls";
    case DaemonCounter::FleetDegraded: return "fleet_degraded";
    case DaemonCounter::FleetRestored: return "fleet_restored";
    case DaemonCounter::IncompleteCalls: return "incomplete_calls";
    case DaemonCounter::MalformedRecords: return "malformed_records";
    case DaemonCounter::MalformedUsage: return "malformed_usage";
    case DaemonCounter::OpaqueCalls: return "opaque_calls";
    case DaemonCounter::OpaqueExeCacheErrors: return "opaque_exe_cache_errors";
    case DaemonCounter::OpaqueExeCacheHits: return "opaque_exe_cache_hits";
    case DaemonCounter::OpaqueExesCached: return "opaque_exes_cached";
    case DaemonCounter::OpaqueGateHolds: return "opaque_gate_holds";
    case DaemonCounter::OpaqueProcesses: return "opaque_processes";
    case DaemonCounter::OpaqueRequests: return "opaque_requests";
    case DaemonCounter::OpaqueRequestsRefused: return "opaque_requests_refused";
    case DaemonCounter::OpaqueSocketErrors: return "opaque_socket_errors";
    case DaemonCounter::OpaqueSocketsAdded: return "opaque_sockets_added";
    case DaemonCounter::OtlpConfigErrors: return "otlp_config_errors";
    case DaemonCounter::PlainAttachFailures: return "plain_attach_failures";
    case DaemonCounter::PlainAttachLate: return "plain_attach_late";
    case DaemonCounter::PlainAttaches: return "plain_attaches";
    case DaemonCounter::ProcessesWithoutOpenssl: return "processes_without_openssl";
    case DaemonCounter::RingBufferConsumeErrors: return "ring_buffer_consume_errors";
    case DaemonCounter::RingDrainPassesCut: return "ring_drain_passes_cut";
    case DaemonCounter::SniFirstWritesRead: return "sni_first_writes_read";
    case DaemonCounter::StaleCaptureFreezesThawed: return "stale_capture_freezes_thawed";
    case DaemonCounter::StaleCaptureHoldsReleased: return "stale_capture_holds_released";
    case DaemonCounter::UnpricedCalls: return "unpriced_calls";
    case DaemonCounter::kCount: break;
  }
  return "?";
}

class DaemonCounters {
 public:
  uint64_t& operator[](DaemonCounter c) { return v_[static_cast<size_t>(c)]; }
  uint64_t operator[](DaemonCounter c) const { return v_[static_cast<size_t>(c)]; }

  // Calls f(name, value) for every counter, in enum order.
  template <typename F>
  void for_each(F&& f) const {
    for (size_t i = 0; i < v_.size(); i++) f(counter_name(static_cast<DaemonCounter>(i)), v_[i]);
  }

 private:
  std::array<uint64_t, static_cast<size_t>(DaemonCounter::kCount)> v_{};
};

}  // namespace ab::core

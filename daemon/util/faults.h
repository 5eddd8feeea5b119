// faults.h — test-only fault injection, so an end-to-end test can make a race happen instead
// of hoping to land inside a timing window.
//
// The daemon reads AGENTBRAKE_TEST_FAULTS once at start-up ("attach_delay_ms=3000,..."). With
// the variable unset (every real deployment) every switch is off and costs one load of a
// plain field. A daemon started with faults logs them as a warning, so a forgotten variable
// on a real host is visible in the journal.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ab::util {

struct Faults {
  // The attach worker waits this long before attaching to each process, so a process stays
  // in its capture hold (stopped at its first connect) for that long. The stale-hold bound
  // still applies: a delay past it releases the hold unattached.
  int64_t attach_delay_ms = 0;
  // 1: the socket capture of opaque processes (bpf/sock.bpf.c) is not attached (bench A/B).
  int64_t no_socket_capture = 0;
  // The event loop spends this much CPU (a busy wait) on every ring-buffer record: a daemon
  // slower than its producers, so that a flood fills the ring (stress test of the drain).
  int64_t record_cost_us = 0;

  bool any() const { return attach_delay_ms != 0 || no_socket_capture != 0 || record_cost_us != 0; }
  std::string describe() const;  // "attach_delay_ms=3000" (only the switches that are on)
};

// Parses "key=value[,key=value...]" (empty: no faults). Returns nullopt with *error naming
// the bad key or value.
std::optional<Faults> parse_faults(std::string_view spec, std::string* error);

// The process-wide switches: all off until init_faults_from_env() succeeds.
const Faults& faults();

// Reads AGENTBRAKE_TEST_FAULTS. Returns 0 (also when unset), -EINVAL with *error set when
// the variable cannot be parsed (the daemon refuses to start rather than run half-faulted).
int init_faults_from_env(std::string* error);

// For unit tests of code that consults faults().
void set_faults_for_test(const Faults& f);

}  // namespace ab::util

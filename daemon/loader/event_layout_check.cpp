// Compile-time check that the daemon decodes the same layout the BPF programs write.
#include <cstddef>

#include "agentbrake_events.h"

static_assert(AB_EVENT_LAYOUT_VERSION == 1, "update the decoder for the new layout");
static_assert(sizeof(ab_event_header) == 32);
static_assert(offsetof(ab_event_header, ts_ns) == 16);
static_assert(offsetof(ab_event_header, cgroup_id) == 24);
static_assert(sizeof(ab_proc_event) == 32 + 24 + AB_COMM_LEN + AB_PATH_LEN);
static_assert(offsetof(ab_proc_event, comm) == 56);
static_assert(sizeof(ab_sock_event) == 32 + 16 + 16 + AB_COMM_LEN);
static_assert(offsetof(ab_sock_event, addr) == 48);
static_assert(sizeof(ab_tls_event) == 32 + 16 + 24);
static_assert(offsetof(ab_tls_event, len) == 64);
static_assert(sizeof(ab_hold_event) == 32 + 16 + sizeof(ab_sock_event));
static_assert(offsetof(ab_hold_event, sock) == 48);
static_assert(sizeof(ab_dns_event) == 32 + 8 + AB_DNS_NAME_LEN + 2 * AB_DNS_MAX_ADDRS + 16 * AB_DNS_MAX_ADDRS);
static_assert(offsetof(ab_dns_event, uid) == 36);
static_assert(sizeof(ab_endpoint_hint_key) == 24 && offsetof(ab_endpoint_hint_key, ep) == 4);
static_assert(sizeof(ab_endpoint_key) == 20);
static_assert(sizeof(ab_watch_value) == 16);
static_assert(sizeof(ab_hold_value) == 24);
static_assert(sizeof(ab_gate) == 16);
static_assert(sizeof(ab_exe_key) == 16);
static_assert(sizeof(ab_exe_value) == 16);
static_assert(sizeof(ab_opaque_sock) == 64);
static_assert(sizeof(ab_sni_event) == 32 + 8 + 8 + 16 + 8 + AB_SNI_CAPTURE && offsetof(ab_sni_event, data) == 72);
static_assert(sizeof(ab_opaque_event) == 32 + 24 + 8);

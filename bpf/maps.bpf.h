/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * maps.bpf.h — maps shared by every agentbrake BPF object, and small kernel-only helpers.
 * Each object declares them; the daemon's loader creates them once (in the proc object) and
 * hands the same fds to the others with bpf_map__reuse_fd before load.
 */
#ifndef AB_MAPS_BPF_H
#define AB_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "agentbrake_events.h"

#define AB_SIGSTOP 19
#define AB_EINPROGRESS 115
#define AB_AF_INET 2
#define AB_AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AB_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Load-time configuration (rodata): the loader writes these into each object before it is
 * loaded; they never change while it runs, so the verifier sees them as constants. */
const volatile __u32 cfg_daemon_tgid = 0;      /* never watch or hold the daemon itself */
const volatile __u32 cfg_capture_holds = 0;    /* 1 = take capture holds at first connect */
const volatile __u32 cfg_call_capture_cap = 0; /* bytes kept per SSL call (head + tail); 0 = max */
/* --cgroup-scope (docs/enforcement.md, "Cgroup scope"): the id and level of the scope's root
 * cgroup; 0 = the whole host. A task outside the subtree is invisible to this daemon's
 * host-wide programs (process and connect tracepoints, the DNS probe), so two daemons with
 * disjoint scopes never hold, watch or learn from each other's processes. */
const volatile __u64 cfg_scope_cgroup_id = 0;
const volatile __u32 cfg_scope_level = 0;

/* pid (tgid) -> watch state. PENDING is set by the kernel at the first qualifying connect so
 * that a process is asked for (and held) once; the daemon sets ATTACHED / IGNORED. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct ab_watch_value);
} watch SEC(".maps");

/* pid -> hold record, pinned by the loader so holds outlive a crashed daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct ab_hold_value);
} holds SEC(".maps");

/* Processes and cgroups selected by a budget or loop rule (written by the daemon). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} matched_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} matched_cgroups SEC(".maps");

/* Known LLM endpoints (address + port; port 0 = any port). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ab_endpoint_key);
	__type(value, __u32);
} endpoints SEC(".maps");

/* Addresses learned from one uid's own DNS answers, not confirmed yet (see
 * struct ab_endpoint_hint_key). The daemon caps what one uid may put here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ab_endpoint_hint_key);
	__type(value, __u32);
} endpoint_hints SEC(".maps");

/* Sockets connected to plain-HTTP endpoints (see struct ab_plain_key): written by the connect
 * exit (net.bpf.c), read by the per-process plain probes (tls.bpf.c), deleted at close. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ab_plain_key);
	__type(value, __u64);
} plain_socks SEC(".maps");

/* Budget admission per gated process (see struct ab_gate). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct ab_gate);
} gate SEC(".maps");

/* deny action: cgroups (ids) and processes whose new connections to endpoints fail. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} denied_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} denied_pids SEC(".maps");

/* Executables judged "no readable TLS" (written by the daemon, see struct ab_exe_key). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ab_exe_key);
	__type(value, struct ab_exe_value);
} opaque_exes SEC(".maps");

/* Whether the current task is inside the daemon's cgroup scope (always, with no scope). Its
 * ancestor at the scope's level is the scope root exactly when it is in that subtree. */
static __always_inline bool ab_in_scope(void)
{
	if (!cfg_scope_cgroup_id)
		return true;
	return bpf_get_current_ancestor_cgroup_id(cfg_scope_level) == cfg_scope_cgroup_id;
}

static __always_inline void ab_count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += n; /* per-CPU slot: no atomic needed */
}

static __always_inline void ab_fill_header(struct ab_event_header *h, __u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();
	h->type = type;
	h->pid = id >> 32;
	h->tid = (__u32)id;
	h->layout = AB_EVENT_LAYOUT_VERSION;
	h->ts_ns = bpf_ktime_get_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
}

/* The endpoints map value of (family, addr, port), the exact port first: AB_EP_KNOWN, with
 * AB_EP_PLAIN for a plain-HTTP endpoint; an address only `uid` was taught (endpoint_hints)
 * gives AB_EP_KNOWN; 0: not an endpoint. */
static __always_inline __u32 ab_endpoint_flags(__u16 family, __u16 port, const __u8 *addr, __u32 uid)
{
	struct ab_endpoint_key k = {};
	k.family = family;
	k.port = port;
	__builtin_memcpy(k.addr, addr, 16);
	__u32 *v = bpf_map_lookup_elem(&endpoints, &k);
	if (v)
		return *v;
	k.port = 0;
	v = bpf_map_lookup_elem(&endpoints, &k);
	if (v)
		return *v;
	struct ab_endpoint_hint_key h = {};
	h.uid = uid;
	h.ep = k;
	h.ep.port = port;
	if (bpf_map_lookup_elem(&endpoint_hints, &h))
		return AB_EP_KNOWN;
	h.ep.port = 0;
	return bpf_map_lookup_elem(&endpoint_hints, &h) ? AB_EP_KNOWN : 0;
}

/* Whether a connect of `uid` to (family, addr, port) goes to an LLM endpoint: a confirmed
 * one (host-wide), or a hint that same uid taught (its own DNS answer, see endpoint_hints).
 * Hints are looked up only when the host-wide map has nothing: connects are rare. */
static __always_inline bool ab_known_endpoint(__u16 family, __u16 port, const __u8 *addr, __u32 uid)
{
	return ab_endpoint_flags(family, port, addr, uid) != 0;
}

/* The current task's real uid as the initial user namespace sees it (the uid a DNS event
 * carries; bpf_get_current_uid_gid() gives the same where it is allowed). */
static __always_inline __u32 ab_current_uid_core(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	return BPF_CORE_READ(task, cred, uid.val);
}


/* A SIGSTOP is seen by the parent: a shell would move its foreground job to the background
 * and the user loses it. So a process in its terminal's foreground process group is never
 * stopped by a hold. */
static __always_inline bool ab_terminal_foreground(struct task_struct *task)
{
	struct tty_struct *tty = BPF_CORE_READ(task, signal, tty);
	if (!tty)
		return false;
	struct pid *fg = BPF_CORE_READ(tty, ctrl.pgrp);
	struct pid *pg = BPF_CORE_READ(task, signal, pids[PIDTYPE_PGID]);
	return fg && fg == pg;
}

/* Whether the current task's executable is in opaque_exes (same file: same mtime too). */
static __always_inline bool ab_exe_opaque(struct task_struct *task)
{
	struct file *f = BPF_CORE_READ(task, mm, exe_file);
	if (!f)
		return false;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	struct ab_exe_key k = {};
	k.dev = BPF_CORE_READ(ino, i_sb, s_dev);
	k.ino = BPF_CORE_READ(ino, i_ino);
	struct ab_exe_value *v = bpf_map_lookup_elem(&opaque_exes, &k);
	if (!v)
		return false;
	return v->mtime_sec == BPF_CORE_READ(ino, i_mtime_sec) && v->mtime_nsec == BPF_CORE_READ(ino, i_mtime_nsec);
}

#endif /* AB_MAPS_BPF_H */

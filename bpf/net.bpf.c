// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * net.bpf.c — host-wide programs on rare network events:
 *   - connect (enter: remember the address; exit: decide) — the moment a process is first
 *     seen talking to an LLM endpoint, or, when a budget selects it, making any outbound
 *     connection. That first time the process is asked for (watch = PENDING) and, unless it is
 *     a terminal's foreground job, held with SIGSTOP until the daemon attached its TLS probes.
 *   - accept (watched processes only) — channels between agents (loop detection).
 *   - getaddrinfo (uprobe on libc, a rare call) — learns the addresses of provider hosts, as
 *     the resolving uid's hints until the daemon's own resolution confirms them.
 * Never host-wide on read/write: that would tax every socket on the host.
 */
#include "maps.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct connect_args {
	__u64 uaddr;
	__s32 fd;
	__u32 addrlen;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct connect_args);
} connect_scratch SEC(".maps");

static __always_inline int read_sockaddr(__u64 uaddr, __u16 *family, __u16 *port, __u8 addr[16])
{
	struct sockaddr_in6 sa6 = {};
	/* sockaddr_in6 (28 bytes) covers sockaddr_in (16 bytes) */
	if (bpf_probe_read_user(&sa6, sizeof(struct sockaddr_in), (void *)uaddr) != 0)
		return -1;
	*family = sa6.sin6_family;
	if (*family == AB_AF_INET) {
		struct sockaddr_in *sa4 = (struct sockaddr_in *)&sa6;
		*port = bpf_ntohs(sa4->sin_port);
		__builtin_memset(addr, 0, 16);
		__builtin_memcpy(addr, &sa4->sin_addr.s_addr, 4);
		return 0;
	}
	if (*family == AB_AF_INET6) {
		if (bpf_probe_read_user(&sa6, sizeof(sa6), (void *)uaddr) != 0)
			return -1;
		*port = bpf_ntohs(sa6.sin6_port);
		__builtin_memcpy(addr, &sa6.sin6_addr, 16);
		return 0;
	}
	return -1;
}

SEC("tp/syscalls/sys_enter_connect")
int ab_connect_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (cfg_daemon_tgid == (id >> 32) || !ab_in_scope())
		return 0;
	struct connect_args a = {};
	a.fd = (__s32)ctx->args[0];
	a.uaddr = ctx->args[1];
	a.addrlen = (__u32)ctx->args[2];
	__u32 tid = (__u32)id;
	bpf_map_update_elem(&connect_scratch, &tid, &a, BPF_ANY);
	return 0;
}

/* A connect to a plain-HTTP endpoint: its (pid, fd) gets a new stream id, which the
 * per-process plain probes (tls.bpf.c, attached only to processes that talk to such an
 * endpoint) look up on each write and read. The fd's previous connection, if its close was not
 * seen (a Go close, a process without the probes yet), ends here. Only connects to plain
 * endpoints pay this. */
static __always_inline void plain_track(__u32 pid, __s32 fd)
{
	struct ab_plain_key k = {.pid = pid, .fd = fd};
	__u64 *old = bpf_map_lookup_elem(&plain_socks, &k);
	if (old) {
		__u64 prev = *old;
		struct ab_tls_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (e) {
			__builtin_memset(e, 0, sizeof(*e));
			ab_fill_header(&e->hdr, AB_EV_SSL_FREE);
			e->ssl = prev;
			bpf_ringbuf_submit(e, 0);
		} else {
			ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		}
	}
	__u64 conn = AB_PLAIN_CONN_BIT | bpf_ktime_get_ns();
	bpf_map_update_elem(&plain_socks, &k, &conn, BPF_ANY);
}

SEC("tp/syscalls/sys_exit_connect")
int ab_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, pid = id >> 32;
	struct connect_args *a = bpf_map_lookup_elem(&connect_scratch, &tid);
	if (!a)
		return 0;
	struct connect_args args = *a;
	bpf_map_delete_elem(&connect_scratch, &tid);

	long ret = ctx->ret;
	if (ret != 0 && ret != -AB_EINPROGRESS)
		return 0;
	__u16 family = 0, port = 0;
	__u8 addr[16];
	if (read_sockaddr(args.uaddr, &family, &port, addr) != 0)
		return 0;

	__u32 flags = 0;
	__u32 ep = ab_endpoint_flags(family, port, addr, (__u32)bpf_get_current_uid_gid());
	if (ep)
		flags |= AB_SOCK_KNOWN_ENDPOINT;
	if (ep & AB_EP_PLAIN)
		plain_track(pid, args.fd);
	__u64 cgid = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&matched_pids, &pid) || bpf_map_lookup_elem(&matched_cgroups, &cgid))
		flags |= AB_SOCK_BUDGET_MATCHED;
	struct ab_watch_value *w = bpf_map_lookup_elem(&watch, &pid);
	if (w) {
		if (w->state == AB_WATCH_IGNORED && !(flags & AB_SOCK_KNOWN_ENDPOINT))
			return 0;
		flags |= AB_SOCK_WATCHED;
		if (w->state == AB_WATCH_OPAQUE)
			flags |= AB_SOCK_OPAQUE; /* judged already: never held or rescanned again */
	}
	if (!(flags & (AB_SOCK_KNOWN_ENDPOINT | AB_SOCK_BUDGET_MATCHED | AB_SOCK_WATCHED)))
		return 0; /* the common case: an unrelated process, nothing to say */

	bool first = !w || (w->state == AB_WATCH_IGNORED && (flags & AB_SOCK_KNOWN_ENDPOINT));
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (first && ab_exe_opaque(task)) {
		/* Its executable was judged "no readable TLS" before (another process of the same
		 * file): nothing to attach or scan. */
		flags |= AB_SOCK_OPAQUE;
		ab_count(AB_CNT_OPAQUE_EXE_SKIPS, 1);
	}
	/* A process of a known-opaque executable is not scanned again, but it is still held at its
	 * first connect until the daemon has gated it (milliseconds): its socket hook finds no
	 * gate entry before that, and its first request would pass unbudgeted. */
	bool want_hold = first && cfg_capture_holds;
	if (want_hold && ab_terminal_foreground(task)) {
		ab_count(AB_CNT_HOLDS_SKIPPED_FG, 1);
		want_hold = false;
		flags |= AB_SOCK_FOREGROUND; /* the daemon may freeze its cgroup instead */
	}

	/* The hold record is reserved first: a program that cannot tell the daemon must not hold. */
	struct ab_hold_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		if (want_hold)
			ab_count(AB_CNT_HOLDS_NO_RECORD, 1);
		return 0; /* watch stays unset: the next connect asks again */
	}
	ab_fill_header(&e->hdr, want_hold ? AB_EV_HOLD : AB_EV_CONNECT);
	e->reason = AB_HOLD_CAPTURE;
	e->_pad = 0;
	e->start_time_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	e->sock.hdr = e->hdr;
	e->sock.hdr.type = AB_EV_CONNECT;
	e->sock.fd = args.fd;
	e->sock.ret = (__s32)ret;
	e->sock.family = family;
	e->sock.port = port;
	__builtin_memcpy(e->sock.addr, addr, 16);
	bpf_get_current_comm(&e->sock.comm, sizeof(e->sock.comm));

	if (first) {
		struct ab_watch_value nw = {};
		nw.state = (flags & AB_SOCK_OPAQUE) ? AB_WATCH_OPAQUE : AB_WATCH_PENDING;
		nw.since_ns = e->hdr.ts_ns;
		bpf_map_update_elem(&watch, &pid, &nw, BPF_ANY);
	}
	if (want_hold) {
		struct ab_hold_value hv = {};
		hv.start_time_ns = e->start_time_ns;
		hv.since_ns = e->hdr.ts_ns;
		hv.reason = AB_HOLD_CAPTURE;
		if (bpf_map_update_elem(&holds, &pid, &hv, BPF_NOEXIST) == 0) {
			e->sock.flags = flags | AB_SOCK_HELD;
			bpf_send_signal(AB_SIGSTOP);
			ab_count(AB_CNT_HOLDS_TAKEN, 1);
		} else {
			e->sock.flags = flags;
			e->hdr.type = AB_EV_CONNECT;
		}
	} else {
		e->sock.flags = flags;
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* accept on watched processes only: agent-to-agent channels over loopback TCP. */
SEC("tp/syscalls/sys_exit_accept4")
int ab_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (ctx->ret < 0 || !bpf_map_lookup_elem(&watch, &pid) || !ab_in_scope())
		return 0;
	struct ab_sock_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	ab_fill_header(&e->hdr, AB_EV_ACCEPT);
	e->fd = (__s32)ctx->ret;
	e->ret = 0;
	e->flags = AB_SOCK_WATCHED;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* ---- DNS: getaddrinfo(node, service, hints, res) on the C library -------------------- */

/* glibc's struct addrinfo on 64-bit targets. */
struct ab_addrinfo {
	int ai_flags;
	int ai_family;
	int ai_socktype;
	int ai_protocol;
	__u32 ai_addrlen;
	__u64 ai_addr;
	__u64 ai_canonname;
	__u64 ai_next;
};

struct gai_args {
	__u64 node;
	__u64 res;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct gai_args);
} gai_scratch SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(ab_getaddrinfo_enter, const char *node, const char *service, void *hints, void *res)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct gai_args a = {.node = (__u64)node, .res = (__u64)res};
	if (!node || !res || cfg_daemon_tgid == (id >> 32) || !ab_in_scope())
		return 0; /* the daemon's own look-ups come back through its Resolver */
	bpf_map_update_elem(&gai_scratch, &tid, &a, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_getaddrinfo_exit, int ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct gai_args *a = bpf_map_lookup_elem(&gai_scratch, &tid);
	if (!a)
		return 0;
	struct gai_args args = *a;
	bpf_map_delete_elem(&gai_scratch, &tid);
	if (ret != 0)
		return 0;
	struct ab_dns_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	ab_fill_header(&e->hdr, AB_EV_DNS);
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_probe_read_user_str(e->name, sizeof(e->name), (void *)args.node);
	__u64 cur = 0;
	if (bpf_probe_read_user(&cur, sizeof(cur), (void *)args.res) != 0)
		cur = 0;
	__u32 n = 0;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (!cur || n >= AB_DNS_MAX_ADDRS)
			break;
		struct ab_addrinfo ai = {};
		if (bpf_probe_read_user(&ai, sizeof(ai), (void *)cur) != 0) {
			ab_count(AB_CNT_DNS_PARSE, 1);
			break;
		}
		if (ai.ai_family == AB_AF_INET && ai.ai_addr) {
			struct sockaddr_in sa = {};
			if (bpf_probe_read_user(&sa, sizeof(sa), (void *)ai.ai_addr) == 0) {
				__u32 slot = n & (AB_DNS_MAX_ADDRS - 1);
				e->family[slot] = AB_AF_INET;
				__builtin_memcpy(e->addr[slot], &sa.sin_addr.s_addr, 4);
				n++;
			}
		} else if (ai.ai_family == AB_AF_INET6 && ai.ai_addr) {
			struct sockaddr_in6 sa = {};
			if (bpf_probe_read_user(&sa, sizeof(sa), (void *)ai.ai_addr) == 0) {
				__u32 slot = n & (AB_DNS_MAX_ADDRS - 1);
				e->family[slot] = AB_AF_INET6;
				__builtin_memcpy(e->addr[slot], &sa.sin6_addr, 16);
				n++;
			}
		}
		cur = ai.ai_next;
	}
	e->naddrs = n;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* deny action: a connect to a known endpoint from a denied cgroup or process fails with
 * EPERM (returning 0 from a cgroup/connect program). Attached at the cgroup2 root: connects
 * are rare, and two map look-ups is all an unrelated process pays. */
static __always_inline bool ab_denied(void)
{
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&denied_cgroups, &cg) || bpf_map_lookup_elem(&denied_pids, &pid);
}

SEC("cgroup/connect4")
int ab_deny_connect4(struct bpf_sock_addr *ctx)
{
	if (!ab_denied())
		return 1;
	__u8 addr[16] = {};
	__u32 ip = ctx->user_ip4;
	__builtin_memcpy(addr, &ip, 4);
	if (!ab_known_endpoint(AB_AF_INET, bpf_ntohs((__u16)ctx->user_port), addr, (__u32)bpf_get_current_uid_gid()))
		return 1;
	ab_count(AB_CNT_DENIED_CONNECT, 1);
	return 0;
}

SEC("cgroup/connect6")
int ab_deny_connect6(struct bpf_sock_addr *ctx)
{
	if (!ab_denied())
		return 1;
	__u8 addr[16] = {};
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__builtin_memcpy(addr, &w0, 4);
	__builtin_memcpy(addr + 4, &w1, 4);
	__builtin_memcpy(addr + 8, &w2, 4);
	__builtin_memcpy(addr + 12, &w3, 4);
	if (!ab_known_endpoint(AB_AF_INET6, bpf_ntohs((__u16)ctx->user_port), addr, (__u32)bpf_get_current_uid_gid()))
		return 1;
	ab_count(AB_CNT_DENIED_CONNECT, 1);
	return 0;
}

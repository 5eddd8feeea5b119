// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sock.bpf.c — socket-level capture of OPAQUE processes: watched processes whose TLS
 * agentbrake cannot read (no supported stack found, rustls, a damaged Go binary). Their
 * plaintext is out of reach, so their connections to LLM endpoints are counted at the socket:
 *
 *   - ab_sockops (cgroup sock_ops at the cgroup2 root): at an outbound TCP connect (process
 *     context) of an opaque process to a known endpoint, the socket gets per-socket state
 *     (sk_storage) and, once established, joins the opaque_socks sockhash; at its close the
 *     totals are reported. Every other socket on the host costs one map look-up per connect.
 *   - ab_opaque_msg (sk_msg on that sockhash): runs at each sendmsg of those sockets only
 *     (in the sender's context). A request start is the first write burst after bytes were
 *     received that carries AB_OPQ_REQUEST_MIN_BYTES of TLS application data. It is reported,
 *     and admitted like a TLS request start: a gated process takes a credit; without one (or
 *     when the process or its cgroup is denied) the write is refused (SK_DROP: the sendmsg
 *     fails with EACCES). An sk_msg program cannot sleep or send a signal, so an opaque
 *     request is refused, never held (docs/enforcement.md).
 *
 *   - server names (same two programs): a CANDIDATE process (watched, or selected by a budget
 *     or loop rule) that connects to an address that is no endpoint — an agent with its own
 *     resolver (Go, a container, a static binary) never calls the getaddrinfo the DNS probe
 *     sees — gets that socket into the sockhash too, flagged AB_OPQ_SOCK_SNI; its first write
 *     (the TLS ClientHello) is copied to the daemon (struct ab_sni_event), which reads the
 *     server name; later writes of that socket cost one sk_storage look-up.
 *
 * No read/write tracepoint: unwatched processes' sockets never run any of this.
 */
#include "maps.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AB_TLS_APPLICATION_DATA 0x17
#define AB_TCP_ESTABLISHED 1 /* BPF_TCP_ESTABLISHED */
#define AB_TCP_SYN_SENT 2

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ab_opaque_sock);
} opaque_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* socket cookie */
	__type(value, __u64);
} opaque_socks SEC(".maps");

static __always_inline void emit(struct ab_opaque_sock *st, __u32 kind, __u64 bytes_in)
{
	struct ab_opaque_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		return;
	}
	ab_fill_header(&e->hdr, AB_EV_OPAQUE);
	e->hdr.pid = st->pid; /* a close may run in softirq context: the socket's owner */
	e->hdr.cgroup_id = st->cgroup_id;
	e->conn = st->conn;
	e->bytes_out = st->bytes_out;
	e->bytes_in = bytes_in;
	e->kind = kind;
	e->requests = st->requests;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline bool endpoint_of(struct bpf_sock_ops *skops)
{
	__u8 addr[16] = {};
	__u16 port = (__u16)bpf_ntohl(skops->remote_port);
	__u32 uid = ab_current_uid_core(); /* TCP_CONNECT_CB runs in the connecting process */
	if (skops->family == AB_AF_INET) {
		__u32 ip = skops->remote_ip4;
		__builtin_memcpy(addr, &ip, 4);
		return ab_known_endpoint(AB_AF_INET, port, addr, uid);
	}
	if (skops->family == AB_AF_INET6) {
		__u32 w0 = skops->remote_ip6[0], w1 = skops->remote_ip6[1], w2 = skops->remote_ip6[2],
		      w3 = skops->remote_ip6[3];
		__builtin_memcpy(addr, &w0, 4);
		__builtin_memcpy(addr + 4, &w1, 4);
		__builtin_memcpy(addr + 8, &w2, 4);
		__builtin_memcpy(addr + 12, &w3, 4);
		return ab_known_endpoint(AB_AF_INET6, port, addr, uid);
	}
	return false;
}

SEC("sockops")
int ab_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: { /* process context: the connecting process */
		__u64 id = bpf_get_current_pid_tgid();
		__u32 pid = id >> 32;
		if (pid == cfg_daemon_tgid)
			return 1;
		struct ab_watch_value *w = bpf_map_lookup_elem(&watch, &pid);
		__u64 cg = bpf_get_current_cgroup_id();
		/* A candidate: watched (or being judged), or selected by a budget or loop rule. Its
		 * connects to addresses that are no endpoint are looked at once, at their first write
		 * (the ClientHello's server name: agents with their own resolver, docs/enforcement.md).
		 * Any other process pays the look-ups above and below, nothing per write. */
		bool candidate = (w && w->state != AB_WATCH_IGNORED) || bpf_map_lookup_elem(&matched_pids, &pid) ||
				 bpf_map_lookup_elem(&matched_cgroups, &cg);
		bool opaque = w ? w->state == AB_WATCH_OPAQUE
				: ab_exe_opaque((struct task_struct *)bpf_get_current_task());
		/* a first connect, or one made while the first is being judged, or an opaque
		 * process's: the socket gets its state (and its close is watched) but joins the
		 * sockhash as an opaque one only once the daemon judges the process opaque. */
		bool track = opaque || !w || w->state == AB_WATCH_PENDING;
		__u32 flags = AB_OPQ_SOCK_TLS;
		if (endpoint_of(skops)) {
			if (!track)
				return 1; /* judged readable, or ignored */
			if (opaque)
				flags |= AB_OPQ_SOCK_OPAQUE;
		} else if (candidate) {
			flags = AB_OPQ_SOCK_SNI;
		} else {
			return 1;
		}
		struct ab_opaque_sock *st = bpf_sk_storage_get(&opaque_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!st)
			return 1;
		st->conn = bpf_get_socket_cookie(skops);
		st->pid = pid;
		st->uid = ab_current_uid_core();
		st->cgroup_id = cg;
		st->flags = flags;
		bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct ab_opaque_sock *st = bpf_sk_storage_get(&opaque_state, sk, 0, 0);
		if (!st)
			return 1;
		if (!(st->flags & (AB_OPQ_SOCK_OPAQUE | AB_OPQ_SOCK_SNI))) {
			__u32 pid = st->pid;
			struct ab_watch_value *w = bpf_map_lookup_elem(&watch, &pid);
			if (!w || w->state != AB_WATCH_OPAQUE)
				return 1; /* the daemon adds it if it judges the process opaque */
			st->flags |= AB_OPQ_SOCK_OPAQUE;
		}
		__u64 key = st->conn;
		if (bpf_sock_hash_update(skops, &opaque_socks, &key, BPF_ANY) == 0 && (st->flags & AB_OPQ_SOCK_OPAQUE))
			ab_count(AB_CNT_OPAQUE_SOCKETS, 1);
		return 1;
	}
	case BPF_SOCK_OPS_STATE_CB: {
		/* the first state after ESTABLISHED (FIN_WAIT1, CLOSE_WAIT, CLOSE): it is ending */
		if (skops->args[1] == AB_TCP_ESTABLISHED || skops->args[1] == AB_TCP_SYN_SENT)
			return 1;
		struct ab_opaque_sock *st = bpf_sk_storage_get(&opaque_state, sk, 0, 0);
		if (!st || (st->flags & AB_OPQ_SOCK_CLOSED) || !(st->flags & AB_OPQ_SOCK_OPAQUE))
			return 1;
		st->flags |= AB_OPQ_SOCK_CLOSED;
		emit(st, AB_OPQ_CLOSE, skops->bytes_received);
		return 1;
	}
	}
	return 1;
}

/* The first write of a candidate's socket to an unknown address (AB_OPQ_SOCK_SNI): its first
 * AB_SNI_CAPTURE bytes go to the daemon, which reads the ClientHello's server name. */
static __always_inline void report_first_write(struct sk_msg_md *msg, struct ab_opaque_sock *st)
{
	__u32 want = msg->size;
	if (want > AB_SNI_CAPTURE)
		want = AB_SNI_CAPTURE;
	if (want == 0)
		return;
	/* [0, want) made linear: read below with bpf_probe_read_kernel (a bounded length) */
	if (bpf_msg_pull_data(msg, 0, want, 0) != 0)
		return;
	void *d = msg->data, *de = msg->data_end;
	if (d + 1 > de)
		return;
	__u32 n = want;
	struct ab_sni_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		return;
	}
	ab_fill_header(&e->hdr, AB_EV_SNI);
	e->hdr.pid = st->pid;
	e->hdr.cgroup_id = st->cgroup_id;
	e->conn = st->conn;
	e->uid = st->uid;
	e->family = (__u16)msg->family;
	e->port = (__u16)bpf_ntohl(msg->remote_port);
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (msg->family == AB_AF_INET) {
		__u32 ip = msg->remote_ip4;
		__builtin_memcpy(e->addr, &ip, 4);
	} else {
		__u32 w0 = msg->remote_ip6[0], w1 = msg->remote_ip6[1], w2 = msg->remote_ip6[2], w3 = msg->remote_ip6[3];
		__builtin_memcpy(e->addr, &w0, 4);
		__builtin_memcpy(e->addr + 4, &w1, 4);
		__builtin_memcpy(e->addr + 8, &w2, 4);
		__builtin_memcpy(e->addr + 12, &w3, 4);
	}
	e->_pad = 0;
	if (bpf_probe_read_kernel(e->data, n, d) != 0)
		n = 0;
	e->len = (__u32)n;
	bpf_ringbuf_submit(e, 0);
	ab_count(AB_CNT_SNI_REPORTS, 1);
}

SEC("sk_msg")
int ab_opaque_msg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct ab_opaque_sock *st = bpf_sk_storage_get(&opaque_state, sk, 0, 0);
	if (!st)
		return SK_PASS;
	if (st->flags & AB_OPQ_SOCK_SNI) {
		st->flags &= ~AB_OPQ_SOCK_SNI; /* its first write only */
		report_first_write(msg, st);
	}
	if (!(st->flags & AB_OPQ_SOCK_OPAQUE))
		return SK_PASS;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u64 rcv = tp ? tp->bytes_received : 0;
	__u32 size = msg->size;

	bool app = true;
	if (st->flags & AB_OPQ_SOCK_TLS) {
		void *d = msg->data, *de = msg->data_end;
		if (d + 1 > de) {
			bpf_msg_pull_data(msg, 0, 1, 0);
			d = msg->data;
			de = msg->data_end;
		}
		app = d + 1 <= de && *(__u8 *)d == AB_TLS_APPLICATION_DATA;
	}
	if (rcv != st->rcv_at_last_write) { /* bytes arrived since the last write: a new burst */
		st->rcv_at_last_write = rcv;
		st->burst_app = 0;
		st->burst_counted = 0;
	}
	st->bytes_out += size;
	if (app)
		st->burst_app += size;
	if (st->burst_counted || st->burst_app < AB_OPQ_REQUEST_MIN_BYTES)
		return SK_PASS;

	/* A request start: admitted like a TLS request start, refused where it would be held. */
	__u32 pid = st->pid;
	__u64 cg = st->cgroup_id;
	bool refuse = bpf_map_lookup_elem(&denied_pids, &pid) || bpf_map_lookup_elem(&denied_cgroups, &cg);
	struct ab_gate *g = bpf_map_lookup_elem(&gate, &pid);
	if (!refuse && g) {
		if (g->credits > 0) {
			__sync_fetch_and_add(&g->credits, -1);
			ab_count(AB_CNT_GATE_PASSED, 1);
		} else {
			refuse = true;
		}
	}
	if (refuse) {
		ab_count(AB_CNT_OPAQUE_REFUSED, 1);
		emit(st, AB_OPQ_REFUSED, rcv);
		return SK_DROP;
	}
	st->burst_counted = 1;
	st->requests++;
	ab_count(AB_CNT_OPAQUE_REQUESTS, 1);
	st->bytes_out -= size; /* the request's bytes start with this write */
	emit(st, AB_OPQ_REQUEST, rcv);
	st->bytes_out += size;
	return SK_PASS;
}

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tls.bpf.c — OpenSSL plaintext capture, attached PER WATCHED PROCESS (uprobes with a pid
 * filter), never host-wide: a host-wide uprobe taxes every TLS call on the host.
 *
 *   SSL_write / SSL_write_ex   entry: remember (ssl, buf, written*) by thread id
 *                              return: copy what was written
 *   SSL_read  / SSL_read_ex    the same for what was read
 *   SSL_new (return) / SSL_free (entry): a stream (pid, SSL*) begins / ends. SSL pointers are
 *                              reused, so the daemon resets its per-stream state on both.
 *
 * Attribution never uses the SSL's fd: Node and asyncio run OpenSSL on memory BIOs.
 * A call is copied in chunks of AB_CHUNK_MAX; beyond the cap, the head half and the tail half
 * are kept and the middle is reported as a counted gap (the model name can sit at the end).
 */
#include "maps.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct ssl_args {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; /* size_t *written / *readbytes of the _ex forms; 0 otherwise */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tid */
	__type(value, struct ssl_args);
} ssl_write_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tid */
	__type(value, struct ssl_args);
} ssl_read_scratch SEC(".maps");

struct chunk_buf {
	struct ab_tls_event ev;
	__u8 data[AB_CHUNK_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chunk_buf);
} chunk_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} chunk_seq SEC(".maps");

static __always_inline __u64 next_seq(void)
{
	__u32 zero = 0;
	__u64 *s = bpf_map_lookup_elem(&chunk_seq, &zero);
	if (!s)
		return 0;
	return ++*s;
}

/* Quiet data records: a plaintext record wakes the daemon only when it is not polling the ring
 * already. While data flows the daemon drains every few ms and says so in daemon_polls_ring
 * (set from user space); a watched process then pays no wakeup per TLS read and write. When
 * the daemon stops polling it clears the flag and drains once more, so a record is late by at
 * most one timer tick in the one race (flag read as set just before it was cleared). */
const volatile __u32 cfg_quiet_data_records = 0; /* load time: 1 = use daemon_polls_ring */
__u32 daemon_polls_ring = 0;                      /* run time, written by the daemon */

static __always_inline __u64 data_record_flags(void)
{
	return cfg_quiet_data_records && daemon_polls_ring ? BPF_RB_NO_WAKEUP : 0;
}

static __always_inline void emit_meta(__u32 type, __u64 ssl, __u32 dir, __u32 call_len, __u32 lost)
{
	struct ab_tls_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		return;
	}
	ab_fill_header(&e->hdr, type);
	e->ssl = ssl;
	e->seq = next_seq();
	e->dir = dir;
	e->flags = lost ? AB_TLS_TRUNCATED : 0;
	e->call_len = call_len;
	e->offset = 0;
	e->len = 0;
	e->lost = lost;
	bpf_ringbuf_submit(e, 0);
}

/* Copies [start, end) of buf in chunks; at most AB_CHUNKS_PER_HALF chunks. */
static __always_inline void emit_range(__u64 ssl, __u32 dir, __u64 buf, __u32 call_len,
				       __u32 start, __u32 end, __u32 flags)
{
	__u32 zero = 0;
	struct chunk_buf *cb = bpf_map_lookup_elem(&chunk_scratch, &zero);
	if (!cb)
		return;
	__u32 off = start;
	for (int i = 0; i < AB_CHUNKS_PER_HALF; i++) {
		if (off >= end)
			break;
		__u32 n = end - off;
		if (n > AB_CHUNK_MAX)
			n = AB_CHUNK_MAX;
		/* clang 14 may drop a plain bound; the verifier needs one on this very register.
		 * n is in [1, AB_CHUNK_MAX] here, so (n - 1) masked and plus one keeps its value. */
		n -= 1;
		asm volatile("%[n] &= %[m]" : [n] "+r"(n) : [m] "i"(AB_CHUNK_MAX - 1));
		n += 1;
		ab_fill_header(&cb->ev.hdr, AB_EV_TLS_DATA);
		cb->ev.ssl = ssl;
		cb->ev.seq = next_seq();
		cb->ev.dir = dir;
		cb->ev.flags = flags;
		cb->ev.call_len = call_len;
		cb->ev.offset = off;
		cb->ev.len = n;
		cb->ev.lost = 0;
		if (bpf_probe_read_user(cb->data, n, (void *)(buf + off)) != 0) {
			ab_count(AB_CNT_TLS_READ_ERR, 1);
			return;
		}
		if (bpf_ringbuf_output(&events, cb, sizeof(struct ab_tls_event) + n, data_record_flags()) != 0) {
			ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
			return;
		}
		off += n;
	}
}

static __always_inline void emit_data(__u64 ssl, __u32 dir, __u64 buf, __u32 len)
{
	__u32 cap = cfg_call_capture_cap ? cfg_call_capture_cap : AB_CALL_CAP_MAX;
	if (cap > AB_CALL_CAP_MAX)
		cap = AB_CALL_CAP_MAX;
	if (len <= cap) {
		emit_range(ssl, dir, buf, len, 0, len, 0);
		return;
	}
	__u32 half = cap / 2;
	ab_count(AB_CNT_TLS_TRUNCATED, 1);
	ab_count(AB_CNT_TLS_LOST_BYTES, len - cap);
	emit_range(ssl, dir, buf, len, 0, half, AB_TLS_TRUNCATED);
	emit_meta(AB_EV_TLS_GAP, ssl, dir, len, len - cap);
	emit_range(ssl, dir, buf, len, len - half, len, AB_TLS_TRUNCATED | AB_TLS_TAIL);
}

/* The daemon lets a capture hold go by SIGCONT first and deletes its record after, so the
 * record can outlive the hold by the time the daemon takes to run again (under load, long
 * enough for the released process to finish its TLS handshake and start a request). A request
 * start without credit in that gap is held all the same: the record becomes the budget hold's.
 * Returns true when it did. */
static __always_inline bool capture_hold_ending(__u32 pid, const struct ab_hold_value *budget)
{
	struct ab_hold_value *old = bpf_map_lookup_elem(&holds, &pid);
	if (!old || old->reason != AB_HOLD_CAPTURE)
		return false;
	return bpf_map_update_elem(&holds, &pid, budget, BPF_EXIST) == 0;
}

/* Takes a credit for `starts` request starts, or holds the process (SIGSTOP, recorded in the
 * holds map). Returns true when it held. */
static __always_inline bool gate_take(struct ab_gate *g, __u32 starts)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (g->credits >= (__s64)starts) {
		__sync_fetch_and_add(&g->credits, -(__s64)starts);
		ab_count(AB_CNT_GATE_PASSED, starts);
		return false;
	}
	bool held = false;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	bool fg = ab_terminal_foreground(task);
	struct ab_hold_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		ab_count(AB_CNT_HOLDS_NO_RECORD, 1);
		return false; /* a hold nobody hears of would never be released */
	}
	__builtin_memset(e, 0, sizeof(*e));
	ab_fill_header(&e->hdr, AB_EV_HOLD);
	e->reason = AB_HOLD_BUDGET;
	e->start_time_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	e->sock.hdr = e->hdr;
	e->sock.fd = -1;
	bpf_get_current_comm(&e->sock.comm, sizeof(e->sock.comm));
	if (fg) {
		/* the daemon freezes the cgroup instead, when it can; this request goes out */
		e->sock.flags = AB_SOCK_FOREGROUND;
		ab_count(AB_CNT_GATE_FG_LATE, 1);
	} else {
		struct ab_hold_value hv = {};
		hv.start_time_ns = e->start_time_ns;
		hv.since_ns = e->hdr.ts_ns;
		hv.reason = AB_HOLD_BUDGET;
		if (bpf_map_update_elem(&holds, &pid, &hv, BPF_NOEXIST) == 0 || capture_hold_ending(pid, &hv)) {
			e->sock.flags = AB_SOCK_HELD;
			held = true;
			bpf_send_signal(AB_SIGSTOP);
			ab_count(AB_CNT_HOLDS_TAKEN, 1);
			ab_count(AB_CNT_GATE_HELD, 1);
		}
	}
	bpf_ringbuf_submit(e, 0);
	return held;
}

/* ---- HTTP/2 (RFC 9113) ---------------------------------------------------------------------
 * A connection whose first write begins with the client preface is followed frame by frame on
 * the write side, per (pid, stream object), across writes: a write may carry many frames (the
 * preface, SETTINGS, WINDOW_UPDATE and the first HEADERS together), and a frame may span writes
 * (Go's bufio.Writer cuts anywhere, even inside a frame head). A request start is a HEADERS
 * frame opening a client stream (odd id above every id seen): it takes a credit or holds like an
 * HTTP/1 start. CONTINUATION, DATA, trailers and control frames are never gated.
 * Only frame heads are read (9 bytes each), never payloads. A write with more frames than the
 * loop follows, or a head that cannot be one, loses the position: the connection is counted
 * (gate_h2_unsynced) and never gated again (fail open, like a connection first seen mid-way,
 * which has no state here at all). */
#define AB_H2_MAX_FRAMES 512
#define AB_H2_PREFACE_LEN 24
#define AB_H2_PREFACE_PENDING 1 /* the preface is in the first write, not yet written */
#define AB_H2_UNSYNCED 2

struct h2_key {
	__u32 pid;
	__u32 pad;
	__u64 conn; /* SSL* / gnutls session / Go *Conn: the stream's "ssl" */
};

struct h2_conn {
	__u32 max_sid; /* highest client stream id a HEADERS frame opened */
	__u32 skip;    /* payload bytes of the last frame not written yet */
	__u32 have;    /* bytes of a frame head cut by the end of a write (in head) */
	__u32 flags;
	__u8 head[32]; /* a frame head (9 bytes) at [0, 9); room for the verifier's bounds */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct h2_key);
	__type(value, struct h2_conn);
} h2_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h2_conn);
} h2_work SEC(".maps");

static __always_inline struct h2_key h2_key_of(__u64 conn)
{
	struct h2_key k = {};
	k.pid = bpf_get_current_pid_tgid() >> 32;
	k.conn = conn;
	return k;
}

static __always_inline void h2_forget(__u64 conn)
{
	struct h2_key k = h2_key_of(conn);
	bpf_map_delete_elem(&h2_conns, &k);
}

static __always_inline bool h2_preface_at(__u64 buf)
{
	char p[AB_H2_PREFACE_LEN];
	if (bpf_probe_read_user(p, sizeof(p), (void *)buf) != 0)
		return false;
	const char want[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	for (int i = 0; i < AB_H2_PREFACE_LEN; i++)
		if (p[i] != want[i])
			return false;
	return true;
}

static __always_inline void h2_lose(struct h2_conn *w)
{
	if (!(w->flags & AB_H2_UNSYNCED))
		ab_count(AB_CNT_GATE_H2_UNSYNCED, 1);
	w->flags |= AB_H2_UNSYNCED;
}

/* One frame head per step, by bpf_loop (the verifier checks the step once, not per frame). */
struct h2_scan_ctx {
	__u64 buf;
	__u32 len;
	__u32 off;
	__u32 starts;
	__u32 done;
};

static long h2_step(__u64 index, void *vctx)
{
	struct h2_scan_ctx *c = vctx;
	__u32 zero = 0;
	struct h2_conn *w = bpf_map_lookup_elem(&h2_work, &zero);
	if (!w) {
		c->done = 1;
		return 1;
	}
	__u32 off = c->off, len = c->len;
	if (off > len) {
		c->done = 1;
		return 1;
	}
	if (w->skip) {
		__u32 rest = len - off;
		if (w->skip >= rest) {
			w->skip -= rest;
			c->done = 1;
			return 1;
		}
		off += w->skip;
		w->skip = 0;
	}
	if (off >= len) {
		c->done = 1;
		return 1;
	}
	__u32 rest = len - off;
	__u32 have = w->have;
	asm volatile("%[h] &= 15" : [h] "+r"(have));
	if (have > 8) {
		h2_lose(w);
		c->done = 1;
		return 1;
	}
	__u32 need = 9 - have;
	if (rest < need) { /* a head cut by the end of this write: kept for the next */
		__u32 n = rest;
		asm volatile("%[n] &= 15" : [n] "+r"(n));
		if (bpf_probe_read_user(&w->head[have], n, (void *)(c->buf + off)) != 0)
			h2_lose(w);
		else
			w->have = have + n;
		c->done = 1;
		return 1;
	}
	asm volatile("%[n] &= 15" : [n] "+r"(need));
	if (bpf_probe_read_user(&w->head[have], need, (void *)(c->buf + off)) != 0) {
		h2_lose(w);
		c->done = 1;
		return 1;
	}
	off += need;
	w->have = 0;
	__u32 flen = ((__u32)w->head[0] << 16) | ((__u32)w->head[1] << 8) | w->head[2];
	__u8 type = w->head[3];
	__u32 sid = ((__u32)w->head[5] << 24) | ((__u32)w->head[6] << 16) | ((__u32)w->head[7] << 8) |
		    w->head[8];
	if ((sid & 0x80000000u) || type > 0x20) { /* not a frame head: the position is lost */
		h2_lose(w);
		c->done = 1;
		return 1;
	}
	if (type == 0x1 && (sid & 1) && sid > w->max_sid) {
		w->max_sid = sid;
		c->starts++;
	}
	w->skip = flen;
	c->off = off;
	return 0;
}

/* Advances the work copy (h2_work) over the `len` bytes written at buf; returns the request
 * starts among them. */
static __always_inline __u32 h2_scan(struct h2_conn *w, __u64 buf, __u32 len)
{
	struct h2_scan_ctx c = {.buf = buf, .len = len};
	if (w->flags & AB_H2_UNSYNCED)
		return 0;
	if (w->flags & AB_H2_PREFACE_PENDING) {
		if (len < AB_H2_PREFACE_LEN) {
			h2_lose(w);
			return 0;
		}
		c.off = AB_H2_PREFACE_LEN;
		w->flags &= ~AB_H2_PREFACE_PENDING;
	}
	bpf_loop(AB_H2_MAX_FRAMES, h2_step, &c, 0);
	if (c.done || (w->flags & AB_H2_UNSYNCED))
		return c.starts;
	if (c.off <= len && w->skip >= len - c.off) { /* the last frame followed ends the write or goes on */
		w->skip -= len - c.off;
		return c.starts;
	}
	h2_lose(w); /* more frames in one write than followed */
	return c.starts;
}

/* Entry of a TLS write of `len` bytes at buf on stream `conn`: the request starts it carries.
 * commit: the write is taken as done (Go: all or an error); otherwise (OpenSSL, GnuTLS, which
 * may write less or ask to retry) only the stream ids are kept now and h2_wrote() advances the
 * position at the return by what was written. *is_h2 tells whether the stream is HTTP/2. */
static __always_inline __u32 h2_starts(__u64 conn, __u64 buf, __u64 len, bool commit, bool *is_h2)
{
	struct h2_key k = h2_key_of(conn);
	struct h2_conn *st = bpf_map_lookup_elem(&h2_conns, &k);
	*is_h2 = false;
	if (!st) {
		if (len < AB_H2_PREFACE_LEN || !h2_preface_at(buf))
			return 0;
		struct h2_conn fresh = {};
		fresh.flags = AB_H2_PREFACE_PENDING;
		bpf_map_update_elem(&h2_conns, &k, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&h2_conns, &k);
		if (!st)
			return 0;
	}
	*is_h2 = true;
	__u32 zero = 0;
	struct h2_conn *w = bpf_map_lookup_elem(&h2_work, &zero);
	if (!w)
		return 0;
	*w = *st;
	__u32 starts = h2_scan(w, buf, len > 0x7fffffff ? 0x7fffffff : (__u32)len);
	if (commit)
		*st = *w;
	else if (w->max_sid > st->max_sid)
		st->max_sid = w->max_sid;
	if (w->flags & AB_H2_UNSYNCED)
		st->flags |= AB_H2_UNSYNCED;
	return starts;
}

/* Return of an OpenSSL/GnuTLS write that wrote n bytes: the position moves by them. */
static __always_inline void h2_wrote(__u64 conn, __u64 buf, __u32 n)
{
	struct h2_key k = h2_key_of(conn);
	struct h2_conn *st = bpf_map_lookup_elem(&h2_conns, &k);
	if (!st)
		return;
	__u32 zero = 0;
	struct h2_conn *w = bpf_map_lookup_elem(&h2_work, &zero);
	if (!w)
		return;
	*w = *st;
	h2_scan(w, buf, n);
	__u32 max_sid = st->max_sid;
	*st = *w;
	if (max_sid > st->max_sid)
		st->max_sid = max_sid;
}

/* Brake: admission at a request's first write (see struct ab_gate). Runs at the TLS write's
 * entry, before any byte of the request is encrypted, so a hold here stops the request itself.
 * HTTP/1: a write that begins with "POST "; HTTP/2: HEADERS frames opening client streams
 * (above). Returns true when it held the process. */
static __always_inline bool gate_request(__u64 conn, const void *buf, __u64 len, bool commit)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	bool is_h2 = false;
	/* HTTP/2 connections are followed whether gated or not: a budget can start to apply
	 * mid-connection, and the frame position must be known by then */
	__u32 starts = h2_starts(conn, (__u64)buf, len, commit, &is_h2);
	struct ab_gate *g = bpf_map_lookup_elem(&gate, &pid);
	if (!g)
		return false;
	if (is_h2)
		return starts ? gate_take(g, starts) : false;
	if (len < 5)
		return false;
	char head[5];
	if (bpf_probe_read_user(head, sizeof(head), buf) != 0)
		return false;
	if (head[0] != 'P' || head[1] != 'O' || head[2] != 'S' || head[3] != 'T' || head[4] != ' ')
		return false; /* a continuation write, or not a call: never gated */
	return gate_take(g, 1);
}

static __always_inline int save_args(void *map, void *ssl, const void *buf, void *len_ptr)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ssl_args a = {.ssl = (__u64)ssl, .buf = (__u64)buf, .len_ptr = (__u64)len_ptr};
	bpf_map_update_elem(map, &tid, &a, BPF_ANY);
	return 0;
}

/* ret: return value of the SSL call. For the _ex forms success is 1 and the count is in
 * *len_ptr; for the plain forms ret > 0 is the count. */
static __always_inline int finish(void *map, __u32 dir, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ssl_args *p = bpf_map_lookup_elem(map, &tid);
	if (!p)
		return 0;
	struct ssl_args a = *p;
	bpf_map_delete_elem(map, &tid);
	__u64 n = 0;
	if (a.len_ptr) {
		if (ret != 1)
			return 0;
		if (bpf_probe_read_user(&n, sizeof(n), (void *)a.len_ptr) != 0)
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		n = ret;
	}
	if (n == 0 || n > 0x7fffffff)
		return 0;
	if (dir == AB_DIR_WRITE)
		h2_wrote(a.ssl, a.buf, (__u32)n);
	emit_data(a.ssl, dir, a.buf, (__u32)n);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ab_ssl_write_enter, void *ssl, const void *buf, int num)
{
	if (num > 0)
		gate_request((__u64)ssl, buf, (__u64)num, false);
	return save_args(&ssl_write_scratch, ssl, buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_ssl_write_exit, int ret)
{
	return finish(&ssl_write_scratch, AB_DIR_WRITE, ret);
}

SEC("uprobe")
int BPF_KPROBE(ab_ssl_write_ex_enter, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	gate_request((__u64)ssl, buf, num, false);
	return save_args(&ssl_write_scratch, ssl, buf, written);
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_ssl_write_ex_exit, int ret)
{
	return finish(&ssl_write_scratch, AB_DIR_WRITE, ret);
}

SEC("uprobe")
int BPF_KPROBE(ab_ssl_read_enter, void *ssl, void *buf, int num)
{
	return save_args(&ssl_read_scratch, ssl, buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_ssl_read_exit, int ret)
{
	return finish(&ssl_read_scratch, AB_DIR_READ, ret);
}

SEC("uprobe")
int BPF_KPROBE(ab_ssl_read_ex_enter, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return save_args(&ssl_read_scratch, ssl, buf, readbytes);
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_ssl_read_ex_exit, int ret)
{
	return finish(&ssl_read_scratch, AB_DIR_READ, ret);
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_ssl_new_exit, void *ssl)
{
	if (ssl) {
		h2_forget((__u64)ssl);
		emit_meta(AB_EV_SSL_NEW, (__u64)ssl, 0, 0, 0);
	}
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ab_ssl_free_enter, void *ssl)
{
	if (ssl) {
		h2_forget((__u64)ssl);
		emit_meta(AB_EV_SSL_FREE, (__u64)ssl, 0, 0, 0);
	}
	return 0;
}

/* ======================================================================================
 * Go crypto/tls — a separate family: crypto/tls.(*Conn).Write / Read / Close in Go binaries
 * (daemon/loader/go_symbols.cpp finds them through .gopclntab, stripped or not).
 *
 * Go 1.17+ register ABI on amd64: receiver (*Conn) in RAX, the []byte in RBX (ptr), RCX (len),
 * RDI (cap); the results in RAX (n), RBX:RCX (error); the current goroutine g in R14.
 * Never a uretprobe on a Go function (goroutine stacks move; the return trampoline corrupts
 * them): results are read by uprobes on each RET of the function. A goroutine can move to
 * another thread between entry and return, so the entry state is keyed by (pid, g), not tid.
 * The entry probes sit after the stack check, so a stack growth (which re-runs the function
 * from its entry) does not see one call twice.
 * Same events as the OpenSSL programs, with the *Conn pointer as the stream's "ssl".
 * ====================================================================================== */

struct go_key {
	__u32 pid;
	__u32 pad;
	__u64 g;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_key);
	__type(value, struct ssl_args);
} go_write_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_key);
	__type(value, struct ssl_args);
} go_read_scratch SEC(".maps");

#if defined(__TARGET_ARCH_x86)
#define AB_GO_RECV(ctx) ((ctx)->ax)
#define AB_GO_BUF(ctx) ((ctx)->bx)
#define AB_GO_LEN(ctx) ((ctx)->cx)
#define AB_GO_RET0(ctx) ((ctx)->ax)
#define AB_GO_G(ctx) ((ctx)->r14)
#else /* the loader attaches these on amd64 only */
#define AB_GO_RECV(ctx) 0
#define AB_GO_BUF(ctx) 0
#define AB_GO_LEN(ctx) 0
#define AB_GO_RET0(ctx) 0
#define AB_GO_G(ctx) 0
#endif

static __always_inline struct go_key go_key_of(struct pt_regs *ctx)
{
	struct go_key k = {};
	k.pid = bpf_get_current_pid_tgid() >> 32;
	k.g = AB_GO_G(ctx);
	return k;
}

static __always_inline int go_save(void *map, struct pt_regs *ctx)
{
	struct go_key k = go_key_of(ctx);
	struct ssl_args a = {.ssl = AB_GO_RECV(ctx), .buf = AB_GO_BUF(ctx), .len_ptr = AB_GO_LEN(ctx)};
	if (!k.g)
		return 0;
	bpf_map_update_elem(map, &k, &a, BPF_ANY);
	return 0;
}

/* A write held at its start (a budget hold) goes out after its release: its plaintext is
 * reported then, by whichever comes first — its own RET, or the RET of a Read on the same
 * *Conn (the response can be read before the writer's RET runs; the request must reach the
 * ring first). The one whose delete succeeds reports it. */
struct go_conn_key {
	__u32 pid;
	__u32 pad;
	__u64 conn;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_conn_key);
	__type(value, struct ssl_args);
} go_held_writes SEC(".maps");

static __always_inline void go_emit(__u64 conn, __u32 dir, __u64 buf, __u64 n)
{
	if (n == 0 || n > 0x7fffffff)
		return;
	emit_data(conn, dir, buf, (__u32)n);
}

static __always_inline void go_flush_held_write(__u64 conn)
{
	struct go_conn_key ck = {};
	ck.pid = bpf_get_current_pid_tgid() >> 32;
	ck.conn = conn;
	struct ssl_args *p = bpf_map_lookup_elem(&go_held_writes, &ck);
	if (!p)
		return;
	struct ssl_args w = *p;
	if (bpf_map_delete_elem(&go_held_writes, &ck) != 0)
		return; /* the other RET reported it */
	go_emit(w.ssl, AB_DIR_WRITE, w.buf, w.len_ptr);
}

/* Write: the plaintext is reported at entry, before it is encrypted and sent, so it reaches
 * the ring before any response to it. A write held by the gate is reported after its release
 * (above). */
SEC("uprobe")
int ab_go_write_enter(struct pt_regs *ctx)
{
	__u64 conn = AB_GO_RECV(ctx), buf = AB_GO_BUF(ctx), len = AB_GO_LEN(ctx);
	if (len == 0)
		return 0;
	if (!gate_request(conn, (const void *)buf, len, true)) {
		go_emit(conn, AB_DIR_WRITE, buf, len);
		return 0;
	}
	struct go_conn_key ck = {};
	ck.pid = bpf_get_current_pid_tgid() >> 32;
	ck.conn = conn;
	struct ssl_args w = {.ssl = conn, .buf = buf, .len_ptr = len};
	bpf_map_update_elem(&go_held_writes, &ck, &w, BPF_ANY);
	return go_save(&go_write_scratch, ctx); /* its RET finds the *Conn by goroutine */
}

SEC("uprobe")
int ab_go_write_ret(struct pt_regs *ctx)
{
	struct go_key k = go_key_of(ctx);
	struct ssl_args *p = bpf_map_lookup_elem(&go_write_scratch, &k);
	if (!p)
		return 0; /* not a held write: reported at entry */
	__u64 conn = p->ssl;
	bpf_map_delete_elem(&go_write_scratch, &k);
	go_flush_held_write(conn);
	return 0;
}

SEC("uprobe")
int ab_go_read_enter(struct pt_regs *ctx)
{
	return go_save(&go_read_scratch, ctx);
}

/* At a RET of Read: n in RAX; len_ptr holds the buffer's length (Go passes no pointer). */
SEC("uprobe")
int ab_go_read_ret(struct pt_regs *ctx)
{
	struct go_key k = go_key_of(ctx);
	struct ssl_args *p = bpf_map_lookup_elem(&go_read_scratch, &k);
	if (!p)
		return 0;
	struct ssl_args a = *p;
	bpf_map_delete_elem(&go_read_scratch, &k);
	long n = (long)AB_GO_RET0(ctx);
	if (n <= 0 || (__u64)n > a.len_ptr)
		return 0;
	go_flush_held_write(a.ssl);
	go_emit(a.ssl, AB_DIR_READ, a.buf, (__u64)n);
	return 0;
}

/* (*Conn).Close: the stream ends (a *Conn's memory is reused by later connections). */
SEC("uprobe")
int ab_go_close_enter(struct pt_regs *ctx)
{
	__u64 conn = AB_GO_RECV(ctx);
	if (conn) {
		h2_forget(conn);
		emit_meta(AB_EV_SSL_FREE, conn, 0, 0, 0);
	}
	return 0;
}

/* ======================================================================================
 * Plain HTTP (endpoints with `tls: false`: Ollama, vLLM, llama.cpp, LM Studio, LiteLLM on a
 * local port). The same records as TLS, for sockets in plain_socks (set at connect by
 * net.bpf.c), with the connection's stream id as the "ssl". Attached per process, and only to
 * processes that connected to a plain endpoint (a host-wide read/write probe would tax all
 * I/O on the host); each hit on another fd of that process costs a map look-up.
 *
 *   C library  write/send/sendto entry: gate (hold before the bytes leave), remember
 *              return: copy what was written
 *              read/recv/recvfrom: the same for what was read; close entry: the stream ends
 *   Go         internal/poll.(*FD).Write / Read / Close (Go makes raw syscalls, never libc's):
 *              the fd is the FD's Sysfd; entry after the stack check, results at each RET,
 *              state keyed by (pid, goroutine), as for crypto/tls above.
 * ====================================================================================== */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tid */
	__type(value, struct ssl_args);
} plain_write_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tid */
	__type(value, struct ssl_args);
} plain_read_scratch SEC(".maps");

static __always_inline __u64 plain_conn(__s32 fd)
{
	struct ab_plain_key k = {.pid = bpf_get_current_pid_tgid() >> 32, .fd = fd};
	__u64 *c = bpf_map_lookup_elem(&plain_socks, &k);
	return c ? *c : 0;
}

static __always_inline void plain_closed(__s32 fd)
{
	struct ab_plain_key k = {.pid = bpf_get_current_pid_tgid() >> 32, .fd = fd};
	__u64 *c = bpf_map_lookup_elem(&plain_socks, &k);
	if (!c)
		return;
	__u64 conn = *c;
	bpf_map_delete_elem(&plain_socks, &k);
	h2_forget(conn);
	emit_meta(AB_EV_SSL_FREE, conn, 0, 0, 0);
}

/* write(fd, buf, n), send(fd, buf, n, flags), sendto(fd, buf, n, flags, addr, len) */
SEC("uprobe")
int BPF_KPROBE(ab_plain_write_enter, int fd, const void *buf, __u64 len)
{
	__u64 conn = plain_conn(fd);
	if (!conn)
		return 0;
	if (len > 0)
		gate_request(conn, buf, len, false); /* a hold here stops the process before the syscall */
	return save_args(&plain_write_scratch, (void *)conn, buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_plain_write_exit, long ret)
{
	return finish(&plain_write_scratch, AB_DIR_WRITE, ret);
}

/* read(fd, buf, n), recv(fd, buf, n, flags), recvfrom(fd, buf, n, flags, addr, len) */
SEC("uprobe")
int BPF_KPROBE(ab_plain_read_enter, int fd, void *buf, __u64 len)
{
	__u64 conn = plain_conn(fd);
	if (!conn)
		return 0;
	return save_args(&plain_read_scratch, (void *)conn, buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(ab_plain_read_exit, long ret)
{
	return finish(&plain_read_scratch, AB_DIR_READ, ret);
}

SEC("uprobe")
int BPF_KPROBE(ab_plain_close_enter, int fd)
{
	plain_closed(fd);
	return 0;
}

/* ---- Go: internal/poll.(*FD) ---------------------------------------------------------- */

/* Go's poll.FD begins with fdmu (fdMutex: a uint64 and two uint32) and then Sysfd int: the fd
 * sits at offset 16 (unchanged from Go 1.9 to 1.23). */
#define AB_GO_FD_SYSFD_OFF 16

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_key);
	__type(value, struct ssl_args);
} go_plain_write_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_key);
	__type(value, struct ssl_args);
} go_plain_read_scratch SEC(".maps");

static __always_inline __s32 go_fd_sysfd(struct pt_regs *ctx)
{
	__s64 sysfd = -1;
	if (bpf_probe_read_user(&sysfd, sizeof(sysfd), (void *)(AB_GO_RECV(ctx) + AB_GO_FD_SYSFD_OFF)) != 0)
		return -1;
	return (__s32)sysfd;
}

/* (*FD).Write writes all of its buffer or fails (it loops over partial writes and EAGAIN), so
 * the bytes are reported at entry, like crypto/tls's Write; a write held at its start is
 * reported after its release (go_held_writes, keyed by the stream id). */
SEC("uprobe")
int ab_go_plain_write_enter(struct pt_regs *ctx)
{
	__u64 buf = AB_GO_BUF(ctx), len = AB_GO_LEN(ctx);
	if (len == 0)
		return 0;
	__u64 conn = plain_conn(go_fd_sysfd(ctx));
	if (!conn)
		return 0;
	if (!gate_request(conn, (const void *)buf, len, true)) {
		go_emit(conn, AB_DIR_WRITE, buf, len);
		return 0;
	}
	struct go_conn_key ck = {};
	ck.pid = bpf_get_current_pid_tgid() >> 32;
	ck.conn = conn;
	struct ssl_args w = {.ssl = conn, .buf = buf, .len_ptr = len};
	bpf_map_update_elem(&go_held_writes, &ck, &w, BPF_ANY);
	struct go_key k = go_key_of(ctx);
	if (k.g)
		bpf_map_update_elem(&go_plain_write_scratch, &k, &w, BPF_ANY);
	return 0;
}

SEC("uprobe")
int ab_go_plain_write_ret(struct pt_regs *ctx)
{
	struct go_key k = go_key_of(ctx);
	struct ssl_args *p = bpf_map_lookup_elem(&go_plain_write_scratch, &k);
	if (!p)
		return 0; /* not a held write: reported at entry */
	__u64 conn = p->ssl;
	bpf_map_delete_elem(&go_plain_write_scratch, &k);
	go_flush_held_write(conn);
	return 0;
}

SEC("uprobe")
int ab_go_plain_read_enter(struct pt_regs *ctx)
{
	__u64 conn = plain_conn(go_fd_sysfd(ctx));
	struct go_key k = go_key_of(ctx);
	if (!conn || !k.g)
		return 0;
	struct ssl_args a = {.ssl = conn, .buf = AB_GO_BUF(ctx), .len_ptr = AB_GO_LEN(ctx)};
	bpf_map_update_elem(&go_plain_read_scratch, &k, &a, BPF_ANY);
	return 0;
}

SEC("uprobe")
int ab_go_plain_read_ret(struct pt_regs *ctx)
{
	struct go_key k = go_key_of(ctx);
	struct ssl_args *p = bpf_map_lookup_elem(&go_plain_read_scratch, &k);
	if (!p)
		return 0;
	struct ssl_args a = *p;
	bpf_map_delete_elem(&go_plain_read_scratch, &k);
	long n = (long)AB_GO_RET0(ctx);
	if (n <= 0 || (__u64)n > a.len_ptr)
		return 0;
	go_flush_held_write(a.ssl);
	go_emit(a.ssl, AB_DIR_READ, a.buf, (__u64)n);
	return 0;
}

SEC("uprobe")
int ab_go_plain_close_enter(struct pt_regs *ctx)
{
	__s32 fd = go_fd_sysfd(ctx);
	if (fd >= 0)
		plain_closed(fd);
	return 0;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * agentbrake_events.h — the ONE header shared by the BPF programs (the .bpf.c files) and the
 * daemon (daemon/loader, daemon/capture). Fixed-width types only; every record starts with
 * struct ab_event_header. The C++ side static_asserts sizes and offsets
 * (daemon/loader/event_layout_check.cpp), so a change here that is not mirrored there fails
 * the build instead of corrupting decode at run time. Bump AB_EVENT_LAYOUT_VERSION on any
 * layout change.
 */
#ifndef AGENTBRAKE_EVENTS_H
#define AGENTBRAKE_EVENTS_H

#ifdef __BPF__
/* vmlinux.h provides __u8.. __u64 */
#else
#include <linux/types.h>
#endif

#define AB_EVENT_LAYOUT_VERSION 1

#define AB_COMM_LEN 16
#define AB_PATH_LEN 256
#define AB_DNS_NAME_LEN 128
#define AB_DNS_MAX_ADDRS 4

/* One TLS capture chunk carries at most this many plaintext bytes. */
#define AB_CHUNK_MAX 16384

/* Capture cap per SSL call: head half + tail half are kept, the middle is a counted gap. */
#define AB_CALL_CAP_MAX (256 * 1024)
#define AB_CHUNKS_PER_HALF ((AB_CALL_CAP_MAX / 2) / AB_CHUNK_MAX)

enum ab_event_type {
	AB_EV_EXEC = 1,     /* struct ab_proc_event */
	AB_EV_FORK = 2,     /* struct ab_proc_event (pid = child, ppid = parent) */
	AB_EV_EXIT = 3,     /* struct ab_proc_event (thread-group exit only) */
	AB_EV_CONNECT = 4,  /* struct ab_hold_event (reason unused): connect exit, sock inside */
	AB_EV_ACCEPT = 5,   /* struct ab_sock_event */
	AB_EV_CLOSE = 6,    /* struct ab_sock_event (only fds the kernel tracks as LLM sockets) */
	AB_EV_TLS_DATA = 7, /* struct ab_tls_event + data */
	AB_EV_SSL_NEW = 8,  /* struct ab_tls_event (len = 0): a new SSL object, reset stream */
	AB_EV_SSL_FREE = 9, /* struct ab_tls_event (len = 0): stream ends */
	AB_EV_DNS = 10,     /* struct ab_dns_event */
	AB_EV_HOLD = 11,    /* struct ab_hold_event: connect exit at which the kernel stopped the process */
	AB_EV_TLS_GAP = 12, /* struct ab_tls_event (len = 0, lost = bytes not captured) */
	AB_EV_OPAQUE = 13,  /* struct ab_opaque_event: socket-level capture of an opaque process */
	AB_EV_SNI = 14,     /* struct ab_sni_event: the first bytes a candidate socket sent (ClientHello) */
};

enum ab_direction {
	AB_DIR_WRITE = 0, /* plaintext the process sent (requests) */
	AB_DIR_READ = 1,  /* plaintext the process received (responses) */
};

struct ab_event_header {
	__u32 type;      /* enum ab_event_type */
	__u32 pid;       /* thread-group id */
	__u32 tid;       /* thread id */
	__u32 layout;    /* AB_EVENT_LAYOUT_VERSION */
	__u64 ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cgroup_id; /* cgroup v2 id (inode number of the cgroup directory) */
};

struct ab_proc_event {
	struct ab_event_header hdr;
	__u32 ppid;          /* real parent's tgid */
	__u32 exit_code;     /* AB_EV_EXIT: task->exit_code */
	__u64 start_time_ns; /* task->start_boottime (ns); /proc/<pid>/stat field 22 in ticks */
	__u32 uid;
	__u32 _pad;
	char comm[AB_COMM_LEN];
	char filename[AB_PATH_LEN]; /* AB_EV_EXEC: the path exec'd (may be relative) */
};

/* Flags of ab_sock_event.flags */
#define AB_SOCK_KNOWN_ENDPOINT (1u << 0) /* destination is in the endpoints map */
#define AB_SOCK_WATCHED (1u << 1)        /* the process is already watched (probes attached) */
#define AB_SOCK_BUDGET_MATCHED (1u << 2) /* the process is selected by a budget or loop rule */
#define AB_SOCK_HELD (1u << 3)           /* the kernel took a capture hold at this connect */
#define AB_SOCK_FOREGROUND (1u << 4)     /* a hold was wanted but the process is a terminal's
                                          * foreground job (SIGSTOP would reach its shell) */
#define AB_SOCK_OPAQUE (1u << 5)         /* judged "no readable TLS" (watch state OPAQUE, or its
                                          * executable is in the opaque_exes map): not held */

struct ab_sock_event {
	struct ab_event_header hdr;
	__s32 fd;
	__s32 ret;      /* connect()/accept() return value (-EINPROGRESS counts as a connect) */
	__u16 family;   /* AF_INET / AF_INET6 */
	__u16 port;     /* host byte order */
	__u32 flags;    /* AB_SOCK_* */
	__u8 addr[16];  /* IPv4 in the first 4 bytes, or IPv6 */
	char comm[AB_COMM_LEN];
};

/* Flags of ab_tls_event.flags */
#define AB_TLS_TRUNCATED (1u << 0) /* the SSL call was larger than the capture cap */
#define AB_TLS_TAIL (1u << 1)      /* this chunk belongs to the kept tail of a truncated call */

struct ab_tls_event {
	struct ab_event_header hdr;
	__u64 ssl;       /* the SSL* (stream key together with pid) */
	__u64 seq;       /* per-CPU monotonically increasing sequence (ordering across CPUs: ts) */
	__u32 dir;       /* enum ab_direction */
	__u32 flags;     /* AB_TLS_* */
	__u32 call_len;  /* bytes moved by the whole SSL call */
	__u32 offset;    /* offset of this chunk inside the SSL call */
	__u32 len;       /* bytes of data[] that follow */
	__u32 lost;      /* AB_EV_TLS_GAP: bytes of the call not captured (between head and tail) */
	/* AB_EV_TLS_DATA: len bytes of plaintext follow the struct */
};

struct ab_dns_event {
	struct ab_event_header hdr;
	__u32 naddrs;
	__u32 uid; /* the resolving process's real uid (its answer is that uid's word only) */
	char name[AB_DNS_NAME_LEN];
	__u16 family[AB_DNS_MAX_ADDRS];
	__u8 addr[AB_DNS_MAX_ADDRS][16];
};

/* Why the kernel held a process (ab_hold_event.reason, holds map value). */
enum ab_hold_reason {
	AB_HOLD_CAPTURE = 1, /* first connect: held until TLS probes are attached */
	AB_HOLD_BUDGET = 2,  /* request start with no credit (Brake) */
};

struct ab_hold_event {
	struct ab_event_header hdr;
	__u32 reason; /* enum ab_hold_reason */
	__u32 _pad;
	__u64 start_time_ns;
	struct ab_sock_event sock; /* the connect that triggered a capture hold */
};

/* ---- maps shared between kernel and daemon ---------------------------------------------- */

/* endpoints map: key = address + port the daemon knows as an LLM endpoint. */
struct ab_endpoint_key {
	__u16 family;
	__u16 port;     /* host byte order; 0 = any port of this address */
	__u8 addr[16];
};

/* endpoint_hints map: an address a process of `uid` resolved a provider name to (its own
 * getaddrinfo answer), not yet confirmed by the daemon's own resolution of that name. A hint
 * is an endpoint for connects of that uid only (ab_known_endpoint): another user's
 * /etc/hosts never makes an address an endpoint for anyone else (docs/enforcement.md,
 * "What is trusted to find endpoints"). Value: 1. */
struct ab_endpoint_hint_key {
	__u32 uid;
	struct ab_endpoint_key ep;
};

/* endpoints map value: AB_EP_KNOWN, plus AB_EP_PLAIN for an endpoint that speaks plain HTTP
 * (`tls: false`, e.g. Ollama on localhost:11434): its sockets go into plain_socks at connect. */
#define AB_EP_KNOWN (1u << 0)
#define AB_EP_PLAIN (1u << 1)

/* plain_socks map: (pid, fd) of a connect to a plain-HTTP endpoint -> the connection's stream
 * id (the "ssl" of its capture records: AB_PLAIN_CONN_BIT | connect time, never a pointer). */
struct ab_plain_key {
	__u32 pid;
	__s32 fd;
};
#define AB_PLAIN_CONN_BIT (1ull << 63)

/* watch map: pid (tgid) -> state. Written by both sides. */
enum ab_watch_state {
	AB_WATCH_PENDING = 1,  /* kernel saw the first connect and asked for attach (maybe held) */
	AB_WATCH_ATTACHED = 2, /* TLS probes attached */
	AB_WATCH_IGNORED = 3,  /* daemon decided not to watch (no TLS library, mismatch) */
	AB_WATCH_OPAQUE = 4,   /* no readable TLS: counted at the socket (sock.bpf.c), never held
	                        * again at a connect */
};

struct ab_watch_value {
	__u32 state; /* enum ab_watch_state */
	__u32 flags;
	__u64 since_ns;
};

/* holds map (pinned in the state dir so a crashed daemon's holds can be released). */
struct ab_hold_value {
	__u64 start_time_ns; /* identifies the process together with the pid key */
	__u64 since_ns;      /* bpf_ktime_get_ns() when held */
	__u32 reason;        /* enum ab_hold_reason */
	__u32 _pad;
};

/* Per-CPU loss and activity counters (index into the counters map). */
enum ab_counter {
	AB_CNT_RB_RESERVE_FAIL = 0,  /* ring buffer full: a record was dropped */
	AB_CNT_TLS_TRUNCATED = 1,    /* SSL calls larger than the capture cap */
	AB_CNT_TLS_LOST_BYTES = 2,   /* plaintext bytes not captured because of the cap */
	AB_CNT_HOLDS_TAKEN = 3,      /* capture/budget holds taken */
	AB_CNT_HOLDS_SKIPPED_FG = 4, /* not held because the process is a terminal foreground job */
	AB_CNT_HOLDS_NO_RECORD = 5,  /* not held because the ring buffer record could not be reserved */
	AB_CNT_TLS_READ_ERR = 6,     /* bpf_probe_read_user failed on SSL data */
	AB_CNT_DNS_PARSE = 7,        /* getaddrinfo results that could not be read */
	AB_CNT_GATE_PASSED = 8,      /* request starts of gated processes let through on a credit */
	AB_CNT_GATE_HELD = 9,        /* request starts held for lack of a credit (budget holds) */
	AB_CNT_GATE_FG_LATE = 10,    /* request starts without credit not held: terminal foreground */
	AB_CNT_DENIED_CONNECT = 11,  /* connects to endpoints refused with EPERM (deny action) */
	AB_CNT_GATE_H2_UNSYNCED = 12, /* HTTP/2 connections whose frames the gate lost track of (never gated after) */
	AB_CNT_OPAQUE_REQUESTS = 13, /* request starts seen at the socket of opaque processes */
	AB_CNT_OPAQUE_REFUSED = 14,  /* opaque request starts refused (no credit, or denied) */
	AB_CNT_OPAQUE_SOCKETS = 15,  /* sockets of opaque processes put under socket capture */
	AB_CNT_OPAQUE_EXE_SKIPS = 16, /* first connects not held: the executable is known opaque */
	AB_CNT_SNI_REPORTS = 17,     /* first writes of candidate sockets reported (server name) */
	AB_CNT_MAX = 18,
};

/* gate map: pid -> admission state of a process that falls in a gating budget (Brake).
 * The TLS write uprobe sees a request START (HTTP/1: a write beginning with "POST "; HTTP/2:
 * a HEADERS frame opening a new client stream, anywhere in the write) and lets it
 * through while credits > 0, taking one; without a credit the process is held (SIGSTOP,
 * recorded in the holds map) before the bytes leave. The daemon grants credits when every
 * bucket of the process has room. Continuation writes are never gated. */
struct ab_gate {
	__s64 credits;
	__u64 since_ns; /* when the daemon last wrote it */
};

/* opaque_exes map: an executable judged "no readable TLS" (its own code carries a TLS stack
 * agentbrake cannot read, or it is statically linked without one). Key: the file's identity as
 * the kernel sees it; a rewritten file (new mtime) no longer matches. */
struct ab_exe_key {
	__u64 dev; /* super_block s_dev (kernel encoding: major << 20 | minor) */
	__u64 ino;
};

struct ab_exe_value {
	__s64 mtime_sec;
	__u32 mtime_nsec;
	__u32 flags;
};

/* Per-socket state of a connection of an opaque process (BPF sk_storage, sock.bpf.c). */
struct ab_opaque_sock {
	__u64 conn;              /* socket cookie: the connection's key in events */
	__u64 bytes_out;         /* bytes sent (every sendmsg seen by sk_msg) */
	__u64 rcv_at_last_write; /* tcp bytes_received at the previous sendmsg */
	__u64 burst_app;         /* TLS application-data bytes of the current write burst */
	__u64 cgroup_id;
	__u32 pid;
	__u32 requests;          /* request starts seen */
	__u32 burst_counted;     /* the current burst was counted as a request */
	__u32 flags;             /* AB_OPQ_SOCK_* */
	__u32 uid;               /* the connecting process's real uid */
	__u32 _pad;
};
#define AB_OPQ_SOCK_TLS (1u << 0)    /* endpoint speaks TLS: only application-data records count */
#define AB_OPQ_SOCK_OPAQUE (1u << 1) /* its process is opaque: captured (else: judged later) */
#define AB_OPQ_SOCK_CLOSED (1u << 2) /* its close was reported */
#define AB_OPQ_SOCK_SNI (1u << 3)    /* a candidate's connect to an unknown address: its first
                                      * write (a TLS ClientHello names the server) is reported */

/* An opaque request counts once its write burst carries this many application-data bytes:
 * a TLS 1.3 client Finished (58 bytes) or an HTTP/2 WINDOW_UPDATE never does; a request does. */
#define AB_OPQ_REQUEST_MIN_BYTES 128

enum ab_opaque_kind {
	AB_OPQ_REQUEST = 1, /* a request start: a write burst after bytes were received */
	AB_OPQ_REFUSED = 2, /* a request start refused at the socket (no credit, or denied) */
	AB_OPQ_CLOSE = 3,   /* the connection closed (totals) */
};

struct ab_opaque_event {
	struct ab_event_header hdr;
	__u64 conn;      /* socket cookie */
	__u64 bytes_out; /* bytes sent on the connection so far */
	__u64 bytes_in;  /* bytes received on the connection so far (tcp bytes_received) */
	__u32 kind;      /* enum ab_opaque_kind */
	__u32 requests;  /* request starts on the connection so far */
};

/* The first write of a socket that a candidate process (watched, or selected by a budget or
 * loop rule) opened to an address that is no endpoint: at most AB_SNI_CAPTURE bytes of it.
 * The daemon reads the ClientHello's server name (daemon/protocol/client_hello.h); a name of
 * an endpoint makes the address a hint for `uid`, confirmed by the daemon's own look-up. */
#define AB_SNI_CAPTURE 2048
struct ab_sni_event {
	struct ab_event_header hdr;
	__u64 conn;     /* socket cookie */
	__u32 uid;
	__u16 family;
	__u16 port;     /* host byte order */
	__u8 addr[16];
	__u32 len;      /* bytes of data[] captured */
	__u32 _pad;
	__u8 data[AB_SNI_CAPTURE];
};

#endif /* AGENTBRAKE_EVENTS_H */

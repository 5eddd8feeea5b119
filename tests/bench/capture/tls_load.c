// tls_load.c — the OpenSSL workloads of the capture benchmark (run_capture_bench.py).
// Standalone: cc -O2 -o tls_load tls_load.c -lssl -lcrypto -lpthread
//
//   tls_load server PORT CERT KEY echo|sink  TLS server on 127.0.0.1:PORT, one thread per
//                                            connection; echo sends back what it reads, sink
//                                            discards it. Prints "LISTENING" when ready.
//   tls_load bio  [opts]    SSL_write/SSL_read pairs between two SSL objects of this process
//                           over an in-memory BIO pair (client write, server read, server
//                           write, client read = 2 pairs = 4 SSL calls per round trip)
//   tls_load tcp  [opts]    SSL_write + SSL_read (until the echo is back) over loopback TCP
//                           to an echo server (--port)
//   tls_load idle [opts]    plain TCP connect to --connect (the policy's endpoint, so the
//                           daemon watches this process), print READY, sleep until killed
//   tls_load writer [opts]  SSL_write loop of --size bytes to a sink server (--port) for
//                           --seconds; reports bytes written per second
// Options: --size N (bytes per SSL_write, default 64), --iters N | --seconds S (default 1 s),
//   --cert F --key F (bio: the in-process server side), --port P (tcp, writer),
//   --connect PORT (first make a plain TCP connection to 127.0.0.1:PORT and keep it open),
//   --wait (after set-up print READY and wait for a line on stdin before the timed loop).
// Result: one JSON line on stdout.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "tls_load: %s (errno %d: %s)\n", what, errno, strerror(errno));
  ERR_print_errors_fp(stderr);
  exit(2);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// CPU time of this process (user + system: a uprobe hit is system time of the probed task).
// On a loaded machine it is the steadier figure: it does not count time spent runnable.
static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct opts {
  size_t size;
  long iters;
  double seconds;
  const char *cert, *key;
  int port, connect_port, wait;
};

static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void wait_go(const struct opts *o) {
  if (!o->wait) return;
  printf("READY %d\n", (int)getpid());
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) exit(0);
}

static SSL_CTX *server_ctx(const char *cert, const char *key) {
  SSL_CTX *c = SSL_CTX_new(TLS_server_method());
  if (!c) die("SSL_CTX_new");
  if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) die("certificate");
  if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) die("private key");
  return c;
}

static SSL_CTX *client_ctx(void) {
  SSL_CTX *c = SSL_CTX_new(TLS_client_method());
  if (!c) die("SSL_CTX_new");
  SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
  return c;
}

// ---- server ---------------------------------------------------------------------------------
static SSL_CTX *g_srv;
static int g_sink;

static void *serve_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  SSL *s = SSL_new(g_srv);
  SSL_set_fd(s, fd);
  if (SSL_accept(s) == 1) {
    static __thread char buf[1 << 17];
    for (;;) {
      int n = SSL_read(s, buf, sizeof buf);
      if (n <= 0) break;
      if (!g_sink) {
        int off = 0;
        while (off < n) {
          int w = SSL_write(s, buf + off, n - off);
          if (w <= 0) goto out;
          off += w;
        }
      }
    }
  }
out:
  SSL_free(s);
  close(fd);
  return NULL;
}

static int run_server(int port, const char *cert, const char *key, const char *kind) {
  g_srv = server_ctx(cert, key);
  g_sink = strcmp(kind, "sink") == 0;
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
  if (listen(ls, 512) != 0) die("listen");
  printf("LISTENING\n");
  fflush(stdout);
  for (;;) {
    int fd = accept(ls, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, serve_conn, (void *)(intptr_t)fd) != 0) close(fd);
    pthread_attr_destroy(&at);
  }
  return 0;
}

// ---- timed loops ------------------------------------------------------------------------------
// Runs body() until o->iters rounds or o->seconds elapsed; returns rounds and seconds (wall);
// the CPU seconds go to g_cpu.
static double g_cpu;
#define TIMED_LOOP(o, rounds, secs, body)                                   \
  do {                                                                      \
    double c0_ = cpu_s();                                                   \
    double t0_ = now_s(), end_ = t0_ + (o)->seconds;                        \
    rounds = 0;                                                             \
    for (;;) {                                                              \
      body;                                                                 \
      rounds++;                                                             \
      if ((o)->iters > 0) {                                                 \
        if (rounds >= (o)->iters) break;                                    \
      } else if ((rounds & 63) == 0 && now_s() >= end_) {                   \
        break;                                                              \
      }                                                                     \
    }                                                                       \
    secs = now_s() - t0_;                                                   \
    g_cpu = cpu_s() - c0_;                                                  \
  } while (0)

static void read_full(SSL *s, char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    int r = SSL_read(s, buf + got, (int)(n - got));
    if (r <= 0) die("SSL_read");
    got += (size_t)r;
  }
}

static void write_full(SSL *s, const char *buf, size_t n) {
  size_t off = 0;
  while (off < n) {
    int w = SSL_write(s, buf + off, (int)(n - off));
    if (w <= 0) die("SSL_write");
    off += (size_t)w;
  }
}

static void report(const char *mode, const struct opts *o, long rounds, double secs, int calls_per_round) {
  double calls = (double)rounds * calls_per_round;
  printf("{\"mode\":\"%s\",\"pid\":%d,\"size\":%zu,\"rounds\":%ld,\"seconds\":%.6f,\"ssl_calls\":%.0f,"
         "\"ns_per_call\":%.1f,\"ns_per_pair\":%.1f,\"cpu_seconds\":%.6f,\"cpu_ns_per_call\":%.1f,"
         "\"bytes_per_s\":%.0f}\n",
         mode, (int)getpid(), o->size, rounds, secs, calls, secs * 1e9 / calls, secs * 2e9 / calls, g_cpu,
         g_cpu * 1e9 / calls, (double)rounds * o->size / secs);
  fflush(stdout);
}

static int run_bio(const struct opts *o) {
  if (!o->cert || !o->key) die("bio needs --cert and --key");
  SSL_CTX *sc = server_ctx(o->cert, o->key), *cc = client_ctx();
  SSL *srv = SSL_new(sc), *cli = SSL_new(cc);
  BIO *bc, *bs;
  size_t bufsz = o->size + 4096 > 17 * 1024 ? o->size + 4096 : 17 * 1024;
  if (!BIO_new_bio_pair(&bc, bufsz, &bs, bufsz)) die("BIO_new_bio_pair");
  SSL_set_bio(cli, bc, bc);
  SSL_set_bio(srv, bs, bs);
  SSL_set_connect_state(cli);
  SSL_set_accept_state(srv);
  int cdone = 0, sdone = 0;
  for (int i = 0; i < 100 && !(cdone && sdone); i++) {
    if (!cdone) cdone = SSL_do_handshake(cli) == 1;
    if (!sdone) sdone = SSL_do_handshake(srv) == 1;
  }
  if (!(cdone && sdone)) die("BIO handshake");
  char *wbuf = malloc(o->size), *rbuf = malloc(o->size);
  memset(wbuf, 'x', o->size);
  wait_go(o);
  long rounds;
  double secs;
  TIMED_LOOP(o, rounds, secs, {
    if (SSL_write(cli, wbuf, (int)o->size) != (int)o->size) die("client SSL_write");
    int n = SSL_read(srv, rbuf, (int)o->size);
    if (n <= 0) die("server SSL_read");
    if (SSL_write(srv, rbuf, n) != n) die("server SSL_write");
    if (SSL_read(cli, rbuf, (int)o->size) != n) die("client SSL_read");
  });
  report("bio", o, rounds, secs, 4);
  return 0;
}

static SSL *tls_client(int port) {
  int fd = tcp_connect(port);
  SSL *s = SSL_new(client_ctx());
  SSL_set_fd(s, fd);
  SSL_set_tlsext_host_name(s, "localhost");
  if (SSL_connect(s) != 1) die("SSL_connect");
  return s;
}

static int run_tcp(const struct opts *o) {
  SSL *s = tls_client(o->port);
  char *wbuf = malloc(o->size), *rbuf = malloc(o->size);
  memset(wbuf, 'x', o->size);
  wait_go(o);
  long rounds;
  double secs;
  TIMED_LOOP(o, rounds, secs, {
    write_full(s, wbuf, o->size);
    read_full(s, rbuf, o->size);
  });
  report("tcp", o, rounds, secs, 2);
  return 0;
}

static int run_writer(const struct opts *o) {
  SSL *s = tls_client(o->port);
  char *wbuf = malloc(o->size);
  memset(wbuf, 'w', o->size);
  wait_go(o);
  long rounds;
  double secs;
  TIMED_LOOP(o, rounds, secs, { write_full(s, wbuf, o->size); });
  report("writer", o, rounds, secs, 1);
  return 0;
}

static void on_term(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: tls_load server|bio|tcp|idle|writer [options] (see the source)\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_term);
  OPENSSL_init_ssl(0, NULL);
  const char *mode = argv[1];
  if (strcmp(mode, "server") == 0) {
    if (argc < 6) die("server PORT CERT KEY echo|sink");
    return run_server(atoi(argv[2]), argv[3], argv[4], argv[5]);
  }
  struct opts o = {.size = 64, .seconds = 1.0};
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--wait")) { o.wait = 1; continue; }
    if (!v) die("option needs a value");
    i++;
    if (!strcmp(a, "--size")) o.size = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--iters")) o.iters = atol(v);
    else if (!strcmp(a, "--seconds")) o.seconds = atof(v);
    else if (!strcmp(a, "--cert")) o.cert = v;
    else if (!strcmp(a, "--key")) o.key = v;
    else if (!strcmp(a, "--port")) o.port = atoi(v);
    else if (!strcmp(a, "--connect")) o.connect_port = atoi(v);
    else die("unknown option");
  }
  if (o.size == 0) o.size = 1;
  int keep_fd = -1;
  if (o.connect_port) keep_fd = tcp_connect(o.connect_port);  // makes the daemon watch us
  (void)keep_fd;
  if (!strcmp(mode, "idle")) {
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
  }
  if (!strcmp(mode, "bio")) return run_bio(&o);
  if (!strcmp(mode, "tcp")) return run_tcp(&o);
  if (!strcmp(mode, "writer")) return run_writer(&o);
  die("unknown mode");
  return 2;
}

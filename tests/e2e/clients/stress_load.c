// stress_load.c — the loads of tests/e2e/test_stress.py (compiled by the test:
//   cc -O2 -o stress_load stress_load.c -lssl -lcrypto -lpthread).
//
//   stress_load forks --port P --count N [--parallel K] [--tls]
//       N short-lived processes, at most K alive at once (default 32): each child makes one
//       non-blocking TCP connect to 127.0.0.1:P and _exits. With --tls the children have
//       libssl initialised (mapped anyway: this binary links it) — the daemon attaches probes
//       to each. Prints {"forked":N,"exited_ok":M,"failed":F,"seconds":S}.
//   stress_load conns --port P --cafile F --count N [--threads T]
//       N TLS connections to 127.0.0.1:P (the simulator), opened by T threads (default 16;
//       one process), each sends one small chat request and reads its response (keep-alive),
//       then prints {"ready":N,"failed":F,...} and holds them. Each line "round" on stdin sends
//       one more request on every connection (prints {"round":R,"ok":N}); EOF or "close"
//       closes them all and exits.
//   stress_load sink --cert C --key K
//       TLS server on 127.0.0.1 (port chosen by the kernel, printed as {"port":P}), one thread
//       per connection, discards what it reads. Runs until killed.
//   stress_load flood --port P --seconds S [--size B] [--threads T]
//       T threads (default 1), each with one TLS connection to the sink on P: writes a POST
//       head to /v1/chat/completions with a huge Content-Length, then the body in SSL_write
//       calls of B bytes (default 64) for S seconds, as fast as it can.
//       Prints {"writes":W,"bytes":N,"seconds":S,"threads":T} (W: every SSL_write).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "stress_load: %s (errno %d: %s)\n", what, errno, strerror(errno));
  ERR_print_errors_fp(stderr);
  exit(2);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *opt(int argc, char **argv, const char *name, const char *def) {
  for (int i = 2; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

static int flag(int argc, char **argv, const char *name) {
  for (int i = 2; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a = loopback(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// ---- forks ----------------------------------------------------------------------------------
static int run_forks(int port, long count, int parallel, int tls) {
  if (tls) OPENSSL_init_ssl(0, NULL);
  struct sockaddr_in a = loopback(port);
  long forked = 0, ok = 0, failed = 0, alive = 0;
  double t0 = now_s();
  while (forked < count || alive > 0) {
    while (forked < count && alive < parallel) {
      pid_t p = fork();
      if (p < 0) {
        if (errno == EAGAIN) break;
        die("fork");
      }
      if (p == 0) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) _exit(3);
        int r = connect(fd, (struct sockaddr *)&a, sizeof a);
        _exit(r == 0 || errno == EINPROGRESS ? 0 : 4);
      }
      forked++;
      alive++;
    }
    int st;
    pid_t w = waitpid(-1, &st, 0);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) break;
      die("waitpid");
    }
    alive--;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) ok++;
    else failed++;
  }
  printf("{\"forked\":%ld,\"exited_ok\":%ld,\"failed\":%ld,\"seconds\":%.3f}\n", forked, ok, failed,
         now_s() - t0);
  return failed ? 1 : 0;
}

// ---- conns ----------------------------------------------------------------------------------
struct conn {
  int fd;
  SSL *ssl;
};

static const char kBody[] =
    "{\"model\":\"gpt-4o-mini\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"stress\"}]}";

static int request(struct conn *c, const char *tag) {
  char head[512];
  int n = snprintf(head, sizeof head,
                   "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Content-Type: application/json\r\nx-test-client: %s\r\n"
                   "Content-Length: %zu\r\n\r\n%s",
                   tag, sizeof kBody - 1, kBody);
  if (SSL_write(c->ssl, head, n) != n) return -1;
  // the response: head up to the blank line, then Content-Length bytes
  char buf[16384];
  size_t have = 0;
  long want = -1;
  size_t head_end = 0;
  for (;;) {
    int r = SSL_read(c->ssl, buf + have, (int)(sizeof buf - 1 - have));
    if (r <= 0) return -1;
    have += (size_t)r;
    buf[have] = 0;
    if (want < 0) {
      char *e = strstr(buf, "\r\n\r\n");
      if (!e) {
        if (have >= sizeof buf - 1) return -1;
        continue;
      }
      head_end = (size_t)(e - buf) + 4;
      char *cl = strcasestr(buf, "\r\ncontent-length:");
      if (!cl || cl > e) return -1;
      want = strtol(cl + 17, NULL, 10);
      if (strncmp(buf, "HTTP/1.1 200", 12) != 0) return -1;
    }
    if (have - head_end >= (size_t)want) {
      return have - head_end == (size_t)want ? 0 : -1;
    }
    if (have >= sizeof buf - 1) {  // a long body: keep only the count
      size_t body = have - head_end;
      want -= (long)body;
      have = 0;
      head_end = 0;
    }
  }
}

struct conns_slice {
  SSL_CTX *ctx;
  struct conn *cs;
  long from, to;
  int port, open;  // open: connect first
  long ok;
};

static void *conns_worker(void *p) {
  struct conns_slice *sl = p;
  sl->ok = 0;
  for (long i = sl->from; i < sl->to; i++) {
    struct conn *c = &sl->cs[i];
    if (sl->open) {
      c->fd = tcp_connect(sl->port);
      c->ssl = SSL_new(sl->ctx);
      SSL_set_fd(c->ssl, c->fd);
      SSL_set_tlsext_host_name(c->ssl, "localhost");
      if (SSL_connect(c->ssl) != 1) die("SSL_connect");
    }
    sl->ok += request(c, "stress-conns") == 0;
  }
  return NULL;
}

// One request on every connection, by `threads` threads (each its own slice); returns the ok count.
static long conns_pass(SSL_CTX *ctx, struct conn *cs, long count, int port, int open, int threads) {
  struct conns_slice sl[64];
  pthread_t t[64];
  long per = (count + threads - 1) / threads, ok = 0;
  for (int i = 0; i < threads; i++) {
    long from = i * per, to = from + per > count ? count : from + per;
    sl[i] = (struct conns_slice){ctx, cs, from < count ? from : count, to, port, open, 0};
    if (pthread_create(&t[i], NULL, conns_worker, &sl[i]) != 0) die("pthread_create");
  }
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    ok += sl[i].ok;
  }
  return ok;
}

static int run_conns(int port, const char *cafile, long count, int threads) {
  if (threads < 1 || threads > 64) threads = 16;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) die("SSL_CTX_new");
  if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) die("cafile");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
  struct conn *cs = calloc((size_t)count, sizeof *cs);
  if (!cs) die("calloc");
  // the first connect alone (the daemon holds it until the probes are attached), then the rest
  double t0 = now_s();
  long ok = conns_pass(ctx, cs, 1, port, 1, 1);
  ok += conns_pass(ctx, cs + 1, count - 1, port, 1, threads);
  printf("{\"ready\":%ld,\"failed\":%ld,\"seconds\":%.3f}\n", count, count - ok, now_s() - t0);
  fflush(stdout);
  char line[64];
  int round = 0;
  while (fgets(line, sizeof line, stdin)) {
    if (strncmp(line, "round", 5) != 0) break;
    round++;
    t0 = now_s();
    ok = conns_pass(ctx, cs, count, port, 0, threads);
    printf("{\"round\":%d,\"ok\":%ld,\"seconds\":%.3f}\n", round, ok, now_s() - t0);
    fflush(stdout);
  }
  for (long i = 0; i < count; i++) {
    SSL_shutdown(cs[i].ssl);
    SSL_free(cs[i].ssl);
    close(cs[i].fd);
  }
  SSL_CTX_free(ctx);
  free(cs);
  return 0;
}

// ---- sink -----------------------------------------------------------------------------------
static SSL_CTX *g_srv;

static void *sink_conn(void *arg) {
  int fd = (int)(long)arg;
  SSL *s = SSL_new(g_srv);
  SSL_set_fd(s, fd);
  if (SSL_accept(s) == 1) {
    char buf[65536];
    while (SSL_read(s, buf, sizeof buf) > 0) {
    }
  }
  SSL_free(s);
  close(fd);
  return NULL;
}

static int run_sink(const char *cert, const char *key) {
  g_srv = SSL_CTX_new(TLS_server_method());
  if (!g_srv) die("SSL_CTX_new");
  if (SSL_CTX_use_certificate_chain_file(g_srv, cert) != 1) die("certificate");
  if (SSL_CTX_use_PrivateKey_file(g_srv, key, SSL_FILETYPE_PEM) != 1) die("private key");
  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = loopback(0);
  if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 64) != 0) die("bind/listen");
  socklen_t al = sizeof a;
  getsockname(l, (struct sockaddr *)&a, &al);
  printf("{\"port\":%d}\n", ntohs(a.sin_port));
  fflush(stdout);
  for (;;) {
    int fd = accept(l, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    pthread_t t;
    if (pthread_create(&t, NULL, sink_conn, (void *)(long)fd) != 0) die("pthread_create");
    pthread_detach(t);
  }
  return 0;
}

// ---- flood ----------------------------------------------------------------------------------
struct flood_arg {
  int port;
  double end;
  size_t size;
  long writes;
  unsigned long long bytes;
};

static void *flood_thread(void *p) {
  struct flood_arg *a = p;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) die("SSL_CTX_new");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  int fd = tcp_connect(a->port);
  SSL *s = SSL_new(ctx);
  SSL_set_fd(s, fd);
  if (SSL_connect(s) != 1) die("SSL_connect");
  char head[512];
  int n = snprintf(head, sizeof head,
                   "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
                   "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"");
  if (SSL_write(s, head, n) != n) die("SSL_write head");
  char *buf = malloc(a->size);
  if (!buf) die("malloc");
  memset(buf, 'x', a->size);
  a->writes = 1;
  a->bytes = (unsigned long long)n;
  while (now_s() < a->end) {
    for (int i = 0; i < 64; i++) {
      if (SSL_write(s, buf, (int)a->size) != (int)a->size) die("SSL_write");
      a->writes++;
      a->bytes += a->size;
    }
  }
  SSL_free(s);
  close(fd);
  SSL_CTX_free(ctx);
  free(buf);
  return NULL;
}

static int run_flood(int port, double seconds, size_t size, int threads) {
  if (threads < 1 || threads > 64) threads = 1;
  struct flood_arg a[64];
  pthread_t t[64];
  double t0 = now_s();
  for (int i = 0; i < threads; i++) {
    a[i] = (struct flood_arg){port, t0 + seconds, size, 0, 0};
    if (pthread_create(&t[i], NULL, flood_thread, &a[i]) != 0) die("pthread_create");
  }
  long writes = 0;
  unsigned long long bytes = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    writes += a[i].writes;
    bytes += a[i].bytes;
  }
  printf("{\"writes\":%ld,\"bytes\":%llu,\"seconds\":%.3f,\"threads\":%d}\n", writes, bytes,
         now_s() - t0, threads);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: stress_load forks|conns|sink|flood [options]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  const char *mode = argv[1];
  int port = atoi(opt(argc, argv, "--port", "0"));
  if (strcmp(mode, "forks") == 0)
    return run_forks(port, atol(opt(argc, argv, "--count", "1000")), atoi(opt(argc, argv, "--parallel", "32")),
                     flag(argc, argv, "--tls"));
  if (strcmp(mode, "conns") == 0)
    return run_conns(port, opt(argc, argv, "--cafile", ""), atol(opt(argc, argv, "--count", "1000")),
                     atoi(opt(argc, argv, "--threads", "16")));
  if (strcmp(mode, "sink") == 0) return run_sink(opt(argc, argv, "--cert", ""), opt(argc, argv, "--key", ""));
  if (strcmp(mode, "flood") == 0)
    return run_flood(port, atof(opt(argc, argv, "--seconds", "10")), (size_t)atol(opt(argc, argv, "--size", "64")),
                     atoi(opt(argc, argv, "--threads", "1")));
  fprintf(stderr, "stress_load: unknown mode %s\n", mode);
  return 2;
}

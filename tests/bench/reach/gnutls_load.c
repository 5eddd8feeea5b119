// gnutls_load.c — the GnuTLS workload of run_reach_bench.py (cc ... -lgnutls).
// gnutls_load PORT ITERS SIZE: connects to a TLS echo server on 127.0.0.1:PORT (no certificate
// check), prints "READY <pid>", waits for a line on stdin, makes ITERS round trips
// (gnutls_record_send of SIZE bytes, gnutls_record_recv until the echo is back), prints one JSON
// line with the CPU time per round trip.
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *m) { fprintf(stderr, "gnutls_load: %s\n", m); exit(1); }
static double cpu(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 4) die("usage: gnutls_load PORT ITERS SIZE");
  int port = atoi(argv[1]);
  long iters = atol(argv[2]);
  size_t size = (size_t)atol(argv[3]);
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) die("connect");
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  gnutls_certificate_credentials_t cred;
  gnutls_session_t s;
  gnutls_global_init();
  gnutls_certificate_allocate_credentials(&cred);
  gnutls_init(&s, GNUTLS_CLIENT);
  gnutls_set_default_priority(s);
  gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
  gnutls_server_name_set(s, GNUTLS_NAME_DNS, "localhost", 9);
  gnutls_transport_set_int(s, fd);
  int r;
  do r = gnutls_handshake(s); while (r < 0 && !gnutls_error_is_fatal(r));
  if (r < 0) die(gnutls_strerror(r));
  char *msg = malloc(size), *buf = malloc(size);
  memset(msg, 'x', size);
#define ROUND_TRIP()                                                            \
  do {                                                                          \
    if (gnutls_record_send(s, msg, size) != (ssize_t)size) die("send");         \
    size_t got = 0;                                                             \
    while (got < size) {                                                        \
      ssize_t n = gnutls_record_recv(s, buf + got, size - got);                 \
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;           \
      if (n <= 0) die("recv");                                                  \
      got += (size_t)n;                                                         \
    }                                                                           \
  } while (0)
  ROUND_TRIP();
  printf("READY %d\n", (int)getpid());
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) die("stdin");
  double c0 = cpu(), t0 = now();
  for (long i = 0; i < iters; i++) ROUND_TRIP();
  double secs = now() - t0, cs = cpu() - c0;
  printf("{\"mode\":\"gnutls\",\"pid\":%d,\"rounds\":%ld,\"seconds\":%f,\"cpu_seconds\":%f,\"cpu_ns_per_call\":%.1f,"
         "\"ns_per_call\":%.1f}\n", (int)getpid(), iters, secs, cs, cs * 1e9 / iters, secs * 1e9 / iters);
  gnutls_bye(s, GNUTLS_SHUT_RDWR);
  return 0;
}

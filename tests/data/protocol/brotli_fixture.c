/* brotli_fixture.c — writes the br-encoded protocol fixtures from the *.br.plain bodies that
 * make_fixtures.py leaves. Only for regenerating fixtures; not part of the build:
 *   cc brotli_fixture.c -lbrotlienc -o /tmp/bf && /tmp/bf <dir>
 * anthropic_sse_br.resp: chunked SSE, br; openai_chat_br.resp: Content-Length JSON, br. */
#include <brotli/encode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char* slurp(const char* path, size_t* n) {
  FILE* f = fopen(path, "rb");
  if (!f) { perror(path); exit(1); }
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* b = malloc(*n ? *n : 1);
  if (fread(b, 1, *n, f) != *n) exit(1);
  fclose(f);
  return b;
}

static unsigned char* br(const unsigned char* in, size_t n, size_t* out_n) {
  *out_n = BrotliEncoderMaxCompressedSize(n);
  unsigned char* out = malloc(*out_n);
  if (!BrotliEncoderCompress(5, 22, BROTLI_MODE_TEXT, n, in, out_n, out)) exit(1);
  return out;
}

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : ".";
  char path[4096];
  size_t n, cn;
  snprintf(path, sizeof path, "%s/anthropic_sse.br.plain", dir);
  unsigned char* plain = slurp(path, &n);
  unsigned char* c = br(plain, n, &cn);
  snprintf(path, sizeof path, "%s/anthropic_sse_br.resp", dir);
  FILE* f = fopen(path, "wb");
  fputs("HTTP/1.1 200 OK\r\nDate: Sat, 29 Nov 2025 10:00:00 GMT\r\n"
        "Content-Type: text/event-stream; charset=utf-8\r\nContent-Encoding: br\r\n"
        "Transfer-Encoding: chunked\r\n\r\n", f);
  for (size_t i = 0; i < cn; i += 40) {
    size_t k = cn - i < 40 ? cn - i : 40;
    fprintf(f, "%zx\r\n", k);
    fwrite(c + i, 1, k, f);
    fputs("\r\n", f);
  }
  fputs("0\r\n\r\n", f);
  fclose(f);

  snprintf(path, sizeof path, "%s/openai_chat_json.br.plain", dir);
  plain = slurp(path, &n);
  c = br(plain, n, &cn);
  snprintf(path, sizeof path, "%s/openai_chat_br.resp", dir);
  f = fopen(path, "wb");
  fprintf(f, "HTTP/1.1 200 OK\r\nDate: Sat, 29 Nov 2025 10:00:00 GMT\r\n"
             "Content-Type: application/json\r\nContent-Encoding: br\r\nContent-Length: %zu\r\n\r\n", cn);
  fwrite(c, 1, cn, f);
  fclose(f);
  snprintf(path, sizeof path, "%s/anthropic_sse.br.plain", dir);
  remove(path);
  snprintf(path, sizeof path, "%s/openai_chat_json.br.plain", dir);
  remove(path);
  return 0;
}

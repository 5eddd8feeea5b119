// h2sim — an HTTP/2-only LLM provider simulator for the e2e tests (tests/e2e/test_h2.py):
// TLS (OpenSSL, ALPN "h2" only) on 127.0.0.1, HTTP/2 by libnghttp2's server session.
//
// Serves, on any number of concurrent connections and streams:
//   POST /v1/chat/completions  OpenAI Chat Completions; "stream": true answers SSE chunks and,
//                              with stream_options.include_usage, a last chunk with usage
//   POST /v1/messages          Anthropic Messages (JSON, or the SSE event stream)
// Usage is deterministic, as tests/e2e/simulator.py's: input tokens = ceil(characters of the
// messages' text / 4) (at least 1), output tokens = max_tokens (else 16), the text being that
// many "tok " words.
//
// Usage: h2sim --cert PEM --key PEM --log FILE
// First stdout line: {"port": N, "tls": true, "cafile": PEM, "pid": N, "log": FILE}.
// Each request appends a line to FILE.started when its body has been read (client_tag,
// ts_start), and one to FILE when its response was sent: ts, ts_start, path, model, stream,
// status, input_tokens, output_tokens, client_tag (header x-test-client), stream_id, proto.
// Credentials are never logged. Stops on SIGTERM/SIGINT.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

using json = nlohmann::json;

namespace {

std::mutex g_log_mu;
std::string g_log;

double now_s() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return double(tv.tv_sec) + double(tv.tv_usec) / 1e6;
}

void append_line(const std::string& path, const json& j) {
  std::lock_guard<std::mutex> lk(g_log_mu);
  FILE* f = fopen(path.c_str(), "a");
  if (!f) return;
  const std::string s = j.dump() + "\n";
  fwrite(s.data(), 1, s.size(), f);
  fclose(f);
}

struct Stream {
  int32_t id = 0;
  std::string method, path, tag, body;
  std::string out;  // response body
  size_t out_off = 0;
  double ts_start = 0;
  json rec;
};

struct Conn {
  SSL* ssl = nullptr;
  nghttp2_session* session = nullptr;
  std::map<int32_t, std::unique_ptr<Stream>> streams;
  bool failed = false;
};

std::string text_of(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string s;
  if (content.is_array())
    for (auto& part : content)
      if (part.is_object() && part.contains("text") && part["text"].is_string()) s += part["text"].get<std::string>();
  return s;
}

std::string words(int64_t n) {
  std::string s;
  for (int64_t i = 0; i < n; i++) s += "tok ";
  return s;
}

// Builds the response of a finished request (body, status headers, log record).
void answer(Stream& st) {
  json req = json::parse(st.body, nullptr, false);
  std::string model = "unknown";
  bool stream = false, include_usage = false;
  int64_t out_tokens = 16;
  size_t chars = 0;
  if (req.is_object()) {
    if (req.contains("model") && req["model"].is_string()) model = req["model"];
    if (req.contains("stream") && req["stream"].is_boolean()) stream = req["stream"];
    if (req.contains("stream_options") && req["stream_options"].is_object())
      include_usage = req["stream_options"].value("include_usage", false);
    for (const char* k : {"max_tokens", "max_completion_tokens"})
      if (req.contains(k) && req[k].is_number_integer()) out_tokens = req[k];
    if (req.contains("messages") && req["messages"].is_array())
      for (auto& m : req["messages"])
        if (m.is_object() && m.contains("content")) chars += text_of(m["content"]).size();
    if (req.contains("system")) chars += text_of(req["system"]).size();
  }
  const int64_t in_tokens = std::max<int64_t>(1, int64_t(std::ceil(double(chars) / 4)));
  const std::string text = words(out_tokens);
  const bool anthropic = st.path.rfind("/v1/messages", 0) == 0;
  bool usage_sent = true;
  if (!anthropic) {
    json usage = {{"prompt_tokens", in_tokens}, {"completion_tokens", out_tokens},
                  {"total_tokens", in_tokens + out_tokens}};
    if (!stream) {
      json r = {{"id", "chatcmpl-h2sim"}, {"object", "chat.completion"}, {"model", model},
                {"choices", json::array({{{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}},
                                          {"finish_reason", "stop"}}})},
                {"usage", usage}};
      st.out = r.dump();
    } else {
      auto chunk = [&](json delta, json finish) {
        json c = {{"id", "chatcmpl-h2sim"}, {"object", "chat.completion.chunk"}, {"model", model},
                  {"choices", json::array({{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}})}};
        return "data: " + c.dump() + "\n\n";
      };
      st.out += chunk({{"role", "assistant"}, {"content", ""}}, nullptr);
      for (int64_t i = 0; i < out_tokens; i++) st.out += chunk({{"content", "tok "}}, nullptr);
      st.out += chunk(json::object(), "stop");
      if (include_usage) {
        json c = {{"id", "chatcmpl-h2sim"}, {"object", "chat.completion.chunk"}, {"model", model},
                  {"choices", json::array()}, {"usage", usage}};
        st.out += "data: " + c.dump() + "\n\n";
      }
      usage_sent = include_usage;
      st.out += "data: [DONE]\n\n";
    }
  } else {
    json usage = {{"input_tokens", in_tokens}, {"output_tokens", out_tokens}};
    if (!stream) {
      json r = {{"id", "msg_h2sim"}, {"type", "message"}, {"role", "assistant"}, {"model", model},
                {"content", json::array({{{"type", "text"}, {"text", text}}})},
                {"stop_reason", "end_turn"}, {"usage", usage}};
      st.out = r.dump();
    } else {
      auto ev = [&](const char* name, json d) { return std::string("event: ") + name + "\ndata: " + d.dump() + "\n\n"; };
      st.out += ev("message_start", {{"type", "message_start"},
                                     {"message", {{"id", "msg_h2sim"}, {"type", "message"}, {"role", "assistant"},
                                                  {"model", model}, {"content", json::array()},
                                                  {"usage", {{"input_tokens", in_tokens}, {"output_tokens", 1}}}}}});
      st.out += ev("content_block_start", {{"type", "content_block_start"}, {"index", 0},
                                           {"content_block", {{"type", "text"}, {"text", ""}}}});
      for (int64_t i = 0; i < out_tokens; i++)
        st.out += ev("content_block_delta", {{"type", "content_block_delta"}, {"index", 0},
                                             {"delta", {{"type", "text_delta"}, {"text", "tok "}}}});
      st.out += ev("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}});
      st.out += ev("message_delta", {{"type", "message_delta"}, {"delta", {{"stop_reason", "end_turn"}}},
                                     {"usage", {{"output_tokens", out_tokens}}}});
      st.out += ev("message_stop", {{"type", "message_stop"}});
    }
  }
  st.rec = {{"ts_start", st.ts_start}, {"path", st.path}, {"model", model}, {"stream", stream},
            {"status", 200}, {"input_tokens", in_tokens}, {"output_tokens", out_tokens},
            {"usage_sent", usage_sent}, {"client_tag", st.tag.empty() ? json(nullptr) : json(st.tag)},
            {"stream_id", st.id}, {"proto", "h2"}, {"request_bytes", st.body.size()}};
}

ssize_t send_cb(nghttp2_session*, const uint8_t* data, size_t len, int, void* u) {
  auto* c = static_cast<Conn*>(u);
  int n = SSL_write(c->ssl, data, int(len));
  if (n <= 0) {
    c->failed = true;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return n;
}

ssize_t read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                  nghttp2_data_source* src, void*) {
  auto* st = static_cast<Stream*>(src->ptr);
  // small DATA frames, as a streaming server sends them
  size_t n = std::min({len, st->out.size() - st->out_off, size_t(700)});
  memcpy(buf, st->out.data() + st->out_off, n);
  st->out_off += n;
  if (st->out_off == st->out.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return ssize_t(n);
}

int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* u) {
  auto* c = static_cast<Conn*>(u);
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    auto st = std::make_unique<Stream>();
    st->id = f->hd.stream_id;
    c->streams[st->id] = std::move(st);
  }
  return 0;
}

int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
              const uint8_t* value, size_t valuelen, uint8_t, void* u) {
  auto* c = static_cast<Conn*>(u);
  auto it = c->streams.find(f->hd.stream_id);
  if (it == c->streams.end()) return 0;
  std::string k(reinterpret_cast<const char*>(name), namelen), v(reinterpret_cast<const char*>(value), valuelen);
  if (k == ":method") it->second->method = v;
  else if (k == ":path") it->second->path = v;
  else if (k == "x-test-client") it->second->tag = v;
  return 0;
}

int on_data(nghttp2_session*, uint8_t, int32_t sid, const uint8_t* data, size_t len, void* u) {
  auto* c = static_cast<Conn*>(u);
  auto it = c->streams.find(sid);
  if (it != c->streams.end() && it->second->body.size() < (8u << 20))
    it->second->body.append(reinterpret_cast<const char*>(data), len);
  return 0;
}

int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* u) {
  auto* c = static_cast<Conn*>(u);
  if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  auto it = c->streams.find(f->hd.stream_id);
  if (it == c->streams.end()) return 0;
  Stream& st = *it->second;
  st.ts_start = now_s();
  append_line(g_log + ".started", {{"client_tag", st.tag.empty() ? json(nullptr) : json(st.tag)},
                                   {"ts_start", st.ts_start}, {"stream_id", st.id}});
  int status = 200;
  if (st.method != "POST" || (st.path.rfind("/v1/chat/completions", 0) != 0 && st.path.rfind("/v1/messages", 0) != 0)) {
    status = 404;
    st.out = "{\"error\":{\"type\":\"not_found\"}}";
    st.rec = {{"ts_start", st.ts_start}, {"path", st.path}, {"status", 404}, {"input_tokens", 0},
              {"output_tokens", 0}, {"client_tag", st.tag.empty() ? json(nullptr) : json(st.tag)},
              {"stream_id", st.id}, {"proto", "h2"}};
  } else {
    answer(st);
  }
  const bool sse = st.rec.value("stream", false);
  const std::string code = std::to_string(status);
  const std::string ct = sse ? "text/event-stream" : "application/json";
  const std::string len = std::to_string(st.out.size());
  nghttp2_nv hdrs[] = {
      {(uint8_t*)":status", (uint8_t*)code.c_str(), 7, code.size(), NGHTTP2_NV_FLAG_NONE},
      {(uint8_t*)"content-type", (uint8_t*)ct.c_str(), 12, ct.size(), NGHTTP2_NV_FLAG_NONE},
      {(uint8_t*)"content-length", (uint8_t*)len.c_str(), 14, len.size(), NGHTTP2_NV_FLAG_NONE},
  };
  nghttp2_data_provider prd;
  prd.source.ptr = &st;
  prd.read_callback = read_body;
  nghttp2_submit_response(s, st.id, hdrs, 3, &prd);
  return 0;
}

int on_stream_close(nghttp2_session*, int32_t sid, uint32_t err, void* u) {
  auto* c = static_cast<Conn*>(u);
  auto it = c->streams.find(sid);
  if (it == c->streams.end()) return 0;
  Stream& st = *it->second;
  if (!st.rec.is_null()) {
    st.rec["ts"] = now_s();
    st.rec["aborted"] = err != 0 || st.out_off < st.out.size();
    append_line(g_log, st.rec);
  }
  c->streams.erase(it);
  return 0;
}

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  for (unsigned i = 0; i < inlen;) {
    unsigned n = in[i];
    if (n == 2 && i + 3 <= inlen && memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;  // HTTP/2 only: a client that cannot speak it fails
}

void serve(SSL_CTX* ctx, int fd) {
  Conn c;
  c.ssl = SSL_new(ctx);
  SSL_set_fd(c.ssl, fd);
  if (SSL_accept(c.ssl) <= 0) {
    SSL_free(c.ssl);
    close(fd);
    return;
  }
  nghttp2_session_callbacks* cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_server_new(&c.session, cbs, &c);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
  nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, iv, 1);
  uint8_t buf[16384];
  while (!c.failed) {
    if (nghttp2_session_send(c.session) != 0) break;
    if (!nghttp2_session_want_read(c.session) && !nghttp2_session_want_write(c.session)) break;
    int n = SSL_read(c.ssl, buf, sizeof buf);
    if (n <= 0) break;
    if (nghttp2_session_mem_recv(c.session, buf, size_t(n)) < 0) break;
  }
  nghttp2_session_del(c.session);  // streams still open are closed here (logged as aborted)
  SSL_shutdown(c.ssl);
  SSL_free(c.ssl);
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  std::string cert, key;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--cert") cert = argv[i + 1];
    else if (a == "--key") key = argv[i + 1];
    else if (a == "--log") g_log = argv[i + 1];
  }
  if (cert.empty() || key.empty() || g_log.empty()) {
    fprintf(stderr, "usage: h2sim --cert PEM --key PEM --log FILE\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, nullptr);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(ls, 64) != 0) {
    perror("bind/listen");
    return 1;
  }
  socklen_t sl = sizeof sa;
  getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &sl);
  printf("%s\n", json({{"port", ntohs(sa.sin_port)}, {"tls", true}, {"cafile", cert}, {"pid", getpid()},
                       {"log", g_log}, {"proto", "h2"}})
                     .dump()
                     .c_str());
  fflush(stdout);
  for (;;) {
    int fd = accept(ls, nullptr, nullptr);
    if (fd < 0) continue;
    std::thread(serve, ctx, fd).detach();
  }
}

// StreamTable: kernel TLS records → HTTP exchanges per (pid, SSL*); socket_scan parsing.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "capture/socket_scan.h"
#include "capture/stream_table.h"

namespace ab::capture {
namespace {

std::vector<uint8_t> record(uint32_t type, uint32_t pid, uint64_t ssl, uint32_t dir, std::string_view data,
                            uint64_t ts, uint32_t lost = 0) {
  std::vector<uint8_t> buf(sizeof(ab_tls_event) + data.size());
  ab_tls_event ev{};
  ev.hdr.type = type;
  ev.hdr.pid = pid;
  ev.hdr.tid = pid;
  ev.hdr.layout = AB_EVENT_LAYOUT_VERSION;
  ev.hdr.ts_ns = ts;
  ev.ssl = ssl;
  ev.dir = dir;
  ev.len = static_cast<uint32_t>(data.size());
  ev.call_len = ev.len;
  ev.lost = lost;
  std::memcpy(buf.data(), &ev, sizeof ev);
  std::memcpy(buf.data() + sizeof ev, data.data(), data.size());
  return buf;
}

const std::string kBody = R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})";
const std::string kRequest = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
                             "Authorization: Bearer sk-test-secret\r\nContent-Type: application/json\r\n"
                             "Content-Length: " + std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
const std::string kRespBody =
    R"({"id":"x","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}})";
const std::string kResponse = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(kRespBody.size()) + "\r\n\r\n" + kRespBody;

StreamTable table() {
  return StreamTable([](uint32_t) { return protocol::Connection::Options{}; });
}

TEST(StreamTable, OneCallPerStreamAttributedToItsPid) {
  auto t = table();
  for (uint32_t pid : {100u, 200u}) {
    auto a = record(AB_EV_TLS_DATA, pid, 0xabc, AB_DIR_WRITE, kRequest, 1000);
    auto b = record(AB_EV_TLS_DATA, pid, 0xabc, AB_DIR_READ, kResponse, 2000);
    ASSERT_TRUE(t.on_record(a.data(), a.size()));
    ASSERT_TRUE(t.on_record(b.data(), b.size()));
  }
  auto reqs = t.take_requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].ssl, 0xabcu);
  auto ex = t.take_exchanges();
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].pid, 100u);
  EXPECT_EQ(ex[1].pid, 200u);
  for (auto& e : ex) {
    EXPECT_TRUE(e.exchange.is_llm);
    EXPECT_EQ(e.exchange.call.input_tokens, 11);
    EXPECT_EQ(e.exchange.call.output_tokens, 7);
    EXPECT_TRUE(e.exchange.call.complete);
  }
  EXPECT_EQ(t.open_streams(), 2u);
}

TEST(StreamTable, ByteAtATimeWritesReassemble) {
  auto t = table();
  for (size_t i = 0; i < kRequest.size(); i++) {
    auto r = record(AB_EV_TLS_DATA, 7, 1, AB_DIR_WRITE, std::string_view(kRequest).substr(i, 1), 10 + i);
    t.on_record(r.data(), r.size());
  }
  auto b = record(AB_EV_TLS_DATA, 7, 1, AB_DIR_READ, kResponse, 99999);
  t.on_record(b.data(), b.size());
  auto ex = t.take_exchanges();
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].exchange.call.model, "gpt-4o");
}

TEST(StreamTable, SslFreeAndExitCutTheStream) {
  auto t = table();
  auto a = record(AB_EV_TLS_DATA, 5, 9, AB_DIR_WRITE, kRequest, 1);
  t.on_record(a.data(), a.size());
  t.on_process_exit(5, 50);
  auto ex = t.take_exchanges();
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_FALSE(ex[0].exchange.call.complete);
  EXPECT_EQ(t.open_streams(), 0u);
  // a reused SSL pointer after SSL_free starts afresh
  auto b = record(AB_EV_TLS_DATA, 6, 9, AB_DIR_WRITE, "garbage that is not HTTP\r\n", 60);
  t.on_record(b.data(), b.size());
  auto f = record(AB_EV_SSL_FREE, 6, 9, AB_DIR_WRITE, "", 61);
  t.on_record(f.data(), f.size());
  EXPECT_EQ(t.open_streams(), 0u);
  EXPECT_EQ(t.stats().streams_closed, 2u);
}

TEST(StreamTable, MalformedRecordsAreCountedNotParsed) {
  auto t = table();
  std::vector<uint8_t> shortrec(8, 0);
  EXPECT_FALSE(t.on_record(shortrec.data(), shortrec.size()));
  auto r = record(AB_EV_TLS_DATA, 1, 1, AB_DIR_WRITE, "abc", 1);
  EXPECT_FALSE(t.on_record(r.data(), r.size() - 1));  // claims more bytes than it carries
  EXPECT_EQ(t.stats().malformed, 2u);
}

TEST(StreamTable, EvictsTheOldestStreamWhenFull) {
  StreamTable t([](uint32_t) { return protocol::Connection::Options{}; }, 2);
  for (uint64_t ssl = 1; ssl <= 3; ssl++) {
    auto r = record(AB_EV_TLS_DATA, 1, ssl, AB_DIR_WRITE, "POST /x HTTP/1.1\r\n", ssl);
    t.on_record(r.data(), r.size());
  }
  EXPECT_EQ(t.open_streams(), 2u);
  EXPECT_EQ(t.stats().streams_evicted, 1u);
}

TEST(SocketScan, ParsesEstablishedLoopbackConnections) {
  const std::string tcp =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0\n"
      "   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0\n"
      "   2: garbage\n";
  auto conns = parse_proc_net_tcp(tcp, AF_INET);
  ASSERT_EQ(conns.size(), 1u);  // LISTEN (0A) and the garbage line are skipped
  EXPECT_EQ(conns[0].inode, 2222u);
  EXPECT_EQ(conns[0].remote.port, 8080);
  EXPECT_EQ(conns[0].local.port, 0xD431);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, conns[0].remote.addr, buf, sizeof buf);
  EXPECT_STREQ(buf, "127.0.0.1");
}

TEST(SocketScan, UnixSocketpairPeersAreFound) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  struct stat a{}, b{};
  ASSERT_EQ(fstat(sv[0], &a), 0);
  ASSERT_EQ(fstat(sv[1], &b), 0);
  bool found = false;
  for (const auto& [ino, peer] : unix_socket_peers())
    if (ino == a.st_ino && peer == b.st_ino) found = true;
  close(sv[0]);
  close(sv[1]);
  EXPECT_TRUE(found) << "sock_diag did not report the socketpair's peer";
}

TEST(SocketScan, FdInodesNamesThisProcessesPipeAndSocket) {
  int p[2], sv[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  struct stat pst{}, sst{};
  ASSERT_EQ(fstat(p[0], &pst), 0);
  ASSERT_EQ(fstat(sv[0], &sst), 0);
  FdInodes fds = fd_inodes(getpid());
  EXPECT_NE(std::find(fds.pipes.begin(), fds.pipes.end(), pst.st_ino), fds.pipes.end());
  EXPECT_NE(std::find(fds.sockets.begin(), fds.sockets.end(), sst.st_ino), fds.sockets.end());
  EXPECT_TRUE(fd_inodes(0).pipes.empty());  // no such process: empty, not an error
  for (int fd : {p[0], p[1], sv[0], sv[1]}) close(fd);
}

}  // namespace
}  // namespace ab::capture

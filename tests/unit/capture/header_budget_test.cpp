// The overall cap on buffered HTTP header bytes (protocol/header_budget.h): 16,384 streams
// each holding a 64 KiB head under way were gigabytes with no cap; a StreamTable's streams now
// share one budget (64 MiB by default), and a head past it is dropped and counted.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstring>
#include <string>
#include <vector>

#include "capture/stream_table.h"
#include "protocol/connection.h"
#include "protocol/header_budget.h"

namespace ab::capture {
namespace {

std::vector<uint8_t> data_record(uint32_t pid, uint64_t ssl, uint32_t dir, std::string_view data, uint64_t ts) {
  std::vector<uint8_t> buf(sizeof(ab_tls_event) + data.size());
  ab_tls_event ev{};
  ev.hdr.type = AB_EV_TLS_DATA;
  ev.hdr.pid = pid;
  ev.hdr.tid = pid;
  ev.hdr.layout = AB_EVENT_LAYOUT_VERSION;
  ev.hdr.ts_ns = ts;
  ev.ssl = ssl;
  ev.dir = dir;
  ev.len = static_cast<uint32_t>(data.size());
  ev.call_len = ev.len;
  std::memcpy(buf.data(), &ev, sizeof ev);
  std::memcpy(buf.data() + sizeof ev, data.data(), data.size());
  return buf;
}

std::vector<uint8_t> free_record(uint32_t pid, uint64_t ssl, uint64_t ts) {
  std::vector<uint8_t> buf(sizeof(ab_tls_event));
  ab_tls_event ev{};
  ev.hdr.type = AB_EV_SSL_FREE;
  ev.hdr.pid = pid;
  ev.hdr.layout = AB_EVENT_LAYOUT_VERSION;
  ev.hdr.ts_ns = ts;
  ev.ssl = ssl;
  std::memcpy(buf.data(), &ev, sizeof ev);
  return buf;
}

// A request head of ~60 KiB (under the per-stream 64 KiB bound) that never ends, in 4 records.
void feed_endless_head(StreamTable& t, uint32_t pid, uint64_t ssl) {
  const std::string line = "X-Pad: " + std::string(1000, 'a') + "\r\n";
  std::string first = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n";
  for (int r = 0; r < 4; r++) {
    std::string piece = r == 0 ? first : std::string();
    while (piece.size() + line.size() <= 15000) piece += line;
    auto rec = data_record(pid, ssl, AB_DIR_WRITE, piece, 1000 + r);
    ASSERT_TRUE(t.on_record(rec.data(), rec.size()));
  }
}

const std::string kBody = R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})";
const std::string kRequest = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
                             "Content-Type: application/json\r\nContent-Length: " +
                             std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
const std::string kRespBody =
    R"({"id":"x","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}})";
const std::string kResponse = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(kRespBody.size()) + "\r\n\r\n" + kRespBody;

size_t heap_in_use() {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

StreamTable::OptionsFn plain() {
  return [](uint32_t) { return protocol::Connection::Options{}; };
}

// The daemon's table (default bounds) fed 2,000 streams whose heads never end: before the cap
// every one kept its ~64 KiB (≥ 125 MiB in all); now the heap grows by the 64 MiB budget and
// the streams' own small state.
TEST(HeaderBudget, ManyEndlessHeadsStayWithinTheOverallCap) {
  const size_t before = heap_in_use();
  {
    StreamTable t(plain());
    for (uint32_t i = 0; i < 2000; i++) feed_endless_head(t, 1000 + i, 0x10);
    const size_t grown = heap_in_use() - before;
    EXPECT_LT(grown, size_t(80) << 20) << "heap grew by " << (grown >> 20) << " MiB for 2,000 open heads";
    EXPECT_EQ(t.open_streams(), 2000u);
    EXPECT_LE(t.header_budget().used(), protocol::HeaderBudget::kDefaultLimit);
    EXPECT_GT(t.header_budget().refused(), 0u);
  }
}

TEST(HeaderBudget, AStreamPastTheBudgetIsDroppedCountedAndTheBudgetComesBack) {
  StreamTable t(plain(), 16384, 256 * 1024);  // room for about four 60 KiB heads
  for (uint32_t i = 0; i < 8; i++) feed_endless_head(t, 100 + i, 0x20);
  EXPECT_LE(t.header_budget().used(), 256u * 1024);
  EXPECT_GE(t.header_budget().refused(), 4u);
  EXPECT_EQ(t.stats().parse_errors, 0u);  // not malformed: refused (closed streams add theirs)

  // the endless heads end (their streams close): every byte of the budget is given back
  for (uint32_t i = 0; i < 8; i++) {
    auto f = free_record(100 + i, 0x20, 6000);
    ASSERT_TRUE(t.on_record(f.data(), f.size()));
  }
  t.take_exchanges();
  EXPECT_EQ(t.header_budget().used(), 0u);

  // and a call is read whole again
  auto b = data_record(901, 0x40, AB_DIR_WRITE, kRequest, 7000);
  auto c = data_record(901, 0x40, AB_DIR_READ, kResponse, 8000);
  ASSERT_TRUE(t.on_record(b.data(), b.size()));
  ASSERT_TRUE(t.on_record(c.data(), c.size()));
  auto ex = t.take_exchanges();
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_TRUE(ex[0].exchange.is_llm);
  EXPECT_EQ(ex[0].exchange.call.model, "gpt-4o");
  EXPECT_EQ(ex[0].exchange.call.input_tokens, 11);
  EXPECT_EQ(t.header_budget().used(), 0u);  // parsed heads hold nothing
}

TEST(HeaderBudget, ConnectionCountsTheDropAndResynchronizes) {
  protocol::HeaderBudget budget(4096);
  protocol::Connection::Options o;
  o.header_budget = &budget;
  protocol::Connection c(o);
  // a head bigger than the whole budget: refused, counted, not a parse error
  std::string big = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Pad: " +
                    std::string(8000, 'b') + "\r\nContent-Length: 2\r\n\r\n{}";
  c.feed(protocol::Dir::Request, big, 1);
  EXPECT_EQ(c.stats().header_budget_drops, 1u);
  EXPECT_EQ(c.stats().parse_errors, 0u);
  EXPECT_EQ(budget.used(), 0u);
  // parsing resynchronizes as after an oversized head (the line the drop cut into is skipped,
  // here the next request's first line): the request after it is read whole
  c.feed(protocol::Dir::Request, kRequest, 2);
  c.feed(protocol::Dir::Request, kRequest, 3);
  c.feed(protocol::Dir::Response, kResponse, 4);
  auto ex = c.take_exchanges();
  ASSERT_FALSE(ex.empty());
  EXPECT_EQ(ex.back().call.model, "gpt-4o");
  EXPECT_TRUE(ex.back().call.complete);
  EXPECT_EQ(budget.used(), 0u);
}

TEST(HeaderBudget, BudgetedStringChargesItsCapacityAndGivesItBack) {
  protocol::HeaderBudget b(1000);
  {
    protocol::BudgetedString s(&b, 600);
    EXPECT_TRUE(s.append(std::string(100, 'x')));
    EXPECT_GE(b.used(), 100u);
    EXPECT_GE(b.used(), s.str().capacity());
    EXPECT_TRUE(s.append(std::string(400, 'y')));
    EXPECT_GE(b.used(), s.str().capacity());
    protocol::BudgetedString t(&b, 600);
    EXPECT_FALSE(t.append(std::string(600, 'z')));  // no room left
    EXPECT_EQ(b.refused(), 1u);
    EXPECT_TRUE(t.empty());
    s.release();
    EXPECT_EQ(b.used(), 0u);
    EXPECT_TRUE(t.append(std::string(600, 'z')));
  }
  EXPECT_EQ(b.used(), 0u);
  EXPECT_LE(b.peak(), 1000u + 64);  // an allocator rounding may pass the limit by a little
}

}  // namespace
}  // namespace ab::capture

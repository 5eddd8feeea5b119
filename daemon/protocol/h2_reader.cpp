#include "protocol/h2_reader.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>

#include "protocol/strutil.h"
#include "util/redact.h"

namespace ab::protocol {

namespace {

enum : uint8_t {
  kData = 0x0,
  kHeaders = 0x1,
  kPriority = 0x2,
  kRstStream = 0x3,
  kSettings = 0x4,
  kPushPromise = 0x5,
  kPing = 0x6,
  kGoaway = 0x7,
  kWindowUpdate = 0x8,
  kContinuation = 0x9,
};
enum : uint8_t { kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4, kPadded = 0x8, kPriorityFlag = 0x20 };

constexpr size_t kMaxBlock = 256 * 1024;  // = H2Reader::kMaxBlockBytes, each buffer's own bound
constexpr size_t kMaxControl = 16 * 1024;

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

bool keeps_payload(uint8_t type) {
  return type == kHeaders || type == kContinuation || type == kPushPromise || type == kSettings ||
         type == kRstStream || type == kGoaway;
}

}  // namespace

H2Reader::H2Reader(Events& ev, H2Stats& st, HeaderBudget* budget) : ev_(ev), st_(st), c_(budget), s_(budget) {
  if (nghttp2_hd_inflate_new(&c_.inflater) != 0) c_.inflater = nullptr;
  if (nghttp2_hd_inflate_new(&s_.inflater) != 0) s_.inflater = nullptr;
}

H2Reader::~H2Reader() {
  if (c_.inflater) nghttp2_hd_inflate_del(c_.inflater);
  if (s_.inflater) nghttp2_hd_inflate_del(s_.inflater);
}

bool H2Reader::plausible_frame(Side s, std::string_view b) {
  if (b.size() < 9) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(b.data());
  uint32_t len = (uint32_t(p[0]) << 16) | (uint32_t(p[1]) << 8) | p[2];
  uint8_t type = p[3], flags = p[4];
  uint32_t sid_raw = be32(p + 5);
  if (sid_raw & 0x80000000u) return false;  // reserved bit
  uint32_t sid = sid_raw;
  if (len > (1u << 24) - 1) return false;
  switch (type) {
    case kData:
      return sid != 0 && (flags & ~uint8_t(kEndStream | kPadded)) == 0;
    case kHeaders:
      if (s == Side::Client && sid % 2 == 0) return false;
      return sid != 0 && (flags & ~uint8_t(kEndStream | kEndHeaders | kPadded | kPriorityFlag)) == 0;
    case kPriority:
      return sid != 0 && len == 5 && flags == 0;
    case kRstStream:
      return sid != 0 && len == 4 && flags == 0;
    case kSettings:
      return sid == 0 && len % 6 == 0 && (flags & ~uint8_t(kAck)) == 0 && (!(flags & kAck) || len == 0);
    case kPing:
      return sid == 0 && len == 8 && (flags & ~uint8_t(kAck)) == 0;
    case kGoaway:
      return sid == 0 && len >= 8 && flags == 0;
    case kWindowUpdate:
      return len == 4 && flags == 0;
    case kContinuation:
      return sid != 0 && (flags & ~uint8_t(kEndHeaders)) == 0;
    default:
      return false;
  }
}

void H2Reader::desync(uint64_t t) {
  if (st_.desync) return;
  st_.desync = 1;
  c_.payload.release();
  c_.block.release();
  s_.payload.release();
  s_.block.release();
  ev_.h2_desync(t);
}

void H2Reader::budget_refused(uint64_t t) {
  ++st_.header_budget_drops;
  desync(t);
}

void H2Reader::feed(Side s, std::string_view in, uint64_t t) {
  Dir& d = dir(s);
  while (!in.empty()) {
    if (st_.desync) {
      st_.unparsed_bytes += in.size();
      return;
    }
    if (!d.in_payload) {
      size_t n = std::min(in.size(), size_t(9) - d.head_have);
      std::copy_n(reinterpret_cast<const uint8_t*>(in.data()), n, d.head + d.head_have);
      d.head_have += n;
      in.remove_prefix(n);
      if (d.head_have < 9) return;
      d.head_have = 0;
      frame_start(s, d, t);
      if (st_.desync) continue;
      if (d.left == 0) frame_end(s, d, t);
      continue;
    }
    if (d.type == kData) {
      if (d.data_phase == 0) {
        d.pad_left = static_cast<uint8_t>(in[0]);
        in.remove_prefix(1);
        --d.left;
        if (d.pad_left > d.left) {
          ++st_.protocol_errors;  // padding longer than the frame: skip the frame
          d.pad_left = d.left;
        }
        d.data_left = d.left - d.pad_left;
        d.data_phase = 1;
      } else if (d.data_phase == 1 && d.data_left > 0) {
        size_t n = std::min<size_t>(in.size(), d.data_left);
        ev_.h2_data(s, d.stream, in.substr(0, n), t);
        in.remove_prefix(n);
        d.data_left -= uint32_t(n);
        d.left -= uint32_t(n);
      } else {
        size_t n = std::min<size_t>(in.size(), d.left);
        in.remove_prefix(n);
        d.left -= uint32_t(n);
      }
    } else {
      size_t n = std::min<size_t>(in.size(), d.left);
      if (!d.skip && !d.payload.append(in.substr(0, n))) {
        budget_refused(t);  // the rest is counted unparsed at the top of the loop
        continue;
      }
      in.remove_prefix(n);
      d.left -= uint32_t(n);
    }
    if (d.left == 0) frame_end(s, d, t);
  }
}

void H2Reader::frame_start(Side s, Dir& d, uint64_t t) {
  const uint8_t* p = d.head;
  d.len = (uint32_t(p[0]) << 16) | (uint32_t(p[1]) << 8) | p[2];
  d.type = p[3];
  d.flags = p[4];
  d.stream = be32(p + 5) & 0x7fffffffu;
  d.left = d.len;
  d.in_payload = true;
  d.payload.clear();
  d.skip = false;
  ++st_.frames;
  if (d.block_open && d.type != kContinuation) {
    // a header block must be continued by CONTINUATION frames only: the table is lost
    ++st_.protocol_errors;
    desync(t);
    return;
  }
  switch (d.type) {
    case kData:
      ev_.h2_wire_bytes(s, d.stream, 9 + uint64_t(d.len));
      d.data_phase = (d.flags & kPadded) && d.len > 0 ? 0 : 1;
      d.data_left = d.len;
      d.pad_left = 0;
      break;
    case kHeaders:
    case kPushPromise:
    case kContinuation:
      if (d.type == kContinuation && !d.block_open) {
        ++st_.protocol_errors;
        desync(t);
        return;
      }
      if (d.block.size() + d.len > kMaxBlock) {
        ++st_.protocol_errors;  // too big to keep: the dynamic table cannot be followed
        desync(t);
        return;
      }
      if (!d.payload.reserve(d.len)) budget_refused(t);
      break;
    default:
      if (!keeps_payload(d.type) || d.len > kMaxControl) d.skip = true;
      if (d.len > kMaxControl && keeps_payload(d.type)) ++st_.protocol_errors;
      break;
  }
}

void H2Reader::header_fragment(Side s, Dir& d, std::string_view frag, uint64_t t) {
  if (!d.block.append(frag)) {
    budget_refused(t);
    return;
  }
  d.block_wire += 9 + uint64_t(d.len);
  if (!(d.flags & kEndHeaders)) return;
  H2Headers hs;
  const bool ok = inflate(d, hs);
  d.block.release();
  d.block_open = false;
  const uint64_t wire = d.block_wire;
  d.block_wire = 0;
  if (!ok) {
    desync(t);
    return;
  }
  ++st_.header_blocks;
  if (!d.block_push) ev_.h2_headers(s, d.block_stream, std::move(hs), d.block_end_stream, wire, t);
}

bool H2Reader::inflate(Dir& d, H2Headers& out) {
  if (!d.inflater) return false;
  const auto* in = reinterpret_cast<const uint8_t*>(d.block.data());
  size_t inlen = d.block.size();
  for (;;) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t rv = nghttp2_hd_inflate_hd2(d.inflater, &nv, &flags, in, inlen, 1);
    if (rv < 0) return false;
    in += rv;
    inlen -= size_t(rv);
    if (flags & NGHTTP2_HD_INFLATE_EMIT) {
      std::string_view name(reinterpret_cast<const char*>(nv.name), nv.namelen);
      if (!util::is_secret_header(name))
        out.emplace_back(detail::to_lower(name),
                         std::string(reinterpret_cast<const char*>(nv.value), nv.valuelen));
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(d.inflater);
      return true;
    }
    if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && inlen == 0) return false;
  }
}

void H2Reader::frame_end(Side s, Dir& d, uint64_t t) {
  d.in_payload = false;
  const auto* p = reinterpret_cast<const uint8_t*>(d.payload.data());
  const size_t n = d.payload.size();
  switch (d.type) {
    case kData:
      if (d.flags & kEndStream) ev_.h2_end_stream(s, d.stream, t);
      break;
    case kHeaders:
    case kPushPromise: {
      size_t off = 0, pad = 0;
      if (d.flags & kPadded) {
        if (n < 1) { ++st_.protocol_errors; desync(t); return; }
        pad = p[0];
        off = 1;
      }
      if (d.type == kHeaders && (d.flags & kPriorityFlag)) off += 5;
      if (d.type == kPushPromise) off += 4;
      if (off + pad > n) {
        ++st_.protocol_errors;
        desync(t);
        return;
      }
      d.block_open = true;
      d.block_stream = d.stream;
      d.block_push = d.type == kPushPromise;
      d.block_end_stream = d.type == kHeaders && (d.flags & kEndStream);
      d.block.clear();
      d.block_wire = 0;
      header_fragment(s, d, std::string_view(d.payload.str()).substr(off, n - off - pad), t);
      break;
    }
    case kContinuation:
      if (d.stream != d.block_stream) {
        ++st_.protocol_errors;
        desync(t);
        return;
      }
      header_fragment(s, d, d.payload.str(), t);
      break;
    case kSettings:
      if (d.skip || (d.flags & kAck) || n % 6 != 0) break;
      for (size_t i = 0; i + 6 <= n; i += 6) {
        uint16_t id = uint16_t((p[i] << 8) | p[i + 1]);
        uint32_t v = be32(p + i + 2);
        if (id != 0x1) continue;
        // the sender's decoder bounds what the OTHER side's encoder may use
        Dir& other = dir(s == Side::Client ? Side::Server : Side::Client);
        if (!other.inflater || other.block_open ||
            nghttp2_hd_inflate_change_table_size(other.inflater, v) != 0) {
          ++st_.protocol_errors;
          desync(t);
          return;
        }
      }
      break;
    case kRstStream:
      if (d.stream != 0) ev_.h2_reset(d.stream, t);
      break;
    case kGoaway:
      if (!d.skip && n >= 8) ev_.h2_goaway(s, be32(p) & 0x7fffffffu, t);
      break;
    default:
      break;
  }
  d.payload.release();  // an idle connection keeps no buffer (nor budget)
}

void H2Reader::gap(Side s, uint64_t lost, uint64_t t) {
  if (st_.desync) {
    st_.unparsed_bytes += lost;
    return;
  }
  Dir& d = dir(s);
  // Only the payload of a DATA frame can be skipped exactly: anything else may have held a
  // header block (the HPACK table would be lost) or a frame head.
  if (d.in_payload && d.type == kData && d.data_phase == 1 && lost <= d.left) {
    uint64_t in_data = std::min<uint64_t>(lost, d.data_left);
    d.data_left -= uint32_t(in_data);
    d.left -= uint32_t(lost);
    if (lost > in_data) d.pad_left -= uint32_t(lost - in_data);
    ev_.h2_data_gap(s, d.stream, lost, t);
    if (d.left == 0) frame_end(s, d, t);
    return;
  }
  st_.unparsed_bytes += lost;
  desync(t);
}

}  // namespace ab::protocol

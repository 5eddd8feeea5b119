// The server name of a TLS ClientHello (SNI), as the socket capture hands it over.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "protocol/client_hello.h"

using ab::protocol::client_hello_server_name;

namespace {

// A ClientHello from Python's ssl module (OpenSSL 3) for server_hostname="API.OpenAI.com".
const char* kOpenSslHello =
    "1603010200010001fc030352ea7fe196af5fa89d3a27fbb94a21a54148f474f32dde090b84a37cc9f278762020d5484d"
    "6eb1f9bebddc17924d7f07b898adfa25356e9f491d3ec7d6708b9011003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01000175"
    "00000013001100000e4150492e4f70656e41492e636f6d000b000403000102000a00160014001d0017001e0019001801"
    "000101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b0804080508"
    "06040105010601030303010302040205020602002b0009080304030303020301002d00020101003300260024001d0020"
    "607146acc38c3e0e14449580a8fb7061f4a60b08ce4c999b866f034faa76fb5e001500c1000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000";

std::vector<uint8_t> unhex(const std::string& h) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

void put16(std::vector<uint8_t>& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

// A minimal ClientHello whose extensions are `exts` (type, body) in that order.
std::vector<uint8_t> hello(const std::vector<std::pair<uint16_t, std::vector<uint8_t>>>& exts) {
  std::vector<uint8_t> body = {0x03, 0x03};
  body.insert(body.end(), 32, 0xab);   // random
  body.push_back(0);                   // session id
  put16(body, 2);
  body.push_back(0x13);
  body.push_back(0x01);                // one cipher suite
  body.push_back(1);
  body.push_back(0);                   // null compression
  std::vector<uint8_t> e;
  for (const auto& [type, data] : exts) {
    put16(e, type);
    put16(e, data.size());
    e.insert(e.end(), data.begin(), data.end());
  }
  put16(body, e.size());
  body.insert(body.end(), e.begin(), e.end());
  std::vector<uint8_t> hs = {1, 0, static_cast<uint8_t>(body.size() >> 8), static_cast<uint8_t>(body.size())};
  hs.insert(hs.end(), body.begin(), body.end());
  std::vector<uint8_t> rec = {22, 3, 1};
  put16(rec, hs.size());
  rec.insert(rec.end(), hs.begin(), hs.end());
  return rec;
}

std::vector<uint8_t> sni(const std::string& name, uint8_t type = 0) {
  std::vector<uint8_t> d;
  put16(d, name.size() + 3);
  d.push_back(type);
  put16(d, name.size());
  d.insert(d.end(), name.begin(), name.end());
  return d;
}

}  // namespace

TEST(ClientHello, RealOpenSslHelloNamesItsServer) {
  auto b = unhex(kOpenSslHello);
  ASSERT_EQ(b.size(), 517u);
  EXPECT_EQ(client_hello_server_name(b), "api.openai.com");  // lower-case
  // cut anywhere: the whole name or nothing, never a part of it; nothing before the name ends
  const std::string sent = "API.OpenAI.com";
  size_t name_end = 0;
  for (size_t i = 0; i + sent.size() <= b.size(); i++)
    if (std::equal(sent.begin(), sent.end(), b.begin() + static_cast<long>(i))) name_end = i + sent.size();
  ASSERT_GT(name_end, 0u);
  for (size_t n = 0; n < b.size(); n++) {
    auto got = client_hello_server_name(std::span(b.data(), n));
    if (n < name_end) EXPECT_EQ(got, std::nullopt) << n;
    else EXPECT_EQ(got, "api.openai.com") << n;
  }
}

TEST(ClientHello, NameAfterOtherExtensions) {
  auto b = hello({{0x000a, {0, 2, 0, 0x1d}}, {0x0010, {0, 3, 2, 'h', '2'}}, {0, sni("Gw.Example.COM.")}});
  EXPECT_EQ(client_hello_server_name(b), "gw.example.com");
}

TEST(ClientHello, NoNameOrNotAHello) {
  EXPECT_EQ(client_hello_server_name(hello({{0x000a, {0, 2, 0, 0x1d}}})), std::nullopt);
  auto b = hello({{0, sni("api.openai.com")}});
  auto not_handshake = b;
  not_handshake[0] = 23;  // application data
  EXPECT_EQ(client_hello_server_name(not_handshake), std::nullopt);
  auto server_hello = b;
  server_hello[5] = 2;
  EXPECT_EQ(client_hello_server_name(server_hello), std::nullopt);
  EXPECT_EQ(client_hello_server_name(std::vector<uint8_t>{}), std::nullopt);
}

TEST(ClientHello, BadNamesGiveNothing) {
  EXPECT_EQ(client_hello_server_name(hello({{0, sni("")}})), std::nullopt);
  EXPECT_EQ(client_hello_server_name(hello({{0, sni("a b.com")}})), std::nullopt);
  EXPECT_EQ(client_hello_server_name(hello({{0, sni(std::string("a\0b.com", 7))}})), std::nullopt);
  EXPECT_EQ(client_hello_server_name(hello({{0, sni(std::string(300, 'a'))}})), std::nullopt);
  EXPECT_EQ(client_hello_server_name(hello({{0, sni("x.com", 1)}})), std::nullopt);  // not host_name
  // a server_name length beyond its extension
  auto b = hello({{0, sni("api.openai.com")}});
  b[b.size() - 15] = 0x7f;
  EXPECT_EQ(client_hello_server_name(b), std::nullopt);
}

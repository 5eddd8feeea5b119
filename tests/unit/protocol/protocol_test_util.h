// Helpers for the protocol unit tests: fixture loading and feeding strategies.
#pragma once
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "protocol/connection.h"

namespace ab::protocol::test {

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string fixture(const std::string& name) {
  std::string s = read_file(std::string(AB_TEST_DATA) + "/protocol/" + name);
  if (s.empty()) throw std::runtime_error("missing fixture " + name);
  return s;
}

// Feeds `s` in pieces of at most `step` bytes.
inline void feed_steps(Connection& c, Dir d, std::string_view s, size_t step, uint64_t& t) {
  for (size_t i = 0; i < s.size(); i += step) c.feed(d, s.substr(i, step), t += 1000);
}

// One exchange: request then response, each split in two at the given offsets (npos: whole).
inline std::vector<Exchange> run_split(std::string_view req, std::string_view resp,
                                       size_t req_cut = std::string::npos,
                                       size_t resp_cut = std::string::npos,
                                       Connection::Options opt = {}) {
  Connection c(opt);
  uint64_t t = 1'000'000;
  auto feed2 = [&](Dir d, std::string_view s, size_t cut) {
    if (cut >= s.size()) {
      c.feed(d, s, t += 1000);
    } else {
      c.feed(d, s.substr(0, cut), t += 1000);
      c.feed(d, s.substr(cut), t += 1000);
    }
  };
  feed2(Dir::Request, req, req_cut);
  feed2(Dir::Response, resp, resp_cut);
  c.close(t += 1000);
  return c.take_exchanges();
}

inline std::vector<Exchange> run_bytewise(std::string_view req, std::string_view resp) {
  Connection c;
  uint64_t t = 1'000'000;
  feed_steps(c, Dir::Request, req, 1, t);
  feed_steps(c, Dir::Response, resp, 1, t);
  c.close(t += 1000);
  return c.take_exchanges();
}

}  // namespace ab::protocol::test

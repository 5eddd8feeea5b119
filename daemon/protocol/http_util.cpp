#include "protocol/http_util.h"

#include <array>
#include <charconv>
#include <cstring>
#include <ctime>

#include "protocol/strutil.h"

namespace ab::protocol {

bool looks_like_request_line(std::string_view line) {
  static constexpr std::array<std::string_view, 9> kMethods{
      "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"};
  auto sp = line.find(' ');
  if (sp == std::string_view::npos) return false;
  std::string_view m = line.substr(0, sp);
  bool known = false;
  for (auto k : kMethods) known = known || m == k;
  if (!known) return false;
  std::string_view rest = line.substr(sp + 1);
  auto sp2 = rest.rfind(' ');
  if (sp2 == std::string_view::npos || sp2 == 0) return false;
  std::string_view target = rest.substr(0, sp2), ver = rest.substr(sp2 + 1);
  if (ver != "HTTP/1.1" && ver != "HTTP/1.0") return false;
  if (target.find(' ') != std::string_view::npos) return false;
  return target[0] == '/' || target == "*" || target.starts_with("http://") ||
         target.starts_with("https://") || m == "CONNECT";
}

bool looks_like_status_line(std::string_view line) {
  if (line.size() < 12) return false;
  if (!line.starts_with("HTTP/1.")) return false;
  if (line[7] != '0' && line[7] != '1') return false;
  if (line[8] != ' ') return false;
  for (int i = 9; i < 12; ++i)
    if (line[i] < '0' || line[i] > '9') return false;
  return line.size() == 12 || line[12] == ' ';
}

static int month_index(std::string_view m) {
  static constexpr std::array<std::string_view, 12> k{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; ++i)
    if (detail::iequals(m, k[i])) return i;
  return -1;
}

static bool to_int(std::string_view s, int& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size();
}

std::optional<int64_t> parse_http_date(std::string_view s) {
  s = detail::trim(s);
  // split on spaces
  std::string_view f[6];
  int n = 0;
  while (!s.empty() && n < 6) {
    auto sp = s.find(' ');
    std::string_view tok = s.substr(0, sp);
    if (!tok.empty()) f[n++] = tok;
    if (sp == std::string_view::npos) break;
    s.remove_prefix(sp + 1);
  }
  int day = 0, mon = -1, year = 0;
  std::string_view tod;
  if (n >= 5 && f[0].ends_with(',') && f[0].size() == 4) {  // Sun, 06 Nov 1994 08:49:37 GMT
    if (!to_int(f[1], day) || !to_int(f[3], year)) return std::nullopt;
    mon = month_index(f[2]);
    tod = f[4];
  } else if (n >= 3 && f[0].ends_with(',')) {  // Sunday, 06-Nov-94 08:49:37 GMT
    std::string_view d = f[1];
    if (d.size() != 9 || d[2] != '-' || d[6] != '-') return std::nullopt;
    if (!to_int(d.substr(0, 2), day) || !to_int(d.substr(7, 2), year)) return std::nullopt;
    year += year < 70 ? 2000 : 1900;
    mon = month_index(d.substr(3, 3));
    tod = f[2];
  } else if (n >= 5) {  // Sun Nov  6 08:49:37 1994
    mon = month_index(f[1]);
    if (!to_int(f[2], day) || !to_int(f[4], year)) return std::nullopt;
    tod = f[3];
  } else {
    return std::nullopt;
  }
  if (mon < 0 || tod.size() != 8 || tod[2] != ':' || tod[5] != ':') return std::nullopt;
  int hh, mm, ss;
  if (!to_int(tod.substr(0, 2), hh) || !to_int(tod.substr(3, 2), mm) || !to_int(tod.substr(6, 2), ss))
    return std::nullopt;
  if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || year < 1970 || year > 9999)
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon;
  tm.tm_mday = day;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss;
  return int64_t(timegm(&tm));
}

std::optional<double> parse_retry_after(std::string_view value, std::string_view date_header,
                                        int64_t now_unix_s) {
  value = detail::trim(value);
  if (value.empty()) return std::nullopt;
  if ((value[0] >= '0' && value[0] <= '9') || value[0] == '.') {
    double v = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || p != value.data() + value.size() || !(v >= 0) || v > kMaxRetryAfterS)
      return std::nullopt;
    return v;
  }
  auto when = parse_http_date(value);
  if (!when) return std::nullopt;
  int64_t base = now_unix_s;
  if (auto d = parse_http_date(date_header)) base = *d;
  int64_t delta = *when - base;
  if (double(delta) > kMaxRetryAfterS) return std::nullopt;  // as a delay that large is
  return delta > 0 ? double(delta) : 0.0;
}

bool parse_header_lines(std::string_view block, HeaderList& out) {
  bool ok = true;
  while (!block.empty()) {
    auto nl = block.find('\n');
    std::string_view line = block.substr(0, nl);
    block = nl == std::string_view::npos ? std::string_view{} : block.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if ((line[0] == ' ' || line[0] == '\t') && !out.empty()) {  // obsolete line folding
      out.back().second += ' ';
      out.back().second += detail::trim(line);
      continue;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      ok = false;
      continue;
    }
    std::string_view name = line.substr(0, colon);
    if (name.back() == ' ' || name.back() == '\t') {  // whitespace before colon is invalid
      ok = false;
      name = detail::trim(name);
    }
    out.emplace_back(detail::to_lower(name), std::string(detail::trim(line.substr(colon + 1))));
  }
  return ok;
}

}  // namespace ab::protocol

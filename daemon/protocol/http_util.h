// http_util.h — HTTP/1.1 helpers of the protocol module (internal, exposed for tests).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/connection.h"

namespace ab::protocol {

// "METHOD /target HTTP/1.x" (line without CRLF). Known methods only; target origin-form,
// absolute-form, or "*".
bool looks_like_request_line(std::string_view line);
// "HTTP/1.x DDD[ reason]"
bool looks_like_status_line(std::string_view line);

// Seconds from an HTTP-date (IMF-fixdate, RFC 850 or asctime) to the Unix epoch; nullopt if
// it does not parse.
std::optional<int64_t> parse_http_date(std::string_view s);

// retry-after value in seconds: a delay ("120", "1.5") or an HTTP-date, taken relative to the
// response's Date header when given, else to `now_unix_s`. Never negative; nullopt if invalid,
// and for a delay above kMaxRetryAfterS in either form (how long a hold lasts is still bounded
// by max_hold where it is applied).
constexpr double kMaxRetryAfterS = 1e9;
std::optional<double> parse_retry_after(std::string_view value, std::string_view date_header,
                                        int64_t now_unix_s);

// Parses a header block (after the start line) into lower-cased name/value pairs; returns
// false on a malformed line. Secret headers are NOT removed here.
bool parse_header_lines(std::string_view block, HeaderList& out);

}  // namespace ab::protocol

// redact.h — credentials never leave the daemon in the clear. Every rule for spotting and
// hiding a secret lives here; they differ by where the text goes:
//  - is_secret_header: request/response headers that are never kept (Authorization, cookies…)
//  - redact_target: a request target as the daemon keeps it (secret query parameters dropped)
//  - redact_path: a path as the database stores it (credential-looking values → "REDACTED")
//  - scrub_detail: an event detail sent out by an alert (secret keys dropped, queries cut)
//  - redact_webhook_url / redact_url_in: a webhook URL shown anywhere (scheme://host[:port])
// Pure functions (no I/O, no clock).
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ab::util {

// True for header names that carry credentials and are never kept: Authorization,
// Proxy-Authorization, x-api-key, api-key, x-goog-api-key, Cookie, Set-Cookie (any case).
bool is_secret_header(std::string_view name);

// The request target with secret query parameters (key=, api_key=, apikey=, api-key=,
// access_token=, any case) removed; "?" dropped when nothing is left. Parameters are split on
// '&', ';' and a stray '?'; a target without '?' may still carry "&key=…". Fragments dropped.
std::string redact_target(std::string_view target);

// `path` with the values of credential-looking query parameters (a name containing key, token,
// secret, auth, sig, password, passwd, credential, session or cookie, any case) replaced by
// "REDACTED": "/x?API_KEY=1&b=2" → "/x?API_KEY=REDACTED&b=2". A name without '=' is kept.
std::string redact_path(std::string_view path);

// A copy of an event detail with credential-looking keys removed (authorization, cookie,
// api_key, password, secret, access_token, token, ...; at any depth) and the query string
// and fragment cut from every "path"/"url" string.
nlohmann::json scrub_detail(const nlohmann::json& detail);

// A webhook URL's path and query usually ARE the credential (Slack, Teams, Discord put the
// token there), so a webhook is named only by scheme://host[:port]:
// "https://hooks.example.com/T000/B000?x=1" → "https://hooks.example.com";
// "http://user:pw@127.0.0.1:8080/p" → "http://127.0.0.1:8080"; "http://[::1]:9/x" →
// "http://[::1]:9". Scheme and host lower-cased; user info, path, query and fragment never
// appear. Something that does not parse as a URL with a host gives "(invalid url)".
// (Parsed by libcurl: in redact_url.cpp.)
std::string redact_webhook_url(std::string_view url);

// `text` (an error message) with every copy of `url` replaced by redact_webhook_url(url) and
// every copy of its path/query/fragment by "/<redacted>".
std::string redact_url_in(std::string text, const std::string& url);

}  // namespace ab::util

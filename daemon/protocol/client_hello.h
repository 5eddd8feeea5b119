// client_hello.h — the server name (SNI) of a TLS ClientHello, read from the first bytes a
// client sent on a connection (bpf/sock.bpf.c copies them for candidate sockets).
//
// Only what is needed to name the endpoint a connection goes to: one TLS record of type
// handshake (22) holding a ClientHello (1), its extensions walked for server_name (0) with a
// host_name entry. Everything is bounds-checked against the bytes given (a capture may be cut
// short: then there is no name). The name is returned lower-case, without a trailing dot; a
// name that is not a DNS host name (empty, > 253 bytes, characters outside [a-z0-9.-_]) gives
// nothing.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace ab::protocol {

std::optional<std::string> client_hello_server_name(std::span<const uint8_t> bytes);

}  // namespace ab::protocol

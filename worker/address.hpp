// "host:port" listen addresses, for a worker run without inherited sockets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/fd.hpp"
#include "common/host_port.hpp"

namespace clusterd::worker {

/// A parsed "host:port"; an IPv6 host is written in brackets ("[::1]:8080").
using clusterd::HostPort;

/// Parses "host:port" or "[v6]:port"; nullopt when malformed or the port is not 1..65535.
std::optional<HostPort> parse_host_port(std::string_view text);

/// A listening, non-blocking, close-on-exec TCP socket bound to `address` with SO_REUSEADDR.
/// Throws std::system_error naming the call and the address.
UniqueFd bind_listener(const HostPort& address, int backlog);

}  // namespace clusterd::worker

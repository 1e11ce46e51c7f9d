// The one "host:port" parser: listen and metrics addresses in the config, the metrics
// endpoint, and the built-in worker's --listen.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace clusterd {

struct HostPort {
    std::string host;  // without brackets
    std::uint16_t port = 0;
};

/// Splits "host:port" or "[v6]:port" (an IPv6 host must be in brackets). The port is 1..65535
/// (0 too with `allow_port_zero`: any free port). The host is not checked beyond being
/// non-empty; callers that need a numeric one say so. nullopt when malformed, with why in
/// `problem` when given.
std::optional<HostPort> split_host_port(std::string_view text, std::string* problem = nullptr,
                                        bool allow_port_zero = false);

}  // namespace clusterd

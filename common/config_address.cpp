// Listen and metrics addresses as written in the config: "host:port" with a numeric host.
#include <arpa/inet.h>

#include <charconv>

#include "common/config_reader.hpp"

namespace clusterd::detail {

bool parse_host_port(std::string_view text, std::string& host, std::uint16_t& port,
                     std::string& problem) {
    std::string_view host_part;
    std::string_view port_part;
    bool bracketed = text.starts_with("[");
    if (bracketed) {
        auto close = text.find(']');
        if (close == std::string_view::npos || text.substr(close + 1, 1) != ":") {
            problem = "an IPv6 address goes in brackets, followed by :port";
            return false;
        }
        host_part = text.substr(1, close - 1);
        port_part = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            problem = "no :port";
            return false;
        }
        host_part = text.substr(0, colon);
        port_part = text.substr(colon + 1);
        if (host_part.find(':') != std::string_view::npos) {
            problem = "put an IPv6 address in brackets, e.g. [::1]:8080";
            return false;
        }
    }
    if (host_part.empty() || host_part == "*") {
        problem = "the host must be a numeric address; use 0.0.0.0 or [::] for every interface";
        return false;
    }
    int family = bracketed ? AF_INET6 : AF_INET;
    unsigned char bytes[sizeof(in6_addr)];
    std::string host_string(host_part);
    if (inet_pton(family, host_string.c_str(), bytes) != 1) {
        problem = "\"" + host_string + "\" is not a numeric " + (bracketed ? "IPv6" : "IPv4") +
                  " address; host names are not resolved";
        return false;
    }
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port_part.data(), port_part.data() + port_part.size(), value);
    if (port_part.empty() || ec != std::errc{} || end != port_part.data() + port_part.size() ||
        value < 1 || value > 65535) {
        problem = "the port must be from 1 to 65535";
        return false;
    }
    char canonical[INET6_ADDRSTRLEN];
    inet_ntop(family, bytes, canonical, sizeof canonical);
    host = canonical;
    port = static_cast<std::uint16_t>(value);
    return true;
}

}  // namespace clusterd::detail

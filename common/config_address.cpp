// Listen and metrics addresses as written in the config: "host:port" with a numeric host.
#include <arpa/inet.h>

#include "common/config_reader.hpp"
#include "common/host_port.hpp"

namespace clusterd::detail {

bool parse_host_port(std::string_view text, std::string& host, std::uint16_t& port,
                     std::string& problem) {
    auto split = split_host_port(text, &problem);
    if (!split) {
        if (problem == "no host before :port")
            problem = "the host must be a numeric address; use 0.0.0.0 or [::] for every interface";
        return false;
    }
    bool bracketed = text.starts_with("[");
    if (split->host == "*") {
        problem = "the host must be a numeric address; use 0.0.0.0 or [::] for every interface";
        return false;
    }
    int family = bracketed ? AF_INET6 : AF_INET;
    unsigned char bytes[sizeof(in6_addr)];
    const std::string& host_string = split->host;
    if (inet_pton(family, host_string.c_str(), bytes) != 1) {
        problem = "\"" + host_string + "\" is not a numeric " + (bracketed ? "IPv6" : "IPv4") +
                  " address; host names are not resolved";
        return false;
    }
    char canonical[INET6_ADDRSTRLEN];
    inet_ntop(family, bytes, canonical, sizeof canonical);
    host = canonical;
    port = split->port;
    return true;
}

}  // namespace clusterd::detail

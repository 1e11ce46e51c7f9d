#include "common/host_port.hpp"

#include <charconv>

namespace clusterd {

std::optional<HostPort> split_host_port(std::string_view text, std::string* problem,
                                        bool allow_port_zero) {
    auto fail = [&](const char* why) -> std::optional<HostPort> {
        if (problem) *problem = why;
        return std::nullopt;
    };
    std::string_view host;
    std::string_view port;
    if (text.starts_with('[')) {
        auto close = text.find(']');
        if (close == std::string_view::npos || text.substr(close + 1, 1) != ":")
            return fail("an IPv6 address goes in brackets, followed by :port");
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return fail("no :port");
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            return fail("put an IPv6 address in brackets, e.g. [::1]:8080");
    }
    if (host.empty()) return fail("no host before :port");
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535 ||
        (value == 0 && !allow_port_zero))
        return fail("the port must be from 1 to 65535");
    return HostPort{std::string(host), static_cast<std::uint16_t>(value)};
}

}  // namespace clusterd

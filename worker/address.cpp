#include "worker/address.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <memory>
#include <system_error>

namespace clusterd::worker {

std::optional<HostPort> parse_host_port(std::string_view text) {
    HostPort out;
    std::string_view port;
    if (text.starts_with('[')) {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return std::nullopt;
        out.host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        out.host = text.substr(0, colon);
        if (out.host.find(':') != std::string::npos) return std::nullopt;  // v6 needs brackets
        port = text.substr(colon + 1);
    }
    if (out.host.empty()) return std::nullopt;
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535)
        return std::nullopt;
    out.port = static_cast<std::uint16_t>(value);
    return out;
}

UniqueFd bind_listener(const HostPort& address, int backlog) {
    const std::string subject = address.host + ':' + std::to_string(address.port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG;
    addrinfo* found = nullptr;
    int rc =
        ::getaddrinfo(address.host.c_str(), std::to_string(address.port).c_str(), &hints, &found);
    if (rc != 0) {
        throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                                "getaddrinfo(\"" + subject + "\") failed: " + gai_strerror(rc));
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, ::freeaddrinfo);

    int err = 0;
    const char* call = "socket()";
    for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                             ai->ai_protocol));
        if (!fd) {
            err = errno, call = "socket()";
            continue;
        }
        int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno, call = "bind()";
            continue;
        }
        if (::listen(fd.get(), backlog) < 0) {
            err = errno, call = "listen()";
            continue;
        }
        return fd;
    }
    throw std::system_error(err, std::generic_category(),
                            std::string(call) + " failed for \"" + subject + '"');
}

}  // namespace clusterd::worker

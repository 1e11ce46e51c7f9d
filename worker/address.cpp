#include "worker/address.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <memory>
#include <system_error>

namespace clusterd::worker {

std::optional<HostPort> parse_host_port(std::string_view text) {
    return split_host_port(text);  // a host name is resolved when the socket is bound
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

#include "daemon/listeners.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace clusterd {

namespace {

[[noreturn]] void fail(const char* call, const ListenConfig& listen) {
    throw std::system_error(errno, std::system_category(),
                            std::string(call) + "(" + listen.address() + ") failed");
}

}  // namespace

UniqueFd open_listener(const ListenConfig& listen) {
    sockaddr_storage storage{};
    socklen_t len = 0;
    int family = AF_INET;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    if (::inet_pton(AF_INET, listen.host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(listen.port);
        len = sizeof(sockaddr_in);
    } else if (::inet_pton(AF_INET6, listen.host.c_str(), &v6->sin6_addr) == 1) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(listen.port);
        len = sizeof(sockaddr_in6);
    } else {
        errno = EINVAL;
        fail("inet_pton", listen);
    }

    UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) fail("socket", listen);
    int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        fail("setsockopt(SO_REUSEADDR)", listen);
    if (listen.reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        fail("setsockopt(SO_REUSEPORT)", listen);
    if (family == AF_INET6 &&
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        fail("setsockopt(IPV6_V6ONLY)", listen);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), len) < 0) fail("bind", listen);
    if (::listen(fd.get(), listen.backlog) < 0) fail("listen", listen);
    return fd;
}

ProgramListeners::ProgramListeners(const ProgramConfig& program, int slots) {
    per_slot_.resize(static_cast<std::size_t>(slots));
    for (const auto& entry : program.listen) {
        if (!names_.empty()) names_ += ':';
        names_ += entry.name;
        reuseport_.push_back(entry.reuseport);
        if (entry.reuseport) {
            shared_.emplace_back();
            for (auto& row : per_slot_) row.push_back(open_listener(entry));
        } else {
            shared_.push_back(open_listener(entry));
            for (auto& row : per_slot_) row.emplace_back();
        }
    }
}

std::vector<int> ProgramListeners::fds_for(int slot) const {
    std::vector<int> fds;
    const auto& row = per_slot_.at(static_cast<std::size_t>(slot));
    for (std::size_t i = 0; i < reuseport_.size(); ++i)
        fds.push_back(reuseport_[i] ? row[i].get() : shared_[i].get());
    return fds;
}

}  // namespace clusterd

#include "daemon/net/listeners_diag.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/fd.hpp"

namespace clusterd {

namespace {

std::string diag_failed(const std::string& call) {
    return call + " failed: " + std::strerror(errno);
}

bool all_digits(const char* s) {
    if (*s == '\0') return false;
    for (; *s != '\0'; ++s)
        if (*s < '0' || *s > '9') return false;
    return true;
}

// "socket:[12345]" -> 12345
std::optional<std::uint64_t> socket_link(std::string_view link) {
    constexpr std::string_view prefix = "socket:[";
    if (!link.starts_with(prefix) || !link.ends_with(']')) return std::nullopt;
    std::uint64_t inode = 0;
    const char* begin = link.data() + prefix.size();
    const char* end = link.data() + link.size() - 1;
    auto [ptr, ec] = std::from_chars(begin, end, inode);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return inode;
}

}  // namespace

std::uint64_t socket_inode(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) return 0;
    return st.st_ino;
}

std::optional<std::vector<std::uint64_t>> listening_inodes(const ListenConfig& listen,
                                                           std::string& error) {
    in_addr v4{};
    in6_addr v6{};
    int family = AF_INET;
    if (::inet_pton(AF_INET, listen.host.c_str(), &v4) != 1) {
        family = AF_INET6;
        if (::inet_pton(AF_INET6, listen.host.c_str(), &v6) != 1) {
            error = "not an IP address: " + listen.host;
            return std::nullopt;
        }
    }
    UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (!nl) {
        error = diag_failed("socket(NETLINK_SOCK_DIAG)");
        return std::nullopt;
    }
    // The dump is produced inside recv(); the timeout only guards against a kernel that
    // never answers.
    timeval timeout{1, 0};
    ::setsockopt(nl.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

    struct {
        nlmsghdr header;
        inet_diag_req_v2 req;
    } request{};
    request.header.nlmsg_len = sizeof request;
    request.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.req.sdiag_family = static_cast<std::uint8_t>(family);
    request.req.sdiag_protocol = IPPROTO_TCP;
    request.req.idiag_states = 1U << TCP_LISTEN;
    request.req.id.idiag_sport = htons(listen.port);
    request.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    request.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(nl.get(), &request, sizeof request, 0, reinterpret_cast<sockaddr*>(&kernel),
                 sizeof kernel) < 0) {
        error = diag_failed("sendto(NETLINK_SOCK_DIAG)");
        return std::nullopt;
    }

    std::vector<std::uint64_t> inodes;
    const void* address = family == AF_INET ? static_cast<const void*>(&v4) : &v6;
    alignas(nlmsghdr) char buffer[32768];
    for (;;) {
        ssize_t n = ::recv(nl.get(), buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = n < 0 ? diag_failed("recv(NETLINK_SOCK_DIAG)") : "sock_diag dump ended early";
            return std::nullopt;
        }
        switch (parse_diag_reply(buffer, static_cast<std::size_t>(n), family, address, listen.port,
                                 inodes, error)) {
            case DiagStep::more:
                continue;
            case DiagStep::done:
                return inodes;
            case DiagStep::failed:
                return std::nullopt;
        }
    }
}

DiagStep parse_diag_reply(const void* data, std::size_t len, int family, const void* address,
                          std::uint16_t port, std::vector<std::uint64_t>& inodes,
                          std::string& error) {
    const std::size_t address_len = family == AF_INET ? sizeof(in_addr) : sizeof(in6_addr);
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t at = 0, next = 0; at + sizeof(nlmsghdr) <= len; at = next) {
        const auto* h = reinterpret_cast<const nlmsghdr*>(bytes + at);
        if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > len - at) break;
        next = at + NLMSG_ALIGN(h->nlmsg_len);
        if (h->nlmsg_type == NLMSG_DONE) {
            std::sort(inodes.begin(), inodes.end());
            return DiagStep::done;
        }
        if (h->nlmsg_type == NLMSG_ERROR) {
            // The kernel sends -errno; anything else (cut short, not negative) is malformed.
            int code = EPROTO;
            if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr))) {
                int e = static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
                if (e < 0 && e > -4096) code = -e;
            }
            error = std::string("sock_diag dump failed: ") + std::strerror(code);
            return DiagStep::failed;
        }
        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
            h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
            continue;
        const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
        if (m->idiag_family != family || m->idiag_state != TCP_LISTEN ||
            ntohs(m->id.idiag_sport) != port)
            continue;
        if (std::memcmp(m->id.idiag_src, address, address_len) == 0 &&
            inodes.size() < kMaxDiagSockets)
            inodes.push_back(m->idiag_inode);
    }
    return DiagStep::more;
}

SocketHolders socket_holders(const std::vector<std::uint64_t>& inodes, std::size_t max_fds,
                             const std::string& proc) {
    SocketHolders out;
    if (inodes.empty()) return out;
    DIR* procs = ::opendir(proc.c_str());
    if (!procs) return out;
    std::size_t read = 0;
    while (dirent* p = ::readdir(procs)) {
        if (!all_digits(p->d_name)) continue;
        std::string dir = proc + "/" + p->d_name + "/fd";
        DIR* fds = ::opendir(dir.c_str());
        if (!fds) continue;  // gone, or not ours to read
        pid_t pid = 0;
        std::from_chars(p->d_name, p->d_name + std::strlen(p->d_name), pid);
        while (dirent* f = ::readdir(fds)) {
            if (!all_digits(f->d_name)) continue;
            if (++read > max_fds) {
                out.truncated = true;
                break;
            }
            char link[64];
            std::string path = dir + "/" + f->d_name;
            ssize_t len = ::readlink(path.c_str(), link, sizeof link);
            if (len <= 0 || static_cast<std::size_t>(len) >= sizeof link) continue;
            auto inode = socket_link(std::string_view(link, static_cast<std::size_t>(len)));
            if (!inode || !std::binary_search(inodes.begin(), inodes.end(), *inode)) continue;
            auto& pids = out.pids[*inode];
            if (pids.empty() || pids.back() != pid) pids.push_back(pid);
        }
        ::closedir(fds);
        if (out.truncated) break;
    }
    ::closedir(procs);
    return out;
}

}  // namespace clusterd

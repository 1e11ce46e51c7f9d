#include "common/notify.hpp"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace clusterd {

NotifyMessage parse_notify(std::string_view datagram) {
    NotifyMessage msg;
    while (!datagram.empty()) {
        auto nl = datagram.find('\n');
        std::string_view line = datagram.substr(0, nl);
        datagram = nl == std::string_view::npos ? std::string_view{} : datagram.substr(nl + 1);
        auto eq = line.find('=');
        if (eq == std::string_view::npos) continue;
        std::string_view key = line.substr(0, eq);
        std::string_view value = line.substr(eq + 1);
        if (key == "READY") {
            msg.ready = value == "1";
        } else if (key == "WATCHDOG") {
            msg.watchdog = value == "1";
        } else if (key == "STOPPING") {
            msg.stopping = value == "1";
        } else if (key == "RELOADING") {
            msg.reloading = value == "1";
        } else if (key == "STATUS") {
            msg.status_truncated = value.size() > kNotifyMaxStatus;
            msg.status = std::string(value.substr(0, kNotifyMaxStatus));
        } else if (key.starts_with("X_CLUSTERD_") && key.size() > 11) {
            std::string_view name = key.substr(11);
            if (name.size() > kNotifyMaxKey || value.size() > kNotifyMaxValue) {
                ++msg.fields_dropped;
                continue;
            }
            std::string k(name);
            auto it = msg.fields.find(k);
            if (it != msg.fields.end()) {
                it->second = std::string(value);
            } else if (msg.fields.size() < kNotifyMaxFields) {
                msg.fields.emplace(std::move(k), std::string(value));
            } else {
                ++msg.fields_dropped;
            }
        }
    }
    return msg;
}

std::size_t merge_notify_fields(std::map<std::string, std::string>& kept,
                                const std::map<std::string, std::string>& fields, std::size_t max) {
    std::size_t dropped = 0;
    for (const auto& [k, v] : fields) {
        auto it = kept.find(k);
        if (it != kept.end())
            it->second = v;
        else if (kept.size() < max)
            kept.emplace(k, v);
        else
            ++dropped;
    }
    return dropped;
}

int notify_send(std::string_view socket_path, std::string_view message,
                std::chrono::milliseconds wait) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) return EINVAL;
    if (socket_path[0] != '/' && socket_path[0] != '@') return EAFNOSUPPORT;
    std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
    if (socket_path[0] == '@') addr.sun_path[0] = '\0';
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path.size());

    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    int flags = MSG_NOSIGNAL;
    if (wait.count() > 0) {
        timeval tv{};
        tv.tv_sec = static_cast<time_t>(wait.count() / 1000);
        tv.tv_usec = static_cast<suseconds_t>(wait.count() % 1000 * 1000);
        if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) flags |= MSG_DONTWAIT;
    } else {
        flags |= MSG_DONTWAIT;
    }
    ssize_t n = ::sendto(fd, message.data(), message.size(), flags,
                         reinterpret_cast<sockaddr*>(&addr), len);
    while (n < 0 && errno == EINTR)
        n = ::sendto(fd, message.data(), message.size(), flags, reinterpret_cast<sockaddr*>(&addr),
                     len);
    int err = n < 0 ? errno : 0;
    ::close(fd);
    return err;
}

int notify(std::string_view message, std::chrono::milliseconds wait) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || *path == '\0') return 0;
    return notify_send(path, message, wait);
}

}  // namespace clusterd

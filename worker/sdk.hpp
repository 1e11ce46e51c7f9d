// clusterd worker SDK: what a C++ program needs to run as a clusterd (or systemd) worker,
// header-only, plain syscalls, nothing to link. Asio glue is in worker/sdk_asio.hpp.
//
//   auto fds = clusterd::sdk::listen_fds();     // sockets passed as fds 3, 4, ... with names
//   ... start serving on them ...
//   clusterd::sdk::notify_ready();              // READY=1: the master may route to us now
//   every sdk::watchdog_interval(): sdk::notify_watchdog();   // from the event loop itself
//   on SIGTERM: sdk::notify_stopping(), stop accepting, finish requests, exit 0
//
// The protocols are systemd's: sd_listen_fds(3) (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and
// sd_notify(3) (datagrams to $NOTIFY_SOCKET; "@name" is an abstract socket). Every notify call
// is a no-op returning 0 when NOTIFY_SOCKET is unset, so the program also runs by hand.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace clusterd::sdk {

/// Exit code meaning "my configuration is wrong": the master does not restart the slot.
inline constexpr int exit_bad_config = 78;

/// The first inherited descriptor (SD_LISTEN_FDS_START).
inline constexpr int listen_fds_start = 3;

/// One inherited listening socket and the name the config gave it (`listen: - name:`).
struct ListenFd {
    int fd = -1;
    std::string name;
};

namespace detail {

template <class Int>
bool parse_int(std::string_view text, Int& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

inline std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

}  // namespace detail

/// The sockets described by LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES values (nullptr = unset) for
/// process `self`: empty when LISTEN_PID is unset or another pid. Throws std::invalid_argument
/// on malformed values. Touches no descriptor.
inline std::vector<ListenFd> parse_listen_fds(const char* pid_text, const char* fds_text,
                                              const char* names, pid_t self) {
    if (pid_text == nullptr) return {};
    pid_t pid = 0;
    if (!detail::parse_int(std::string_view(pid_text), pid) || pid <= 0)
        throw std::invalid_argument(std::string("LISTEN_PID is not a pid: \"") + pid_text + '"');
    if (pid != self || fds_text == nullptr) return {};
    int n = 0;
    if (!detail::parse_int(std::string_view(fds_text), n) || n < 0 ||
        n > INT_MAX - listen_fds_start)
        throw std::invalid_argument(std::string("LISTEN_FDS is not a count: \"") + fds_text + '"');
    std::vector<std::string> split;
    if (names != nullptr && n > 0) {
        std::string_view rest = names;
        for (;;) {
            auto colon = rest.find(':');
            split.emplace_back(rest.substr(0, colon));
            if (colon == std::string_view::npos) break;
            rest.remove_prefix(colon + 1);
        }
        if (split.size() != static_cast<std::size_t>(n))
            throw std::invalid_argument("LISTEN_FDNAMES has " + std::to_string(split.size()) +
                                        " names for LISTEN_FDS=" + std::to_string(n));
    }
    std::vector<ListenFd> out;
    for (int i = 0; i < n; ++i)
        out.push_back(
            {listen_fds_start + i, split.empty() ? "unknown" : split[static_cast<std::size_t>(i)]});
    return out;
}

/// This process's inherited sockets. Marks them close-on-exec and unsets the three variables
/// (so a child process does not take them too). Throws std::invalid_argument on malformed
/// values or a descriptor that is not open.
inline std::vector<ListenFd> listen_fds() {
    std::string pid = detail::env_or_empty("LISTEN_PID"), fds = detail::env_or_empty("LISTEN_FDS");
    std::string names = detail::env_or_empty("LISTEN_FDNAMES");
    bool has_pid = std::getenv("LISTEN_PID"), has_fds = std::getenv("LISTEN_FDS");
    bool has_names = std::getenv("LISTEN_FDNAMES");
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
    auto out = parse_listen_fds(has_pid ? pid.c_str() : nullptr, has_fds ? fds.c_str() : nullptr,
                                has_names ? names.c_str() : nullptr, ::getpid());
    for (const auto& l : out) {
        int flags = ::fcntl(l.fd, F_GETFD);
        if (flags < 0 || ::fcntl(l.fd, F_SETFD, flags | FD_CLOEXEC) < 0)
            throw std::invalid_argument("inherited fd " + std::to_string(l.fd) + " (\"" + l.name +
                                        "\") is not open");
    }
    return out;
}

/// Sends one sd_notify datagram to `socket_path` ("/path" or "@abstract"). Returns 0 or an
/// errno value; never throws. With `wait_ms` 0 it never blocks; otherwise it waits up to
/// that long for room in the receiver's queue (a unix datagram queue holds only
/// net.unix.max_dgram_qlen messages, 10 by default: with many workers starting at once a
/// READY=1 sent without waiting can be lost).
inline int notify_to(std::string_view socket_path, std::string_view message, int wait_ms = 0) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) return EINVAL;
    if (socket_path[0] != '/' && socket_path[0] != '@') return EAFNOSUPPORT;
    std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
    if (socket_path[0] == '@') addr.sun_path[0] = '\0';
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path.size());
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    int flags = MSG_NOSIGNAL | (wait_ms > 0 ? 0 : MSG_DONTWAIT);
    if (wait_ms > 0) {
        timeval tv{wait_ms / 1000, static_cast<suseconds_t>(wait_ms % 1000) * 1000};
        if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) flags |= MSG_DONTWAIT;
    }
    ssize_t n;
    do {
        n = ::sendto(fd, message.data(), message.size(), flags,
                     reinterpret_cast<const sockaddr*>(&addr), len);
    } while (n < 0 && errno == EINTR);
    int err = n < 0 ? errno : 0;
    ::close(fd);
    return err;
}

/// Sends `message` (newline-separated KEY=VALUE lines) to $NOTIFY_SOCKET; 0 when unset.
inline int notify(std::string_view message, int wait_ms = 0) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || *path == '\0') return 0;
    return notify_to(path, message, wait_ms);
}

/// A figure for the master: name without the X_CLUSTERD_ prefix ("LOOP_LAG_US") and value.
using Field = std::pair<std::string_view, std::int64_t>;

/// "STATUS=<text>\n" with newlines turned into spaces.
inline std::string format_status(std::string_view text) {
    std::string out = "STATUS=";
    for (char c : text) out += c == '\n' ? ' ' : c;
    return out + '\n';
}

/// "WATCHDOG=1\n" then one "X_CLUSTERD_<name>=<value>\n" per field.
inline std::string format_watchdog(const std::vector<Field>& fields = {}) {
    std::string out = "WATCHDOG=1\n";
    for (const auto& [name, value] : fields)
        out += "X_CLUSTERD_" + std::string(name) + "=" + std::to_string(value) + "\n";
    return out;
}

/// READY=1 (plus STATUS= when `status` is given): send once the sockets are being served.
inline int notify_ready(std::string_view status = {}) {
    return notify("READY=1\n" + (status.empty() ? std::string() : format_status(status)), 2000);
}
/// STATUS=<text>: a line the master shows for this worker.
inline int notify_status(std::string_view text) {
    return notify(format_status(text));
}
/// STOPPING=1: a graceful stop has begun.
inline int notify_stopping() {
    return notify("STOPPING=1\n", 2000);
}
/// WATCHDOG=1 with optional figures: the heartbeat; send it from the event loop itself.
inline int notify_watchdog(const std::vector<Field>& fields = {}) {
    return notify(format_watchdog(fields));
}

/// The watchdog timeout from WATCHDOG_USEC/WATCHDOG_PID values (nullptr = unset) for
/// process `self`, as sd_watchdog_enabled(3); nullopt when there is none.
inline std::optional<std::chrono::microseconds> parse_watchdog(const char* usec_text,
                                                               const char* pid_text, pid_t self) {
    std::int64_t usec = 0;
    if (usec_text == nullptr || !detail::parse_int(std::string_view(usec_text), usec) || usec <= 0)
        return std::nullopt;
    if (pid_text != nullptr) {
        pid_t pid = 0;
        if (!detail::parse_int(std::string_view(pid_text), pid) || pid != self) return std::nullopt;
    }
    return std::chrono::microseconds(usec);
}

/// This process's watchdog timeout, or nullopt.
inline std::optional<std::chrono::microseconds> watchdog_timeout() {
    return parse_watchdog(std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID"), ::getpid());
}

/// How often to send WATCHDOG=1: half the timeout; zero when no watchdog is set.
inline std::chrono::microseconds watchdog_interval() {
    auto timeout = watchdog_timeout();
    return timeout ? *timeout / 2 : std::chrono::microseconds(0);
}

/// CLUSTERD_WORKER_ID (the 0-based slot), or -1 when not run by clusterd.
inline int worker_id() {
    int id = -1;
    const char* v = std::getenv("CLUSTERD_WORKER_ID");
    return v && detail::parse_int(std::string_view(v), id) ? id : -1;
}

}  // namespace clusterd::sdk

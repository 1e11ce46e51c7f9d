#include "daemon/net/notify_receiver.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

#include "common/fd.hpp"
#include "daemon/process/config_check.hpp"

namespace clusterd {

namespace asio = boost::asio;

namespace {

std::system_error sys_error(const std::string& what) {
    return std::system_error(errno, std::system_category(), what);
}

}  // namespace

bool read_proc_parent(pid_t pid, pid_t& ppid, pid_t& pgid) {
    char path[32];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd) return false;
    char buf[512];
    ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    if (n <= 0) return false;
    buf[n] = '\0';
    // "pid (comm) state ppid pgrp ...": comm may hold anything, so parse after its last ')'.
    const char* close = std::strrchr(buf, ')');
    char state = 0;
    int parent = 0, group = 0;
    if (close == nullptr || std::sscanf(close + 1, " %c %d %d", &state, &parent, &group) != 3)
        return false;
    ppid = parent;
    pgid = group;
    return true;
}

// ---- WarnLimiter ----

WarnLimiter::Verdict WarnLimiter::allow(Clock::time_point now) {
    Verdict v;
    if (!start_ || now - *start_ >= window_) {
        start_ = now;
        used_ = 0;
        v.suppressed_before = std::exchange(suppressed_, 0);
    }
    if (used_ < burst_) {
        ++used_;
        v.log = true;
    } else {
        ++suppressed_;
    }
    return v;
}

void warn_limited(WarnLimiter& limiter, const std::string& label, const char* kind,
                  const std::string& message, std::uint64_t& suppressed) {
    auto v = limiter.allow(WarnLimiter::Clock::now());
    if (v.suppressed_before > 0)
        spdlog::warn("{}: {} more {} warnings suppressed (at most {} per {}s)", label,
                     v.suppressed_before, kind, kNotifyWarnBurst, kNotifyWarnWindow.count());
    if (v.log)
        spdlog::warn("{}: {}", label, message);
    else
        ++suppressed;
}

// ---- NotifyDir ----

std::string NotifyDir::for_control(const std::string& control_path) {
    std::string dir = notify_dir_for(control_path);
    if (dir.starts_with("/run/clusterd/") && ::mkdir("/run/clusterd", 0755) < 0 && errno != EEXIST)
        throw std::runtime_error(std::string("mkdir(/run/clusterd) failed: ") +
                                 std::strerror(errno));
    return dir;
}

NotifyDir::NotifyDir(std::string path, bool keep_sockets) : path_(std::move(path)) {
    if (path_.size() + 1 + kNotifySocketNameMax >= sizeof(sockaddr_un{}.sun_path))
        throw std::runtime_error(notify_dir_problem(path_));
    uid_t me = ::geteuid();
    if (::mkdir(path_.c_str(), 0711) < 0 && errno != EEXIST)
        throw std::runtime_error("mkdir(" + path_ + ") failed: " + std::strerror(errno));
    // O_NOFOLLOW: a symlink planted at the path is refused, not followed.
    UniqueFd dir(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir)
        throw std::runtime_error(
            "notify socket directory " + path_ + " cannot be opened: " + std::strerror(errno) +
            (errno == ELOOP || errno == ENOTDIR ? " (not a directory; remove it)" : ""));
    struct stat st {};
    if (::fstat(dir.get(), &st) < 0) throw sys_error("fstat(" + path_ + ") failed");
    if (st.st_uid != me)
        throw std::runtime_error("notify socket directory " + path_ + " is owned by uid " +
                                 std::to_string(st.st_uid) + ", not clusterd's uid " +
                                 std::to_string(me) + ": refused; remove it");
    if ((st.st_mode & 07777) != 0711 && ::fchmod(dir.get(), 0711) < 0)
        throw sys_error("fchmod(" + path_ + ", 0711) failed");
    if (keep_sockets) return;
    // A previous run of this daemon (the control socket says none is running now) may have
    // left its sockets behind.
    int fd2 = ::dup(dir.get());
    DIR* d = fd2 < 0 ? nullptr : ::fdopendir(fd2);
    if (d == nullptr) {
        if (fd2 >= 0) ::close(fd2);
        throw sys_error("opendir(" + path_ + ") failed");
    }
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        if (::unlinkat(dir.get(), name.c_str(), 0) < 0)
            spdlog::warn("notify socket directory {}: unlink({}) failed: {}", path_, name,
                         std::strerror(errno));
    }
    ::closedir(d);
}

NotifyDir::~NotifyDir() {
    ::rmdir(path_.c_str());
}

// ---- NotifySocket ----

struct NotifySocket::State : std::enable_shared_from_this<State> {
    State(asio::io_context& io, NotifyCounters& c, Handler h)
        : descriptor(io), counters(c), handler(std::move(h)) {}

    void do_wait() {
        descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                              [self = shared_from_this()](const boost::system::error_code& ec) {
                                  self->on_readable(ec);
                              });
    }

    void on_readable(const boost::system::error_code& ec) {
        if (ec == asio::error::operation_aborted || closed) return;
        if (ec) {
            spdlog::critical("{}: notify socket wait failed: {}", label, ec.message());
            return;
        }
        drain();
        if (!closed) do_wait();
    }

    void drain() {
        // Read first, deliver after: a delivered message may end the worker and this socket.
        std::vector<std::pair<NotifySender, NotifyMessage>> got;
        char buf[kNotifyMaxDatagram + 1];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
        for (int i = 0; i < kNotifyDrainBatch && !closed; ++i) {
            iovec iov{buf, sizeof buf};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            ssize_t n = ::recvmsg(descriptor.native_handle(), &msg,
                                  MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    spdlog::critical("{}: recvmsg() on notify socket {} failed: {}", label, path,
                                     std::strerror(errno));
                break;
            }
            NotifySender sender;
            std::vector<int> passed;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                    ucred cred{};
                    std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
                    sender.pid = cred.pid;
                } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                    auto count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                    for (std::size_t k = 0; k < count; ++k) {
                        int fd;
                        std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
                        passed.push_back(fd);
                    }
                }
            }
            // Who sent it, while it still waits for its fds to close (a barrier).
            if (sender.pid > 0 && sender.pid != main_pid) identify(sender);
            // Nobody may park fds in the master: close any that were sent (this ends a
            // sender's sd_notify_barrier()).
            for (int fd : passed) ::close(fd);
            std::string_view text(buf, std::min(static_cast<std::size_t>(n), sizeof buf));
            if (static_cast<std::size_t>(n) > kNotifyMaxDatagram) {
                ++counters.oversized;
                warn("notify datagram of " + std::to_string(n) + " bytes from pid " +
                     std::to_string(sender.pid) + " dropped (limit " +
                     std::to_string(kNotifyMaxDatagram) + ")");
                continue;
            }
            if (sender.pid <= 0) {
                ++counters.no_credentials;
                if (parse_notify(text).ready)
                    warn("READY=1 dropped: the datagram came without the sender's credentials");
                continue;
            }
            if (sender.pid == main_pid) sender.known = true;
            got.emplace_back(std::move(sender), parse_notify(text));
        }
        auto keep = shared_from_this();  // the handler may destroy the NotifySocket
        for (const auto& [sender, message] : got) {
            if (closed) return;
            handler(sender, message);
        }
    }

    static void identify(NotifySender& sender) {
        pid_t ppid = 0;
        sender.known = read_proc_parent(sender.pid, ppid, sender.pgid);
        for (int depth = 0; sender.known && ppid > 1 && depth < kNotifyAncestors; ++depth) {
            sender.ancestors.push_back(ppid);
            pid_t ignored = 0;
            if (!read_proc_parent(ppid, ppid, ignored)) break;
        }
    }

    void warn(const std::string& message) {
        warn_limited(limiter, label, "notify", message, counters.warnings_suppressed);
    }

    void close() {
        if (closed) return;
        closed = true;
        boost::system::error_code ignored;
        descriptor.close(ignored);
        if (!path.empty()) ::unlink(path.c_str());
        if (limiter.suppressed() > 0)
            spdlog::warn("{}: {} more notify warnings suppressed (at most {} per {}s)", label,
                         limiter.suppressed(), kNotifyWarnBurst, kNotifyWarnWindow.count());
    }

    asio::posix::stream_descriptor descriptor;
    NotifyCounters& counters;
    Handler handler;
    std::string path;
    std::string label;
    WarnLimiter limiter;
    bool closed = false;
    pid_t main_pid = 0;
};

NotifySocket::NotifySocket(asio::io_context& io, const NotifyDir& dir, const std::string& name,
                           std::optional<uid_t> owner, std::optional<gid_t> group,
                           std::string label, NotifyCounters& counters, Handler handler)
    : state_(std::make_shared<State>(io, counters, std::move(handler))) {
    state_->label = std::move(label);
    std::string path = dir.path() + "/" + name;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw std::system_error(ENAMETOOLONG, std::system_category(), "bind(" + path + ") failed");
    UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) throw sys_error("socket(AF_UNIX) failed");
    int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
        throw sys_error("setsockopt(SO_PASSCRED) failed");
    std::memcpy(addr.sun_path, path.data(), path.size());
    // The directory is writable by the daemon's uid only: what is at this name is ours.
    ::unlink(path.c_str());
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0)
        throw sys_error("bind(" + path + ") failed");
    boost::system::error_code ec;
    state_->descriptor.assign(fd.get(), ec);  // registers it with the reactor: may fail
    if (ec) {
        ::unlink(path.c_str());
        throw std::system_error(ec.value(), std::system_category(),
                                "cannot watch the notify socket " + path);
    }
    fd.release();         // the descriptor owns it now
    state_->path = path;  // unlinked from now on when closed
    if (::chmod(path.c_str(), 0600) < 0) {
        auto e = sys_error("chmod(" + path + ", 0600) failed");
        state_->close();
        throw e;
    }
    if ((owner && *owner != ::geteuid()) || group) {
        if (::lchown(path.c_str(), owner ? *owner : static_cast<uid_t>(-1),
                     group ? *group : static_cast<gid_t>(-1)) < 0) {
            auto e = sys_error("chown(" + path + ") failed");
            state_->close();
            throw e;
        }
    }
}

NotifySocket::NotifySocket(asio::io_context& io, int fd, std::string path, std::string label,
                           NotifyCounters& counters, Handler handler)
    : state_(std::make_shared<State>(io, counters, std::move(handler))) {
    state_->label = std::move(label);
    UniqueFd owned(fd);
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        ::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        throw sys_error("fcntl(notify socket " + path + ") failed");
    boost::system::error_code ec;
    state_->descriptor.assign(fd, ec);
    if (ec)
        throw std::system_error(ec.value(), std::system_category(),
                                "cannot watch the notify socket " + path);
    owned.release();
    state_->path = std::move(path);
}

NotifySocket::~NotifySocket() {
    state_->close();
}

const std::string& NotifySocket::path() const {
    return state_->path;
}

int NotifySocket::fd() const {
    return state_->descriptor.native_handle();
}

void NotifySocket::start() {
    state_->do_wait();
}

void NotifySocket::drain() {
    state_->drain();
}

void NotifySocket::warn(const std::string& message) {
    state_->warn(message);
}

void NotifySocket::set_main_pid(pid_t pid) {
    state_->main_pid = pid;
}

}  // namespace clusterd

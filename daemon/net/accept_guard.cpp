#include "daemon/net/accept_guard.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>
#include <cerrno>
#include <cstring>

namespace clusterd {

namespace {

int open_spare() {
    return ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

}  // namespace

AcceptGuard::AcceptGuard(std::string what) : what_(std::move(what)), spare_(open_spare()) {}

bool AcceptGuard::is_shortage(int error) {
    return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

AcceptGuard::Outcome AcceptGuard::shed_one(int listen_fd, int& fd) {
    fd = -1;
    if (!spare_) spare_.reset(open_spare());
    if (!spare_) return Outcome::pause;
    spare_.reset();
    int conn = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    spare_.reset(open_spare());
    if (conn < 0) return Outcome::pause;
    if (spare_) {
        fd = conn;  // the spare came back beside it: there are descriptors again
        return Outcome::accepted;
    }
    ::close(conn);
    ++shed_;
    spare_.reset(open_spare());
    return spare_ ? Outcome::shed : Outcome::pause;
}

void AcceptGuard::note(int error) {
    ++shortages_;
    auto now = std::chrono::steady_clock::now();
    if (last_log_ != std::chrono::steady_clock::time_point{} && now - last_log_ < kLogInterval) {
        ++unlogged_;
        return;
    }
    spdlog::critical(
        "accept() failed on the {}: {}; closing waiting connections until descriptors are free "
        "({} more such failures since the last message)",
        what_, std::strerror(error), unlogged_);
    unlogged_ = 0;
    last_log_ = now;
}

}  // namespace clusterd

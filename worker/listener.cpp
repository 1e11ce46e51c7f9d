#include "worker/listener.hpp"

#include <boost/asio/post.hpp>

#include <fcntl.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace clusterd::worker {

namespace {

// Accepting a bounded number per wakeup keeps one busy listener from starving the
// connections already open on this loop.
constexpr int accept_batch_size = 64;
constexpr auto resource_backoff = std::chrono::milliseconds(100);

int socket_option(int fd, int option, const std::string& subject) {
    int value = 0;
    socklen_t len = sizeof value;
    if (::getsockopt(fd, SOL_SOCKET, option, &value, &len) < 0) {
        throw std::invalid_argument(
            subject + " is not a socket: getsockopt() failed: " + std::strerror(errno));
    }
    return value;
}

}  // namespace

Listener::Listener(boost::asio::io_context& ioc, ListenFd socket, ConnectionHandler on_connection,
                   std::function<void()> on_failed)
    : socket_(ioc),
      backoff_(ioc),
      name_(std::move(socket.name)),
      fd_(socket.fd),
      on_connection_(std::move(on_connection)),
      on_failed_(std::move(on_failed)) {
    const std::string subject = "fd " + std::to_string(fd_) + " (\"" + name_ + "\")";
    if (socket_option(fd_, SO_TYPE, subject) != SOCK_STREAM) {
        throw std::invalid_argument(subject + " is not a stream socket");
    }
    if (socket_option(fd_, SO_ACCEPTCONN, subject) != 1) {
        throw std::invalid_argument(subject + " is not listening");
    }
    family_ = socket_option(fd_, SO_DOMAIN, subject);
    // The file status flags are shared with the master's copy; it never accepts, so
    // non-blocking mode is harmless there.
    int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) < 0) {
        throw std::invalid_argument(subject +
                                    ": fcntl(O_NONBLOCK) failed: " + std::strerror(errno));
    }
    boost::system::error_code ec;
    socket_.assign(fd_, ec);
    if (ec) throw std::invalid_argument(subject + ": " + ec.message());
}

void Listener::start() {
    do_wait();
}

void Listener::close() {
    boost::system::error_code ec;
    backoff_.cancel();
    socket_.close(ec);
}

void Listener::do_wait() {
    if (!socket_.is_open()) return;
    socket_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this](const boost::system::error_code& ec) { on_wait(ec); });
}

void Listener::on_wait(const boost::system::error_code& ec) {
    if (ec == boost::asio::error::operation_aborted || !socket_.is_open()) return;
    if (ec) {
        spdlog::critical("waiting on listener \"{}\" failed: {}", name_, ec.message());
        close();
        on_failed_();
        return;
    }
    accept_batch();
}

void Listener::accept_batch() {
    for (int i = 0; i < accept_batch_size && socket_.is_open(); ++i) {
        int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            warned_ = false;
            on_connection_(fd, family_);
            continue;
        }
        switch (errno) {
            case EAGAIN:
                return do_wait();
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
            case ENETDOWN:
            case ENOPROTOOPT:
            case EHOSTDOWN:
            case ENONET:
            case EHOSTUNREACH:
            case EOPNOTSUPP:
            case ENETUNREACH:
                continue;  // that connection is gone; the next one may be fine
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                if (!warned_) {
                    spdlog::warn("accept4() on \"{}\" failed: {}; pausing accepts", name_,
                                 std::strerror(errno));
                    warned_ = true;
                }
                return do_backoff();
            default:
                spdlog::critical("accept4() on \"{}\" failed: {}", name_, std::strerror(errno));
                close();
                on_failed_();
                return;
        }
    }
    // Batch exhausted with more pending: yield to the loop, then continue.
    if (socket_.is_open()) {
        boost::asio::post(socket_.get_executor(), [this] { accept_batch(); });
    }
}

void Listener::do_backoff() {
    backoff_.expires_after(resource_backoff);
    backoff_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec && socket_.is_open()) accept_batch();
    });
}

}  // namespace clusterd::worker

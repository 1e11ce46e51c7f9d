#include "daemon/notify_receiver.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <cstring>
#include <random>
#include <system_error>

#include "common/fd.hpp"

namespace clusterd {

namespace asio = boost::asio;

namespace {

// sd_notify datagrams are small; systemd reads at most PIPE_BUF bytes too.
constexpr std::size_t kMaxDatagram = 4096;

}  // namespace

struct NotifyReceiver::Impl {
    Impl(asio::io_context& io, Handler h) : descriptor(io), handler(std::move(h)) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) throw std::system_error(errno, std::system_category(), "socket(AF_UNIX) failed");
        int one = 1;
        if (::setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
            throw std::system_error(errno, std::system_category(),
                                    "setsockopt(SO_PASSCRED) failed");
        std::random_device rd;
        address =
            "@clusterd/" + std::to_string(::getpid()) + "/" + std::to_string(rd()) + "/notify";
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, address.data(), address.size());
        addr.sun_path[0] = '\0';
        auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0)
            throw std::system_error(errno, std::system_category(), "bind(" + address + ") failed");
        descriptor.assign(fd.release());
    }

    void do_wait() {
        descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                              [this](const boost::system::error_code& ec) { on_readable(ec); });
    }

    void on_readable(const boost::system::error_code& ec) {
        if (ec == asio::error::operation_aborted || !descriptor.is_open()) return;
        if (ec) {
            spdlog::critical("notify socket wait failed: {}", ec.message());
            return;
        }
        drain();
        do_wait();
    }

    void drain() {
        char buf[kMaxDatagram + 1];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
        for (;;) {
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
                    spdlog::critical("recvmsg() on the notify socket failed: {}",
                                     std::strerror(errno));
                return;
            }
            pid_t sender = 0;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                    ucred cred{};
                    std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
                    sender = cred.pid;
                } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                    // Nobody may park fds in the master: close any that were sent.
                    auto count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                    for (std::size_t i = 0; i < count; ++i) {
                        int fd;
                        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                        ::close(fd);
                    }
                }
            }
            if (static_cast<std::size_t>(n) > kMaxDatagram) {
                spdlog::warn("notify datagram of {} bytes from pid {} ignored (limit {})", n,
                             sender, kMaxDatagram);
                continue;
            }
            if (sender <= 0) continue;  // no credentials: cannot map it to a worker
            handler(sender, parse_notify(std::string_view(buf, static_cast<std::size_t>(n))));
        }
    }

    asio::posix::stream_descriptor descriptor;
    Handler handler;
    std::string address;
};

NotifyReceiver::NotifyReceiver(asio::io_context& io, Handler handler)
    : impl_(std::make_unique<Impl>(io, std::move(handler))) {}

NotifyReceiver::~NotifyReceiver() = default;

const std::string& NotifyReceiver::address() const {
    return impl_->address;
}

void NotifyReceiver::start() {
    impl_->do_wait();
}

void NotifyReceiver::close() {
    boost::system::error_code ignored;
    impl_->descriptor.close(ignored);
}

}  // namespace clusterd

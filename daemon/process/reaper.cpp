#include "daemon/process/reaper.hpp"

#include <sys/wait.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cerrno>
#include <csignal>

namespace clusterd {

namespace asio = boost::asio;

struct Reaper::Impl {
    Impl(asio::io_context& io, Handler h) : signals(io, SIGCHLD), handler(std::move(h)) {}

    void do_wait() {
        signals.async_wait([this](const boost::system::error_code& ec, int) { on_signal(ec); });
    }

    void on_signal(const boost::system::error_code& ec) {
        if (ec == asio::error::operation_aborted) return;
        reap_all();
        do_wait();
    }

    // SIGCHLDs coalesce: one signal may stand for many exits, so reap until none is left.
    void reap_all() {
        for (;;) {
            int status = 0;
            pid_t pid = ::waitpid(-1, &status, WNOHANG);
            if (pid > 0) {
                handler(pid, status);
                continue;
            }
            if (pid < 0 && errno == EINTR) continue;
            return;  // 0: children left but none exited; ECHILD: no children
        }
    }

    asio::signal_set signals;
    Handler handler;
};

Reaper::Reaper(asio::io_context& io, Handler handler)
    : impl_(std::make_unique<Impl>(io, std::move(handler))) {}

Reaper::~Reaper() = default;

void Reaper::start() {
    impl_->reap_all();
    impl_->do_wait();
}

}  // namespace clusterd

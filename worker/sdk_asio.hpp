// clusterd worker SDK, Asio glue (header-only): acceptors for the inherited sockets, the
// heartbeat timer and the graceful-stop signal handler, for a program built on one
// io_context. Boost.Asio by default; define CLUSTERD_SDK_STANDALONE_ASIO to use standalone
// Asio (<asio.hpp>) instead.
//
//   boost::asio::io_context io{1};
//   auto listeners = clusterd::sdk::tcp_listeners(io, clusterd::sdk::listen_fds());
//   clusterd::sdk::Scoreboard board;                // its record, if the master gave one
//   clusterd::sdk::Heartbeat heartbeat(io, clusterd::sdk::watchdog_interval(), &board);
//                                                   // every WATCHDOG_USEC/2: a store in the
//                                                   // record, else WATCHDOG=1
//   clusterd::sdk::GracefulStop stop(io, [&](int) { close the acceptors, heartbeat.stop() });
//   ... async_accept on listeners[i].acceptor ...
//   clusterd::sdk::notify_ready();
//   heartbeat.start();
//   io.run();   // returns once the acceptors are closed and the connections are done
//
// Keep the Heartbeat and GracefulStop objects alive while the loop runs.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "worker/scoreboard.hpp"
#include "worker/sdk.hpp"

#ifdef CLUSTERD_SDK_STANDALONE_ASIO
#include <asio.hpp>
namespace clusterd::sdk {
namespace net = ::asio;
using error_code = ::asio::error_code;
}  // namespace clusterd::sdk
#else
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
namespace clusterd::sdk {
namespace net = boost::asio;
using error_code = boost::system::error_code;
}  // namespace clusterd::sdk
#endif

namespace clusterd::sdk {

/// An inherited TCP listening socket, ready for async_accept.
struct TcpListener {
    std::string name;
    net::ip::tcp::acceptor acceptor;
};

/// Wraps each inherited socket (from listen_fds()) in an acceptor on `io`. Throws
/// std::invalid_argument for a socket that is not TCP over IPv4 or IPv6.
inline std::vector<TcpListener> tcp_listeners(net::io_context& io,
                                              const std::vector<ListenFd>& fds) {
    std::vector<TcpListener> out;
    for (const auto& l : fds) {
        sockaddr_storage addr{};
        socklen_t len = sizeof addr;
        int type = 0;
        socklen_t type_len = sizeof type;
        if (::getsockname(l.fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0 ||
            ::getsockopt(l.fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0 || type != SOCK_STREAM ||
            (addr.ss_family != AF_INET && addr.ss_family != AF_INET6))
            throw std::invalid_argument("inherited fd " + std::to_string(l.fd) + " (\"" + l.name +
                                        "\") is not a TCP socket");
        auto protocol = addr.ss_family == AF_INET ? net::ip::tcp::v4() : net::ip::tcp::v6();
        out.push_back({l.name, net::ip::tcp::acceptor(io, protocol, l.fd)});
    }
    return out;
}

/// The heartbeat from a timer on the loop, so a blocked loop stops it and the master replaces
/// the worker: a store of the time and the loop lag into the worker's scoreboard record when
/// the master gave one (worker/scoreboard.hpp; pass it as `board`), else WATCHDOG=1 with
/// X_CLUSTERD_LOOP_LAG_US (how late the timer ran) to NOTIFY_SOCKET.
class Heartbeat {
  public:
    /// `interval` zero (no WATCHDOG_USEC) makes start() do nothing.
    explicit Heartbeat(net::io_context& io,
                       std::chrono::microseconds interval = watchdog_interval(),
                       Scoreboard* board = nullptr)
        : timer_(io), interval_(interval), board_(board) {}

    /// Sends one heartbeat now and then one every interval.
    void start() {
        if (interval_.count() <= 0) return;
        beat();
        do_wait();
    }
    /// No more heartbeats (a graceful stop: lets io.run() return).
    void stop() { timer_.cancel(); }
    /// How late the last heartbeat timer fired.
    std::chrono::microseconds last_lag() const { return lag_; }
    /// The period, half of WATCHDOG_USEC by default.
    std::chrono::microseconds interval() const { return interval_; }

  private:
    void do_wait() {
        timer_.expires_after(interval_);
        timer_.async_wait([this](const error_code& ec) { on_wait(ec); });
    }
    void on_wait(const error_code& ec) {
        if (ec) return;
        auto late = std::chrono::steady_clock::now() - timer_.expiry();
        lag_ = std::max(std::chrono::microseconds(0),
                        std::chrono::duration_cast<std::chrono::microseconds>(late));
        beat();
        do_wait();
    }
    void beat() {
        if (board_ != nullptr && board_->attached()) {
            board_->alive();
            board_->loop_lag(static_cast<std::uint64_t>(lag_.count()));
        } else {
            notify_watchdog({{"LOOP_LAG_US", lag_.count()}});
        }
    }

    net::steady_timer timer_;
    std::chrono::microseconds interval_;
    Scoreboard* board_;
    std::chrono::microseconds lag_{0};
};

/// SIGTERM/SIGINT handling: the first one sends STOPPING=1 and calls `on_stop(signal)` on the
/// loop, where the program stops accepting and lets its connections finish, so that io.run()
/// returns. Later signals stay caught and ignored (under clusterd, KILL after stop_timeout is
/// the bound). Nothing runs in signal context.
class GracefulStop {
  public:
    GracefulStop(net::io_context& io, std::function<void(int sig)> on_stop)
        : signals_(io, SIGTERM, SIGINT), on_stop_(std::move(on_stop)) {
        signals_.async_wait([this](const error_code& ec, int sig) {
            if (ec) return;
            stopping_ = true;
            notify_stopping();
            on_stop_(sig);
        });
    }
    /// True once a stop signal arrived.
    bool stopping() const { return stopping_; }
    /// Stops waiting for the signals (io.run() can return without one).
    void cancel() {
        error_code ignored;
        signals_.cancel(ignored);
    }

  private:
    net::signal_set signals_;
    std::function<void(int)> on_stop_;
    bool stopping_ = false;
};

}  // namespace clusterd::sdk

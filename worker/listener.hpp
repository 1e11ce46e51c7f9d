// One listening socket on the worker's loop: waits for readiness, then accepts in batches.
// Internal to the runtime (it includes Asio).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <functional>
#include <string>

#include "worker/listen_fds.hpp"

namespace clusterd::worker {

/// Accepts connections from one listening stream socket and hands their fds on.
class Listener {
  public:
    /// Receives each accepted fd (non-blocking, close-on-exec) and the socket family.
    using ConnectionHandler = std::function<void(int fd, int family)>;

    /// Adopts `socket`, which must be a listening stream socket (else std::invalid_argument).
    /// `on_failed` runs once if the socket breaks and the listener closes itself.
    Listener(boost::asio::io_context& ioc, ListenFd socket, ConnectionHandler on_connection,
             std::function<void()> on_failed);

    /// Starts accepting.
    void start();
    /// Stops accepting and closes this process's copy of the socket.
    void close();
    /// True until close().
    bool is_open() const { return socket_.is_open(); }
    /// The name given by the parent ("http") or the bound address.
    const std::string& name() const { return name_; }
    /// The descriptor number the socket was adopted as.
    int fd() const { return fd_; }

  private:
    void do_wait();
    void on_wait(const boost::system::error_code& ec);
    void accept_batch();
    void do_backoff();

    boost::asio::posix::stream_descriptor socket_;
    boost::asio::steady_timer backoff_;
    std::string name_;
    int fd_;
    int family_ = 0;
    bool warned_ = false;
    ConnectionHandler on_connection_;
    std::function<void()> on_failed_;
};

}  // namespace clusterd::worker

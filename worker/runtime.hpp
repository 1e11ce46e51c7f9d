// The worker runtime: one thread, one io_context, and the worker's half of the contract with
// the clusterd master (design.md): inherited listeners (or a socket bound by --listen),
// READY=1 once accepting, WATCHDOG=1 from a timer on the loop itself (so a blocked loop stops
// the heartbeat), and a graceful stop on SIGTERM/SIGINT: close the listeners (the master keeps
// its copy, so nothing queued is lost), send STOPPING=1, let the application finish its
// connections, and return 0 from run() once none is left. SIGUSR1 and SIGHUP are logged.
//
// Asio stays out of this header; the application reaches the loop through context().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/fd.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd::worker {

namespace detail {
struct ConnectionCount;
}

/// Counts one open connection for the graceful stop; destroying (or release()) uncounts it.
class ConnectionToken {
  public:
    /// A token that counts nothing.
    ConnectionToken() = default;
    ConnectionToken(ConnectionToken&&) noexcept = default;
    ConnectionToken& operator=(ConnectionToken&& other) noexcept;
    ConnectionToken(const ConnectionToken&) = delete;
    ConnectionToken& operator=(const ConnectionToken&) = delete;
    ~ConnectionToken();

    /// Uncounts the connection now; later calls do nothing.
    void release();

  private:
    friend class Runtime;
    explicit ConnectionToken(std::shared_ptr<detail::ConnectionCount> count);
    std::shared_ptr<detail::ConnectionCount> count_;
};

/// A connection the runtime accepted: a non-blocking, close-on-exec stream socket.
struct AcceptedSocket {
    /// The connection; release() it into the application's socket object.
    UniqueFd fd;
    /// AF_INET, AF_INET6 or AF_UNIX.
    int family = 0;
    /// Keep it for as long as the connection is open: the graceful stop waits for it.
    ConnectionToken token;
};

/// How the runtime sets itself up.
struct RuntimeOptions {
    /// "host:port" bound with SO_REUSEADDR when no socket was inherited (LISTEN_FDS).
    std::string listen = "127.0.0.1:8080";
    /// listen(2) backlog for a socket bound here.
    int backlog = 1024;
    /// Give up on open connections this long after the stop signal; 0 = never (the
    /// master's KILL after stop_timeout is the bound).
    std::chrono::milliseconds drain_timeout{0};
    /// Install the SIGTERM/SIGINT/SIGUSR1/SIGHUP handlers.
    bool handle_signals = true;
};

/// One event loop serving the worker's listeners until a graceful stop.
class Runtime {
  public:
    /// Takes the inherited sockets or binds options.listen. Throws std::invalid_argument for
    /// a malformed address or environment, std::system_error when binding fails.
    explicit Runtime(RuntimeOptions options);
    ~Runtime();
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;

    /// The loop every handler of the application runs on.
    boost::asio::io_context& context();
    /// Sets who receives accepted connections; required before run().
    void on_accept(std::function<void(AcceptedSocket)> handler);
    /// Sets what runs once when a graceful stop begins, after the listeners are closed: the
    /// application closes idle connections and finishes the others.
    void on_drain(std::function<void()> handler);

    /// Listener names and fds, e.g. "http (fd 3)", for logs and status text.
    std::vector<std::string> describe_listeners() const;
    /// Connections currently counted by a ConnectionToken.
    std::size_t connections() const;
    /// True once a graceful stop has begun.
    bool stopping() const;
    /// Adds a figure to every heartbeat, sent as X_CLUSTERD_<name>=<value()>.
    void report(std::string name, std::function<std::int64_t()> value);
    /// The heartbeat period (half of WATCHDOG_USEC), zero when there is no watchdog.
    std::chrono::microseconds heartbeat_interval() const;

    /// Begins a graceful stop, as SIGTERM does. Call it on the loop.
    void stop();
    /// Runs the loop until the stop completes. Returns the process exit code: 0 after a
    /// requested stop, 1 when every listener failed or a handler threw.
    int run();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace clusterd::worker

// The master's metrics endpoint (`daemon.metrics: "host:port"`): a small HTTP/1.1 server
// on the master's own io_context.
//
//   GET /metrics  200, the text the metrics callback returns (Prometheus text format 0.0.4)
//   GET /healthz  200 "ok\n", or 503 with the health callback's reason
//   HEAD          the same heads, without bodies
//   other paths   404; other methods 405; a malformed or oversized request 400 or 431
//
// It never blocks the master: accept, read and write are asynchronous, a request head is
// limited to a few KiB, every connection has one deadline for its whole life, and the
// connection closes after its response. At most `max_connections` are open; beyond that the
// server stops accepting (the rest wait in the kernel's backlog) until one closes. The
// callbacks run on the loop and must be quick; an exception from one becomes a 500.
//
// Asio and Beast stay in the .cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace clusterd {

/// What /healthz reports.
struct Health {
    bool healthy = true;
    /// Why not, for the 503 body.
    std::string reason;
};

/// Limits of the metrics server.
struct MetricsServerOptions {
    /// Open connections at most.
    std::size_t max_connections = 64;
    /// Largest request head (request line and fields) in bytes.
    std::size_t max_request_bytes = 8 * 1024;
    /// From accept to the end of the response.
    std::chrono::milliseconds timeout{5000};
};

/// Serves /metrics and /healthz until closed or destroyed.
class MetricsServer {
  public:
    /// Returns the exposition text for GET /metrics.
    using MetricsCallback = std::function<std::string()>;
    /// Returns the state for GET /healthz.
    using HealthCallback = std::function<Health()>;

    /// Binds and listens on `address` ("127.0.0.1:9464", "[::1]:9464"; port 0 picks one).
    /// Throws std::invalid_argument for a malformed address and std::system_error naming
    /// the call and the address when binding fails.
    MetricsServer(boost::asio::io_context& io, std::string_view address, MetricsCallback metrics,
                  HealthCallback health, MetricsServerOptions options = {});
    /// Closes the listener and every open connection.
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    /// Starts accepting.
    void start();
    /// Stops accepting and closes open connections; their handlers finish as cancelled.
    void close();
    /// The bound port (the chosen one when the address said port 0).
    std::uint16_t port() const;
    /// "127.0.0.1:9464": the bound address, for the log.
    std::string address() const;
    /// Connections open now.
    std::size_t connections() const;
    /// Requests answered since start.
    std::uint64_t requests() const;

    struct State;

  private:
    std::shared_ptr<State> state_;
};

}  // namespace clusterd

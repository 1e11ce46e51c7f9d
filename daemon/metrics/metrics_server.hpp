// The master's metrics endpoint (`daemon.metrics: "host:port"`): a small HTTP/1.1 server
// on the master's own io_context.
//
//   GET /metrics  200, the text the metrics callback returns (Prometheus text format 0.0.4)
//   GET /healthz  200 "ok\n", or 503 with the health callback's reason
//   HEAD          the same heads, without bodies
//   other paths   404; other methods 405; a malformed or oversized request 400 or 431
//
// It never blocks the master: accept, read and write are asynchronous, a request head is
// limited to a few KiB and must arrive within `header_timeout` of the accept, the whole
// exchange within `timeout`, and the connection closes after its response. At most
// `max_connections` are open. A new connection at the limit sheds the oldest one still
// reading its request head (a slow or silent client: slowloris), so that a probe of
// /healthz, which sends its request at once, is answered at once whatever slow clients hold;
// only when every open connection is writing its response does the server stop accepting
// until one closes. When accept() fails for want of file descriptors, waiting connections are
// closed instead of retried (accept_guard.hpp). /healthz answers from the health callback
// alone, without building the metrics text. The callbacks run on the loop and must be quick;
// an exception from one becomes a 500.
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
    /// From accept to the end of the request head (a probe sends it at once).
    std::chrono::milliseconds header_timeout{2000};
    /// From accept to the end of the response.
    std::chrono::milliseconds timeout{5000};
};

/// What the metrics server counts, for /metrics.
struct MetricsServerStats {
    std::uint64_t accepted = 0;          ///< connections accepted
    std::uint64_t requests = 0;          ///< responses started
    std::uint64_t shed = 0;              ///< slow connections closed for a new one
    std::uint64_t header_timeouts = 0;   ///< request head not complete within header_timeout
    std::uint64_t timeouts = 0;          ///< response not written within timeout
    std::uint64_t accept_shortages = 0;  ///< accept() out of file descriptors
    std::uint64_t accept_shed = 0;       ///< waiting connections closed for want of one
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
    /// Serves on `listener`, a listening TCP socket already bound (an upgrade's new image
    /// takes the old one's); owned from now on.
    MetricsServer(boost::asio::io_context& io, int listener, MetricsCallback metrics,
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
    /// The listening socket (-1 once closed).
    int listener() const;
    /// Connections open now.
    std::size_t connections() const;
    /// Requests answered since start.
    std::uint64_t requests() const;
    /// The counters.
    const MetricsServerStats& stats() const;
    /// The options it runs with.
    const MetricsServerOptions& options() const;

    struct State;

  private:
    std::shared_ptr<State> state_;
};

}  // namespace clusterd

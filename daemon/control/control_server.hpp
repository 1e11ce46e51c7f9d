// The control socket: a unix stream socket speaking JSON lines.
//
// A client sends one request object per line, e.g. {"cmd":"scale","program":"web",
// "workers":4} (control_request.hpp lists them); the daemon answers with zero or more progress
// lines {"progress":"..."} and then one final line {"ok":true|false,"message":"...", ...}.
// Requests on one connection are handled one after the other: the next line is read only
// once the previous reply has been written, so a client that pipelines requests and never
// reads the replies holds at most one reply in the master. A request that does not decode
// gets {"ok":false,"message":...} naming what is wrong; nothing a client sends can disturb
// the daemon.
//
// Limits (ControlServerOptions): at most `max_connections` connections are open. When a new
// one arrives at the limit, the connection that has been idle longest (no request being
// handled, no reply being written) is sent {"ok":false,"message":"closed: ..."} and closed;
// when every open connection is busy the new one gets that line instead. A connection is
// closed after `idle_timeout` without a request, when a started request line is not complete
// within `request_timeout`, when a reply is not taken by the client within `write_timeout`,
// when a request line passes kMaxControlRequestBytes, and when more than `max_queued_bytes`
// of progress lines wait for a client that does not read. When accept() fails for want of
// file descriptors, the connection idle the longest is closed to make room, as at the limit;
// with none idle, waiting connections are closed instead of retried (accept_guard.hpp).
//
// The socket is created mode 0600 (0660 and group-owned with `control_group`); each
// client's credentials (SO_PEERCRED) must be root, the daemon's own uid, or a member of
// `control_group`.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "daemon/control/control_request.hpp"
#include "daemon/control/reporter.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

/// Limits of the control server.
struct ControlServerOptions {
    /// Open connections at most.
    std::size_t max_connections = 64;
    /// A connection with no request started is closed after this long.
    std::chrono::milliseconds idle_timeout{60'000};
    /// A request line must be complete this long after its first byte.
    std::chrono::milliseconds request_timeout{10'000};
    /// A reply (or progress line) the client does not read for this long closes it.
    std::chrono::milliseconds write_timeout{10'000};
    /// Progress and reply lines waiting to be written to one connection, in bytes.
    std::size_t max_queued_bytes = 1024 * 1024;
};

/// What the control server counts, for /metrics.
struct ControlServerStats {
    std::size_t open = 0;                ///< connections open now
    std::size_t limit = 0;               ///< max_connections
    std::uint64_t accepted = 0;          ///< connections accepted
    std::uint64_t requests = 0;          ///< requests handed to the supervisor
    std::uint64_t bad_requests = 0;      ///< lines that did not decode
    std::uint64_t shed_idle = 0;         ///< idle connections closed for a new one
    std::uint64_t refused_busy = 0;      ///< new connections refused: all open ones busy
    std::uint64_t denied = 0;            ///< peers without permission
    std::uint64_t idle_timeouts = 0;     ///< closed after idle_timeout
    std::uint64_t request_timeouts = 0;  ///< request line not complete in time
    std::uint64_t write_timeouts = 0;    ///< reply not read in time
    std::uint64_t oversized = 0;         ///< request line too long
    std::uint64_t queue_overflows = 0;   ///< more than max_queued_bytes waiting
    std::uint64_t accept_shortages = 0;  ///< accept() out of file descriptors
    std::uint64_t accept_shed = 0;       ///< waiting connections closed for want of one
};

class ControlServer {
  public:
    using Handler = std::function<void(const ControlRequest& request, std::shared_ptr<Reporter>)>;

    /// Create the socket at `path` (replacing a stale one). Throws std::system_error or
    /// std::runtime_error (another daemon answers there, unknown group).
    ControlServer(boost::asio::io_context& io, const std::string& path, const std::string& group,
                  Handler handler, ControlServerOptions options = {});
    /// Serve on `listener`, the socket at `path` bound already (an upgrade's new image takes
    /// the old one's); owned from now on. Throws as above.
    ControlServer(boost::asio::io_context& io, int listener, const std::string& path,
                  const std::string& group, Handler handler, ControlServerOptions options = {});
    ~ControlServer();

    /// The listening socket (-1 once closed).
    int listener() const;
    /// A client connection the previous image was answering (an upgrade): its reply goes
    /// through the reporter returned, then it is served as any other. nullptr if `fd` cannot
    /// be watched.
    std::shared_ptr<Reporter> adopt_connection(int fd);

    /// Start accepting.
    void start();
    /// Stop accepting, close open connections and remove the socket file.
    void close();
    /// The counters, read when scraped.
    const ControlServerStats& stats() const;

    struct Impl;

  private:
    std::shared_ptr<Impl> impl_;
};

/// The counters of the daemon's control server, for /metrics: nullptr while none is started.
const ControlServerStats* control_server_stats();

}  // namespace clusterd

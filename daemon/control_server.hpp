// The control socket: a unix stream socket speaking JSON lines.
//
// A client sends one request object per line, e.g. {"cmd":"scale","program":"web",
// "workers":4}; the daemon answers with zero or more progress lines {"progress":"..."} and
// then one final line {"ok":true|false,"message":"...", ...}. Requests on one connection
// are handled one after the other. A line longer than 64 KiB or that is not a JSON object
// gets an error reply; nothing a client sends can disturb the daemon.
//
// The socket is created mode 0600 (0660 and group-owned with `control_group`); each
// client's credentials (SO_PEERCRED) must be root, the daemon's own uid, or a member of
// `control_group`.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "daemon/reporter.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

class ControlServer {
  public:
    using Handler = std::function<void(const nlohmann::json& request, std::shared_ptr<Reporter>)>;

    /// Create the socket at `path` (replacing a stale one). Throws std::system_error or
    /// std::runtime_error (another daemon answers there, unknown group).
    ControlServer(boost::asio::io_context& io, const std::string& path, const std::string& group,
                  Handler handler);
    ~ControlServer();

    void start();
    /// Stop accepting and remove the socket file.
    void close();

  private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace clusterd

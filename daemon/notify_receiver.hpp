// The master's end of the sd_notify protocol (common/notify.hpp): one unix datagram socket
// in the abstract namespace with SO_PASSCRED, so each datagram carries the sender's pid,
// which the supervisor maps to a slot. Read on the master's loop, never blocking.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include "common/notify.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

class NotifyReceiver {
  public:
    using Handler = std::function<void(pid_t sender, const NotifyMessage& message)>;

    /// Bind the socket. Throws std::system_error.
    NotifyReceiver(boost::asio::io_context& io, Handler handler);
    ~NotifyReceiver();

    /// The value for NOTIFY_SOCKET ("@clusterd/...").
    const std::string& address() const;
    void start();
    void close();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace clusterd

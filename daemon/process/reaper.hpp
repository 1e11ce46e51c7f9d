// The one owner of child reaping in the master.
//
// Choice: one SIGCHLD-driven `waitpid(-1, WNOHANG)` loop, not a pidfd per child. As PID 1 of
// a container, or as a child subreaper, the master inherits grandchildren it never started;
// only a wait on "any child" reaps those, and with one loop nobody else may reap behind our
// back. A pid stays valid (a zombie) until this loop reaps it, so signalling a worker the
// supervisor still maps can never hit a recycled pid. Asio's signal_set is the self-pipe:
// the handler runs on the master's loop, never in signal context.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>

namespace boost::asio {
class io_context;
}

namespace clusterd {

class Reaper {
  public:
    /// Called on the loop once per reaped child, with waitpid()'s status.
    using Handler = std::function<void(pid_t pid, int status)>;

    Reaper(boost::asio::io_context& io, Handler handler);
    ~Reaper();

    /// Reap whatever already exited, then keep reaping on every SIGCHLD.
    void start();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace clusterd

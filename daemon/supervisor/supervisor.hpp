// The master: one thread, one io_context, one dispatch.
//
// Signals, child exits, notify datagrams and slot deadlines each become an event for one
// slot, handed to dispatch(), which runs the pure state machine (slot.hpp) and performs the
// actions it returns. Nothing else changes supervisor state, and nothing here blocks.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "daemon/control/control_request.hpp"
#include "daemon/control/reporter.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

class Executor;
struct HandoverState;

class Supervisor {
  public:
    /// `config_path`: the file `reload` reads ("" = the built-in default, nothing to
    /// reload); `builtin_worker`: path of clusterd-worker, for programs without `command`;
    /// `overrides`: the command line's daemon paths, applied to every config reloaded.
    Supervisor(boost::asio::io_context& io, Config config, std::string config_path,
               std::string builtin_worker, std::vector<std::string> environment,
               DaemonOverrides overrides = {});
    ~Supervisor();

    /// Use these sockets (passed by systemd, by name) for the listen entries of that name.
    void adopt_sockets(const std::map<std::string, int>& sockets);

    /// Open every listening socket, then start every worker. Throws on a start-up error
    /// (socket in use, unknown user, executable not found), before any worker runs.
    void start();

    /// This image's version, the binary `upgrade` execs when not told another, the control
    /// socket's listening fd (handed over by an upgrade), and the arguments `run` was given
    /// (the new image is exec'd with them, so it looks the same in `ps`).
    void set_image(std::string version, std::string binary, int control_listener,
                   std::vector<std::string> run_args);

    /// Instead of start(), in the image an upgrade exec'd: take over the workers and fds the
    /// state names, and answer `requester` (the client that asked, if any). `failed`: this
    /// is the old image, back because the new one could not resume, and why. Throws when the
    /// state does not fit.
    void resume(const HandoverState& state, std::shared_ptr<Reporter> requester,
                const std::string& failed);

    /// Run one control command (see commands.cpp); replies go to `reporter`.
    void command(const ControlRequest& request, std::shared_ptr<Reporter> reporter);

    /// The exit code for main() once the io_context has returned.
    int exit_code() const;

    struct Impl;

  private:
    std::unique_ptr<Executor> exec_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace clusterd

#include "worker/listen_fds.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include "worker/sdk.hpp"

namespace clusterd::worker {

std::vector<ListenFd> parse_listen_env(const ListenEnv& env, pid_t self) {
    // The protocol lives in the SDK (worker/sdk.hpp), which third-party workers use too.
    std::vector<ListenFd> out;
    for (auto& l : sdk::parse_listen_fds(env.pid, env.fds, env.names, self))
        out.push_back({std::move(l.name), l.fd});
    return out;
}

std::vector<ListenFd> listen_fds() {
    ListenEnv env{std::getenv("LISTEN_PID"), std::getenv("LISTEN_FDS"),
                  std::getenv("LISTEN_FDNAMES")};
    // Copy before unsetenv: the pointers point into the environment block.
    std::string pid = env.pid ? env.pid : "", fds = env.fds ? env.fds : "";
    std::string names = env.names ? env.names : "";
    env = {env.pid ? pid.c_str() : nullptr, env.fds ? fds.c_str() : nullptr,
           env.names ? names.c_str() : nullptr};
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");

    auto out = parse_listen_env(env, ::getpid());
    for (const auto& lf : out) {
        int flags = ::fcntl(lf.fd, F_GETFD);
        if (flags < 0 || ::fcntl(lf.fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
            throw std::invalid_argument("inherited fd " + std::to_string(lf.fd) + " (\"" + lf.name +
                                        "\") is not open");
        }
    }
    return out;
}

}  // namespace clusterd::worker

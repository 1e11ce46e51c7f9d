#include "worker/listen_fds.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

namespace clusterd::worker {

namespace {

template <class Int>
bool parse_int(std::string_view text, Int& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

std::vector<std::string> split_names(std::string_view names) {
    std::vector<std::string> out;
    for (;;) {
        auto colon = names.find(':');
        out.emplace_back(names.substr(0, colon));
        if (colon == std::string_view::npos) break;
        names.remove_prefix(colon + 1);
    }
    return out;
}

}  // namespace

std::vector<ListenFd> parse_listen_env(const ListenEnv& env, pid_t self) {
    if (env.pid == nullptr) return {};
    pid_t pid = 0;
    if (!parse_int(env.pid, pid) || pid <= 0) {
        throw std::invalid_argument(std::string("LISTEN_PID is not a pid: \"") + env.pid + '"');
    }
    if (pid != self) return {};

    int n = 0;
    if (env.fds == nullptr) return {};
    if (!parse_int(env.fds, n) || n < 0 || n > INT_MAX - listen_fds_start) {
        throw std::invalid_argument(std::string("LISTEN_FDS is not a count: \"") + env.fds + '"');
    }

    std::vector<std::string> names;
    if (env.names != nullptr && n > 0) {
        names = split_names(env.names);
        if (names.size() != static_cast<std::size_t>(n)) {
            throw std::invalid_argument("LISTEN_FDNAMES has " + std::to_string(names.size()) +
                                        " names for LISTEN_FDS=" + std::to_string(n));
        }
    }

    std::vector<ListenFd> out;
    out.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        out.push_back(
            {names.empty() ? "unknown" : names[static_cast<std::size_t>(i)], listen_fds_start + i});
    }
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

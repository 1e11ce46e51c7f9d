// Inherited listening sockets, per the systemd socket-activation protocol (sd_listen_fds(3)).
//
// The parent passes n sockets as fds 3..3+n-1 and sets LISTEN_PID (the receiver's own pid, so
// a grandchild that inherits the environment does not take them too), LISTEN_FDS=n and
// optionally LISTEN_FDNAMES=name1:name2:... (a missing list names every fd "unknown").
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace clusterd::worker {

/// One inherited socket and the name its parent gave it.
struct ListenFd {
    std::string name;
    int fd = -1;
};

/// The three variables as found in the environment; nullptr means unset.
struct ListenEnv {
    const char* pid = nullptr;
    const char* fds = nullptr;
    const char* names = nullptr;
};

/// The first inherited descriptor (SD_LISTEN_FDS_START).
inline constexpr int listen_fds_start = 3;

/// Interprets `env` for process `self`: empty when LISTEN_PID is unset or names another
/// process; throws std::invalid_argument for malformed values. Touches no descriptor.
std::vector<ListenFd> parse_listen_env(const ListenEnv& env, pid_t self);

/// The sockets this process inherited: parses the environment, marks the fds close-on-exec
/// and unsets the three variables (as sd_listen_fds(1) does, also when they are malformed).
/// Throws std::invalid_argument for malformed values or a descriptor that is not open.
std::vector<ListenFd> listen_fds();

}  // namespace clusterd::worker

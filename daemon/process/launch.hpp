// What a worker is started with: its executable, argv, environment and credentials, built
// from a program's config once, then completed per slot (design.md, "Worker environment").
#pragma once

#include <sys/types.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "daemon/process/spawner.hpp"

namespace clusterd {

/// The environment a worker starts from when `inherit_env` is false (systemd's default PATH).
inline constexpr const char* kDefaultPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a program cannot be launched; `key` is the program's config key at fault ("command",
/// "user", "group", "rlimits.nofile"), so that `clusterd check` can point at it.
class LaunchError : public std::runtime_error {
  public:
    LaunchError(std::string key, const std::string& message)
        : std::runtime_error(message), key_(std::move(key)) {}
    const std::string& key() const { return key_; }

  private:
    std::string key_;
};

/// Per-program launch data, resolved when the program is set up (throws LaunchError with a
/// clear message: unknown user, executable not found, not root for `user:`...).
struct LaunchPlan {
    std::string path;
    std::vector<std::string> argv;
    std::vector<std::string> base_env;  // inherited or default part, plus the program's env
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
    std::vector<gid_t> groups;

    /// `builtin_worker` is the clusterd-worker binary used when `command` is empty;
    /// `inherited` is the master's environment (environ).
    static LaunchPlan resolve(const ProgramConfig& program, const std::string& builtin_worker,
                              const std::vector<std::string>& inherited);
};

/// Where one slot's worker runs.
struct SlotContext {
    int slot = 0;
    int workers = 1;
    std::uint64_t generation = 1;
    std::string notify_socket;
    std::vector<int> listen_fds;
    std::string listen_names;
    int output_fd = -1;
    int cpu = -1;
    /// `ipc: node`: the worker's end of its Node IPC channel (placed after the listeners).
    int ipc_fd = -1;
    /// The program's scoreboard memfd (placed last) and the offset of this worker's record
    /// in it: CLUSTERD_SCOREBOARD (worker/scoreboard.hpp).
    int board_fd = -1;
    std::uint64_t board_offset = 0;
};

/// The complete spawn request for one slot of a program.
SpawnSpec make_spawn_spec(const ProgramConfig& program, const LaunchPlan& plan,
                          const SlotContext& slot);

}  // namespace clusterd

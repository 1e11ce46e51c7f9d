// What a loaded config needs from this machine before it can run: users, groups and
// executables (LaunchPlan::resolve, the same code that starts the workers), the output and
// log files, cwd and control_group. `clusterd check`, `clusterd run` and a reload all call it,
// so a config that passes `check` starts and one that `run` refuses fails `check`.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/config.hpp"

namespace clusterd {

/// Every problem of `config` on this machine, each at its file:line:col. `builtin_worker` and
/// `environ` are what LaunchPlan::resolve gets at run time. Creates and changes nothing.
std::vector<Diagnostic> check_runtime(const Config& config, const std::string& builtin_worker,
                                      const std::vector<std::string>& environ);

/// Why a file cannot be opened for appending at `path` ("" when it can): a directory, not
/// writable, a missing parent directory (only when `creates_parents` is false, as for
/// `output`; spdlog creates the log file's parents itself).
std::string append_problem(const std::string& path, bool creates_parents);

/// The longest name of a notify socket in its directory (a worker id: up to 20 digits).
inline constexpr std::size_t kNotifySocketNameMax = 20;

/// Where a daemon with this control socket keeps its workers' notify sockets:
/// "<control socket path without .sock>.notify"; as root, when some directory above it is
/// closed to other users, "/run/clusterd/notify-<hash of the control path>". Creates nothing.
std::string notify_dir_for(const std::string& control_path);

/// Why `dir` cannot hold the notify sockets ("" when it can): a socket path in it would be
/// too long, or something other than a directory of clusterd's uid is there.
std::string notify_dir_problem(const std::string& dir);

}  // namespace clusterd

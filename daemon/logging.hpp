// The master's log: stderr (journald under systemd) or a file reopened on USR1.
#pragma once

#include <string>

namespace clusterd {

/// Set up the default spdlog logger. `file` "" = stderr. Throws on a bad level or file (the
/// logger in place is kept then). Called again to reopen the file (USR1) or switch files.
void setup_logging(const std::string& level, const std::string& file);

/// Log to `file` ("" = stderr) from now on, at the current level: USR1 reopens the log file
/// (logrotate), a reload may name another one. Throws when the file cannot be opened (the
/// logger in place is kept then).
void reopen_log(const std::string& file);

/// spdlog level from "trace".."error"; false when unknown.
bool valid_log_level(const std::string& level);

}  // namespace clusterd

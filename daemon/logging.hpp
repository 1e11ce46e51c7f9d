// The master's log: stderr (journald under systemd) or a file reopened on USR1.
#pragma once

#include <string>

namespace clusterd {

/// Set up the default spdlog logger. `file` "" = stderr. Throws on a bad level or file.
void setup_logging(const std::string& level, const std::string& file);

/// spdlog level from "trace".."error"; false when unknown.
bool valid_log_level(const std::string& level);

}  // namespace clusterd

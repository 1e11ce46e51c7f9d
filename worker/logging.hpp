// Worker logging: spdlog to stderr, one short line per event, prefixed with the worker's
// identity so lines from N workers sharing the master's stderr can be told apart.
#pragma once

#include <string>
#include <string_view>

namespace clusterd::worker {

/// "[web:3]" from CLUSTERD_PROGRAM and CLUSTERD_WORKER_ID ("[worker:3]" without a program);
/// "[<fallback>]" when no worker id is set. nullptr means unset.
std::string log_prefix(const char* program, const char* worker_id, std::string_view fallback);

/// Makes the default spdlog logger write to stderr with log_prefix() from the environment;
/// `fallback` names the process when it runs outside clusterd.
void init_logging(std::string_view fallback);

}  // namespace clusterd::worker

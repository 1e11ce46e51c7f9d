// The `clusterd` control commands' client side: one request to the control socket, progress
// lines printed as they arrive, then the result. Blocking: this is the CLI, not the master.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/fd.hpp"

namespace clusterd {

/// Send `request` to the daemon at `socket_path`; print progress and the result (raw JSON
/// lines with `json_output`). Returns the process exit code: 0 only when the daemon said ok.
/// A reply marked "busy" (an operation runs that ends on its own) is asked again once a
/// second for up to `busy_wait_s` seconds.
int run_client(const std::string& socket_path, const nlohmann::json& request, bool json_output,
               int busy_wait_s = 0);

/// `status --watch`: the status table, refreshed every `interval` seconds until interrupted.
int watch_status(const std::string& socket_path, const nlohmann::json& request, double interval);

/// One request with a time limit, for the master itself (`run` asks a daemon already on its
/// control socket who it is). Returns the final reply (progress lines skipped), or nullopt
/// with `error` set when nobody answers in time.
std::optional<nlohmann::json> ask_daemon(const std::string& socket_path,
                                         const nlohmann::json& request, int timeout_ms,
                                         std::string& error);

/// A connection to the daemon at `socket_path` with `request` sent (as one line), or an
/// invalid fd and `error` saying why. `timeout_ms` > 0 bounds each send and blocking read.
UniqueFd send_request(const std::string& socket_path, const nlohmann::json& request, int timeout_ms,
                      std::string& error);

/// `events` and `logs`: prints each line the daemon sends (raw with `json_output`) until it
/// finishes or, following, until interrupted. A `logs` reply naming a file (output: FILE)
/// is read here: its last lines, then (following) what is appended, across rotations.
int follow_feed(const std::string& socket_path, const nlohmann::json& request, bool json_output);

/// The human form of a status reply (a table per program, like `pm2 list`).
std::string format_status(const nlohmann::json& status);

}  // namespace clusterd

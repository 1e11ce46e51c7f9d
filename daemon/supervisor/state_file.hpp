// What the master keeps across its own restarts: runtime `scale` overrides.
//
// One file per config file, so two daemons on one machine never share or undo each other's
// scale: <state_dir>/state-<file name>-<hash of the config's canonical path>.json. Written
// to <file>.new and renamed, so a reader never sees half a file. Each override remembers the
// `cores` it overrode: when the config's `cores` has changed since, the config wins.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/limits.hpp"

namespace clusterd {

/// The most workers a runtime scale may ask for (the CLI and control protocol cap).
inline constexpr int kMaxScale = limits::kMaxWorkers;

struct SavedScale {
    int workers = 0;
    std::string
        cores;  // the program's `cores` when it was saved ("auto" or a number); "" = unknown
};

struct DaemonState {
    std::string config;                       // canonical path of the config it belongs to
    std::map<std::string, SavedScale> scale;  // program -> worker count set at run time
};

/// The state file of the config at `config_path` ("<built-in>" for the built-in default).
std::string state_file_path(const std::string& dir, const std::string& config_path);

/// Read `path`; a missing file is an empty state. Each entry that cannot be used (malformed,
/// out of 1..kMaxScale) is left out with a line in `errors`; an unreadable or malformed file
/// gives an empty state and one line.
DaemonState load_state(const std::string& path, std::vector<std::string>& errors);

/// Write `path` (creating its directory and parents). Returns "" or what failed.
std::string save_state(const std::string& path, const DaemonState& state);

}  // namespace clusterd

// What the master keeps across its own restarts: runtime `scale` overrides, in
// <state_dir>/state.json. Written to state.json.new and renamed, so a reader never sees
// half a file.
#pragma once

#include <map>
#include <string>

namespace clusterd {

struct DaemonState {
    std::map<std::string, int> scale;  // program -> worker count set at run time
};

/// Read <dir>/state.json; a missing file is an empty state. `error` gets a description of
/// an unreadable or malformed file (the state is then empty too).
DaemonState load_state(const std::string& dir, std::string& error);

/// Write <dir>/state.json (creating dir). Returns "" or what failed.
std::string save_state(const std::string& dir, const DaemonState& state);

}  // namespace clusterd

// Reload, step "diff" (design.md, "Reload"): what each program needs when a new config
// replaces the running one. Pure: compares two validated Configs and touches nothing.
//
//   added / removed programs        start / stop
//   cores changed                   scale
//   fields only the master reads    apply in place (timeouts, restart policy, watchdog...)
//   fields the worker sees          rolling restart (command, env, user, rlimits, listen...)
#pragma once

#include <string>
#include <vector>

#include "common/config.hpp"

namespace clusterd {

/// What one program needs.
struct ProgramDiff {
    std::string name;
    bool added = false;
    bool removed = false;
    /// `cores` changed: from `workers_before` to `workers_after`.
    bool scale = false;
    int workers_before = 0;
    int workers_after = 0;
    /// Master-only fields changed: update the policy, nothing restarts.
    bool in_place = false;
    /// Worker-visible fields changed: every slot gets a new-generation worker.
    bool rolling_restart = false;
    /// `listen` changed: new sockets must be opened before the rolling restart.
    bool new_sockets = false;
    /// Names of the changed fields, for the log ("command, rlimits").
    std::vector<std::string> changed;
};

/// Per program of `before` and `after`, in `after`'s order then the removed ones; programs
/// with no change are left out.
std::vector<ProgramDiff> plan_reload(const Config& before, const Config& after);

/// The worker-visible fields that differ between two versions of one program.
std::vector<std::string> worker_visible_changes(const ProgramConfig& a, const ProgramConfig& b);

/// The master-only fields that differ between two versions of one program.
std::vector<std::string> master_only_changes(const ProgramConfig& a, const ProgramConfig& b);

}  // namespace clusterd

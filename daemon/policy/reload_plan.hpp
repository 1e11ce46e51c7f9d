// What a reload must do, worked out from the old and the new config before anything is
// touched (design.md, "Reload"). Pure: unit tested in
// tests/unit/daemon/policy/test_reload_plan.cpp.
//
// Per program:
//   added / removed               start it / stop it gracefully
//   `cores` changed               scale (unless a runtime `scale` override is in force)
//   master-only fields changed    apply in place: ready, start_time, start_timeout, restart,
//                                 backoff, min_uptime, abort_timeout, stop_signal,
//                                 stop_timeout, shutdown_message, max_surge, memory_limit,
//                                 max_age, max_age_jitter, depends_on, hooks, and a watchdog
//                                 that is switched off or made longer
//   worker-visible fields changed rolling restart: command, env (`env:` merged with the
//                                 `env_file:` files: a changed file rolls, a changed env_file
//                                 list with the same variables does not), inherit_env, user,
//                                 group, cwd, umask, rlimits, listen, output, cpu_affinity,
//                                 notify_access, ipc, and a watchdog
//                                 that is switched on or made shorter (the workers must learn
//                                 the new WATCHDOG_USEC, or they would ping too seldom)
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/config.hpp"

namespace clusterd {

struct ProgramPlan {
    enum class Kind { add, remove, keep };
    std::string name;
    Kind kind = Kind::keep;
    bool restart = false;              // rolling restart with the new config
    bool in_place = false;             // master-only fields changed
    std::optional<int> scale;          // new worker count
    std::vector<std::string> changed;  // field names, for the log and the caller

    bool changes_anything() const { return kind != Kind::keep || restart || in_place || scale; }
};

struct ReloadPlan {
    std::vector<ProgramPlan> programs;  // removed ones first, then the new file's order
    std::vector<std::string> daemon_changed;

    /// "web: rolling restart (command, env); api: scale 2 -> 4; old: removed".
    std::string summary() const;
};

/// Diff two configs.
ReloadPlan plan_reload(const Config& current, const Config& next);

}  // namespace clusterd

// What a command does to an operation already running on the same program: the one table
// the control commands, the signals and reload consult (and the README's "Commands that
// overlap" section shows). Pure data; tests/unit/daemon/supervisor checks the behaviour it names.
//
//   running \ later     stop        start    restart     rolling     scale    reload      signal
//   upgrade rolling restart     supersedes  merges   refused     refused     merges   refused
//   merges  refused roll back           supersedes  merges   supersedes  supersedes  merges
//   supersedes  merges  refused reload (reading)    merges      merges   merges      merges merges
//   refused     merges  refused stopped program     merges      ends it  ends it     refused merges
//   merges      merges  merges
//
// supersedes: the running operation ends now (its client is told what ended it), then the
//             later command runs. `stop` during a rolling restart leaves the program stopped;
//             a reload's new config stays in force and runs when the program starts.
// merges:     both hold: `scale` during a roll ends with that many workers of the new
//             generation; `start` of a running program changes nothing; a reload of a
//             stopped program changes its config and starts nothing.
// refused:    the later command fails at once, saying what runs; nothing changes.
// ends it:    the program is no longer stopped (`start`, `restart`).
// A scale-down drain, memory recycling and a late worker's spare are per-slot replacements,
// not program operations: every command merges with them (the slot ends with one worker),
// except `upgrade`, which hands over settled slots only and is refused while one runs (it
// says what, and `clusterd upgrade` waits for it). An upgrade carries a stopped program over
// as stopped; while an upgrade is being checked, commands run as usual, and one that starts
// an operation makes the upgrade fail (nothing else changes).
#pragma once

namespace clusterd::rules {

enum class Running { rolling_restart, roll_back, reload_reading, stopped };
enum class Later { stop, start, restart, rolling_restart, scale, reload, signal, upgrade };
enum class Rule { supersedes, merges, refused, ends_it };

constexpr Rule rule(Running running, Later later) {
    using enum Later;
    switch (running) {
        case Running::rolling_restart:
            return later == stop ? Rule::supersedes
                   : later == restart || later == rolling_restart || later == reload ||
                           later == upgrade
                       ? Rule::refused
                       : Rule::merges;
        case Running::roll_back:
            return later == upgrade ? Rule::refused
                   : later == restart || later == rolling_restart || later == reload ||
                           later == stop
                       ? Rule::supersedes
                       : Rule::merges;
        case Running::reload_reading:
            return later == reload || later == upgrade ? Rule::refused : Rule::merges;
        case Running::stopped:
            return later == start || later == restart ? Rule::ends_it
                   : later == rolling_restart         ? Rule::refused
                                                      : Rule::merges;
    }
    return Rule::merges;
}

/// The command as an operator types it ("restart --rolling").
constexpr const char* to_string(Later later) {
    constexpr const char* names[] = {"stop",  "start",  "restart", "restart --rolling",
                                     "scale", "reload", "signal",  "upgrade"};
    return names[static_cast<int>(later)];
}

}  // namespace clusterd::rules

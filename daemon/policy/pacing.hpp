// Restarts and the door of one program, as pure functions on its slots (no clock, no Asio):
// the supervisor performs what they decide, and tests/unit/daemon/policy/test_pacing.cpp runs them
// with the slot state machine on a fake clock, for hours of simulated crash loops and storms.
//
// - While no worker of the program is ready, restarts out of backoff are paced to one per
//   kProbeInterval for the whole program (hold()), and never fewer: when every backoff ends
//   later than the pace allows, a probe starts the earliest one (probe_pick()).
// - The moment a worker is ready again, every slot in backoff retries (Plan::wake).
// - The door: a program none of whose workers is ready, starting, restarting, or due within
//   kSoon refuses connections (its sockets are shut); they listen again before the next spawn.
//   It shuts only once every worker told to stop has exited.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "daemon/policy/slot.hpp"

namespace clusterd::pacing {

struct Pace {
    bool serving = false;    // some slot's worker is ready
    TimePoint next_probe{};  // no restart out of backoff before this while nothing serves
    TimePoint probe_at{};    // when the probe timer fires; {} = not armed
};

/// A backoff slot's deadline is due: nullopt = spawn now; else hold it until the time returned.
std::optional<TimePoint> hold(const Pace& pace, TimePoint now);

/// A worker of the program is being spawned (the probe, while nothing serves).
void spawned(Pace& pace, TimePoint now);

/// What follows a change of the program's slots (`slots`: the current worker of each).
struct Plan {
    std::vector<std::size_t> wake;   // slots in backoff to start now: a worker is ready again
    std::optional<TimePoint> probe;  // (re)arm the probe timer for this time
};
Plan after_change(Pace& pace, const std::vector<const Slot*>& slots, bool rolling, TimePoint now);

/// The probe timer fired: the slot to start, if nothing serves or starts. Clears probe_at.
std::optional<std::size_t> probe_pick(Pace& pace, const std::vector<const Slot*>& slots);

/// When slot `i` (in backoff) starts its next worker: its deadline while something serves;
/// else the slots take turns, one per kProbeInterval, in the order of their deadlines.
std::optional<TimePoint> next_try(const Pace& pace, const std::vector<const Slot*>& slots,
                                  std::size_t i);

/// Whether the program's sockets should listen, given every worker it has (slots, spares,
/// leaving ones): `open` when one is ready or starting, `shut` when none is coming soon.
enum class Door { open, shut, keep };
Door door(const Pace& pace, const std::vector<const Slot*>& workers, TimePoint now);

}  // namespace clusterd::pacing

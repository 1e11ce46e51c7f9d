// The worker-slot lifecycle as a pure state machine.
//
// step(slot, policy, event, now) returns the slot's next value and the actions to perform,
// as data. It never forks, signals or reads a clock, so every state x event cell is unit
// tested without a process (tests/unit/daemon/policy/test_slot.cpp). The supervisor performs the
// actions and feeds back what happened (Spawned, Exited, Deadline, ...).
//
// A slot has exactly one deadline at a time; what it means depends on the state:
//   starting  start_timeout (ready: notify) or start_time (ready: started)
//   ready     with a watchdog: first when the next heartbeat is overdue (the worker is then
//             `late`: new connections go elsewhere, and the supervisor starts a spare), then
//             last heartbeat + watchdog (the worker is aborted and replaced)
//   stopping  stop_timeout, then KILL
//   backoff   when to respawn
//
// Restart policy: a run is healthy when the worker became ready and stayed up for min_uptime.
// A healthy run that ends is restarted at once and the failure count starts afresh; a failing
// run counts one more failure and waits backoff_delay(failures). A hung worker (watchdog) or
// one not ready in time (start_timeout) is abandoned, not waited for: the supervisor sends it
// its signal and kills it after abort_timeout, while the slot goes on to its replacement.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/config.hpp"

namespace clusterd {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

enum class SlotState { stopped, starting, ready, stopping, backoff, failed };

/// Why a worker ended, or why it is being stopped.
enum class ExitCause {
    none,
    requested,      // stopped on request (stop, restart, shutdown)
    exited,         // exited on its own with a code
    crashed,        // killed by a signal it was not sent by us
    watchdog,       // stopped heartbeating
    start_timeout,  // not ready within start_timeout
    spawn_failed,   // fork() or execve() failed
    bad_config,     // exited with the reserved "bad configuration" code
    memory,         // recycled for passing memory_limit
    max_age,        // recycled for reaching max_age
};

/// How a child ended, as waitpid() reported it.
struct ExitStatus {
    bool signaled = false;
    int code = 0;  // exit code, or the signal number when signaled
    bool core_dumped = false;
    bool abandoned = false;  // not waited for: sent signal `code` and replaced at once

    static ExitStatus from_wait_status(int status);
    /// "exited with code 1", "killed by SIGSEGV (core dumped)".
    std::string describe() const;
};

/// What the state machine needs of a program's config.
struct SlotPolicy {
    RestartMode restart = RestartMode::always;
    ReadyMode ready = ReadyMode::notify;
    Duration start_time{std::chrono::seconds(1)};
    Duration start_timeout{std::chrono::seconds(30)};
    Duration watchdog{0};
    Duration stop_timeout{std::chrono::seconds(10)};
    int stop_signal = 15;
    BackoffConfig backoff;
    Duration min_uptime{std::chrono::seconds(1)};
    Duration abort_timeout{std::chrono::seconds(2)};

    static SlotPolicy from(const ProgramConfig& program);
};

namespace event {
struct Start {};    // want the slot up
struct Stop {};     // want the slot down (graceful)
struct Restart {};  // stop gracefully, then start again at once
struct Kill {};     // fast shutdown: KILL whatever runs
/// Stop gracefully for good (its replacement is up), for `cause`: memory or max_age.
struct Recycle {
    ExitCause cause = ExitCause::memory;
};
struct Release {};  // the slot is handed to a replacement: want down, but leave the worker be
struct Postpone {   // backoff: respawn no earlier than `at` (restarts paced per program)
    TimePoint at;
};
struct Spawned {
    pid_t pid;
};
struct SpawnFailed {
    int error;  // errno
};
struct Ready {
    Duration heartbeat{0};  // the pace of heartbeats the worker announced (0: not said)
};
/// WATCHDOG=1 (now), or a heartbeat the worker stored in its scoreboard record at `at`
/// (read later: the master samples those, so they say nothing of the worker's pace).
struct Heartbeat {
    std::optional<TimePoint> at;
};
struct Exited {
    ExitStatus status;
};
struct Deadline {};
}  // namespace event

using Event = std::variant<event::Start, event::Stop, event::Restart, event::Kill, event::Spawned,
                           event::SpawnFailed, event::Ready, event::Heartbeat, event::Exited,
                           event::Deadline, event::Recycle, event::Release, event::Postpone>;

enum class LogLevel { debug, info, warn, error, critical };

namespace action {
struct Spawn {};
struct Signal {
    int sig;
};
/// Arm the slot's single deadline (replaces any previous one).
struct ArmDeadline {
    TimePoint at;
};
struct CancelDeadline {};
/// Send `sig` (and SIGCONT, so a stopped process gets it) to the worker and stop tracking
/// it: the supervisor kills its process group after `grace` unless it has exited by then.
struct Abandon {
    int sig;
    Duration grace;
};
struct Log {
    LogLevel level;
    std::string message;
};
}  // namespace action

using Action = std::variant<action::Spawn, action::Signal, action::ArmDeadline,
                            action::CancelDeadline, action::Log, action::Abandon>;

struct Slot {
    SlotState state = SlotState::stopped;
    bool want_up = false;
    pid_t pid = 0;
    int restarts = 0;  // respawns of this slot, any cause
    int failures = 0;  // consecutive unhealthy runs, drives the backoff
    TimePoint started_at{};
    TimePoint ready_at{};
    TimePoint last_heartbeat{};
    Duration heartbeat_interval{0};  // between the last two heartbeats (0: not known yet)
    bool late = false;               // ready, but its heartbeat is overdue
    int ends = 0;                    // runs ended (exits, failed spawns, abandons)
    std::optional<TimePoint> deadline;
    ExitCause stop_reason = ExitCause::none;  // while stopping: why
    ExitCause last_cause = ExitCause::none;
    ExitStatus last_status{};
    Duration last_backoff{0};
};

struct Transition {
    Slot next;
    std::vector<Action> actions;
};

/// The whole lifecycle: see the table in slot.cpp.
Transition step(const Slot& slot, const SlotPolicy& policy, const Event& event, TimePoint now);

/// What became of a worker someone waits for (a rollout, a scale-up, a memory recycle),
/// after an event moved its slot from `before` to `now`.
enum class StartOutcome { pending, ready, failed };
StartOutcome start_outcome(const Slot& now, SlotState before);

/// Delay before the respawn that follows the n-th consecutive failure (n >= 1): `initial`
/// for the first, then doubling from max(initial, 100ms), capped at `max`.
Duration backoff_delay(const BackoffConfig& backoff, int failures);

/// With a watchdog: how long after its last heartbeat a ready worker counts as late. 1.5x the
/// interval it has been heartbeating at (half the watchdog until two heartbeats were seen),
/// between a tenth and nine tenths of the watchdog.
Duration late_after(const Slot& slot, const SlotPolicy& policy);

/// While no worker of a program is ready, restarts out of backoff are paced to one per
/// `kProbeInterval` per program: the one allowed (the probe) may spawn at `next_probe`.
constexpr Duration kProbeInterval{1000};

/// Whether a worker in this state may serve soon enough that clients should wait for it:
/// starting, ready, restarting, or a backoff that ends within kSoon. A program none of whose
/// workers qualifies refuses connections (its listening sockets are shut).
constexpr Duration kSoon{100};
bool coming(const Slot& slot, TimePoint now);

const char* to_string(SlotState state);
const char* to_string(ExitCause cause);

}  // namespace clusterd

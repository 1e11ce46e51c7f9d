#include "daemon/policy/slot.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <system_error>

#include "common/duration.hpp"
#include "common/exit_codes.hpp"
#include "common/signals.hpp"

namespace clusterd {

namespace {

constexpr int kSigKill = 9;
constexpr Duration kBackoffBase{100};

using namespace std::chrono_literals;

// Builds one transition; each handler below is a few lines on top of it.
class Step {
  public:
    Step(const Slot& slot, const SlotPolicy& policy, TimePoint now)
        : next_(slot), policy_(policy), now_(now) {}

    Transition done() { return {std::move(next_), std::move(actions_)}; }

    Slot& slot() { return next_; }
    const SlotPolicy& policy() const { return policy_; }
    TimePoint now() const { return now_; }

    void log(LogLevel level, std::string message) {
        actions_.emplace_back(std::in_place_type<action::Log>, level, std::move(message));
    }
    void signal(int sig) { actions_.emplace_back(std::in_place_type<action::Signal>, sig); }

    void arm(Duration after) { arm_at(now_ + after); }
    void arm_at(TimePoint at) {
        next_.deadline = at;
        actions_.emplace_back(std::in_place_type<action::ArmDeadline>, at);
    }
    void disarm() {
        if (!next_.deadline) return;
        next_.deadline.reset();
        actions_.emplace_back(std::in_place_type<action::CancelDeadline>);
    }

    // stopped/backoff/failed -> starting: fork and exec a new worker.
    void spawn() {
        next_.state = SlotState::starting;
        next_.pid = 0;
        next_.ready_at = {};
        next_.stop_reason = ExitCause::none;
        disarm();
        actions_.emplace_back(std::in_place_type<action::Spawn>);
    }

    // starting/ready -> stopping: send `sig`, KILL after stop_timeout.
    void begin_stop(ExitCause reason, int sig) {
        next_.state = SlotState::stopping;
        next_.stop_reason = reason;
        signal(sig);
        arm(policy_.stop_timeout);
    }

    void become_ready(Duration heartbeat = Duration{0}) {
        next_.state = SlotState::ready;
        next_.ready_at = now_;
        next_.last_heartbeat = now_;
        next_.heartbeat_interval = heartbeat;
        next_.late = false;
        disarm();
        if (policy_.watchdog.count() > 0) arm(late_after(next_, policy_));
        log(LogLevel::info,
            "pid " + std::to_string(next_.pid) + " ready after " +
                format_duration(std::chrono::duration_cast<Duration>(now_ - next_.started_at)));
    }

    // Give up on the running worker without waiting for it: `sig` now, KILL after
    // abort_timeout (the supervisor's part). The slot goes on as if it had exited.
    void abandon(int sig) {
        actions_.emplace_back(std::in_place_type<action::Abandon>, sig, policy_.abort_timeout);
        next_.last_status = ExitStatus{true, sig, false, true};
    }

    // The worker is gone (exit, or failed spawn): account for it and decide what follows.
    void ended(ExitCause cause, const std::string& what, LogLevel level);

  private:
    Slot next_;
    const SlotPolicy& policy_;
    TimePoint now_;
    std::vector<Action> actions_;
};

bool is_failure(ExitCause cause) {
    return cause != ExitCause::requested && cause != ExitCause::none;
}

void Step::ended(ExitCause cause, const std::string& what, LogLevel level) {
    Slot& s = next_;
    // Healthy: it became ready and stayed up for min_uptime (for a hung worker, up to its
    // last heartbeat). Its end restarts at once and the failure count starts afresh. Any
    // other end we did not ask for is a failing run, a clean exit too: a worker that exits 0
    // at once must not spin.
    TimePoint alive_until = cause == ExitCause::watchdog ? s.last_heartbeat : now_;
    bool healthy = s.ready_at != TimePoint{} && alive_until - s.ready_at >= policy_.min_uptime;
    bool clean_exit = cause == ExitCause::exited && s.last_status.code == 0;
    if (healthy) {
        s.failures = 0;
    } else if (is_failure(cause)) {
        ++s.failures;
    }
    ++s.ends;
    s.last_cause = cause;
    s.pid = 0;
    s.late = false;
    s.stop_reason = ExitCause::none;
    disarm();

    std::string restarts = "restarts so far: " + std::to_string(s.restarts);
    if (!s.want_up) {
        s.state = SlotState::stopped;
        log(level, what + "; stopped");
        return;
    }
    if (cause == ExitCause::bad_config) {
        s.state = SlotState::failed;
        log(LogLevel::error, what + " (exit code " + std::to_string(exit_code::worker_bad_config) +
                                 " = bad configuration): not restarting, slot failed; " + restarts);
        return;
    }
    bool restart = policy_.restart == RestartMode::always ||
                   (policy_.restart == RestartMode::on_failure && is_failure(cause) && !clean_exit);
    if (cause == ExitCause::requested) restart = true;  // a Restart event: start again
    if (!restart) {
        s.state = SlotState::stopped;
        s.want_up = false;
        log(level, what + "; not restarting (restart: " +
                       (policy_.restart == RestartMode::never ? "never" : "on-failure") + ")");
        return;
    }
    ++s.restarts;
    Duration delay = s.failures > 0 ? backoff_delay(policy_.backoff, s.failures) : Duration{0};
    s.last_backoff = delay;
    std::string run = healthy ? "healthy run" : "failing run";
    if (delay.count() == 0) {
        log(level,
            what + " (" + run + "); restarting now (restart " + std::to_string(s.restarts) + ")");
        spawn();
    } else {
        s.state = SlotState::backoff;
        log(level, what + " (" + run + "); restarting in " + format_duration(delay) + " (restart " +
                       std::to_string(s.restarts) + ", " + std::to_string(s.failures) +
                       " failures in a row)");
        arm(delay);
    }
}

std::string uptime_of(const Slot& s, TimePoint now) {
    return format_duration(std::chrono::duration_cast<Duration>(now - s.started_at));
}

// ---- one function per event; each handles every state ----

void on_start(Step& t) {
    Slot& s = t.slot();
    s.want_up = true;
    switch (s.state) {
        case SlotState::stopped:
        case SlotState::failed:
            s.failures = 0;
            t.spawn();
            break;
        case SlotState::backoff:  // an explicit start skips the remaining backoff
            t.spawn();
            break;
        case SlotState::starting:
        case SlotState::ready:
        case SlotState::stopping:  // want_up: it starts again once the old one is gone
            break;
    }
}

// Stop and Recycle: stop gracefully and stay down; `reason` is what the exit is put down to.
void stop_for_good(Step& t, ExitCause reason) {
    Slot& s = t.slot();
    s.want_up = false;
    switch (s.state) {
        case SlotState::starting:
        case SlotState::ready:
            t.begin_stop(reason, t.policy().stop_signal);
            break;
        case SlotState::backoff:
            s.state = SlotState::stopped;
            t.disarm();
            break;
        case SlotState::stopping:  // an operator's stop outranks why it was already stopping
            if (reason == ExitCause::requested) s.stop_reason = reason;
            break;
        case SlotState::stopped:
        case SlotState::failed:
            break;
    }
}

void on_stop(Step& t) {
    stop_for_good(t, ExitCause::requested);
}

void on_restart(Step& t) {
    Slot& s = t.slot();
    switch (s.state) {
        case SlotState::starting:
        case SlotState::ready:
            s.want_up = true;
            t.begin_stop(ExitCause::requested, t.policy().stop_signal);
            break;
        case SlotState::stopping:
            s.want_up = true;
            break;
        case SlotState::stopped:
        case SlotState::failed:
        case SlotState::backoff:
            on_start(t);
            break;
    }
}

void on_recycle(Step& t, const event::Recycle& r) {
    stop_for_good(t, r.cause);
}

void on_kill(Step& t) {
    Slot& s = t.slot();
    s.want_up = false;
    switch (s.state) {
        case SlotState::starting:
        case SlotState::ready:
        case SlotState::stopping:
            s.state = SlotState::stopping;
            if (s.stop_reason == ExitCause::none) s.stop_reason = ExitCause::requested;
            t.signal(kSigKill);
            t.disarm();
            break;
        case SlotState::backoff:
            s.state = SlotState::stopped;
            t.disarm();
            break;
        case SlotState::stopped:
        case SlotState::failed:
            break;
    }
}

void on_spawned(Step& t, pid_t pid) {
    Slot& s = t.slot();
    if (s.state != SlotState::starting || s.pid != 0) {
        t.log(LogLevel::warn,
              "spawned pid " + std::to_string(pid) + " while " + to_string(s.state) + ": ignored");
        return;
    }
    s.pid = pid;
    s.started_at = t.now();
    s.ready_at = {};
    t.log(LogLevel::debug, "started pid " + std::to_string(pid));
    if (t.policy().ready == ReadyMode::started) {
        t.arm(t.policy().start_time);
    } else if (t.policy().start_timeout.count() > 0) {
        t.arm(t.policy().start_timeout);
    }
}

void on_spawn_failed(Step& t, int error) {
    Slot& s = t.slot();
    if (s.state != SlotState::starting || s.pid != 0) return;
    s.started_at = t.now();
    t.ended(ExitCause::spawn_failed,
            "could not start worker: " + std::error_code(error, std::system_category()).message(),
            LogLevel::critical);
}

void on_ready(Step& t, Duration heartbeat) {
    if (t.slot().state == SlotState::starting && t.slot().pid != 0) t.become_ready(heartbeat);
}

void on_heartbeat(Step& t, const event::Heartbeat& beat) {
    Slot& s = t.slot();
    if (s.state != SlotState::ready) return;
    TimePoint when = beat.at ? std::min(*beat.at, t.now()) : t.now();
    if (beat.at && when <= s.last_heartbeat) return;  // nothing new in the record
    Duration since = std::chrono::duration_cast<Duration>(when - s.last_heartbeat);
    // A heartbeat right after another (one sent with READY=1, say) says nothing of the pace,
    // nor does one read from the scoreboard (only sampled).
    if (!beat.at && since >= t.policy().watchdog / 10) s.heartbeat_interval = since;
    s.last_heartbeat = when;
    if (s.late) {
        s.late = false;
        t.log(LogLevel::warn, "pid " + std::to_string(s.pid) + " heartbeat again after " +
                                  format_duration(since) + ": no longer late");
    }
    if (t.policy().watchdog.count() > 0) t.arm_at(when + late_after(s, t.policy()));
}

void on_exited(Step& t, const ExitStatus& status) {
    Slot& s = t.slot();
    if (s.pid == 0 || (s.state != SlotState::starting && s.state != SlotState::ready &&
                       s.state != SlotState::stopping)) {
        t.log(LogLevel::warn,
              std::string("exit reported while ") + to_string(s.state) + ": ignored, slot reset");
        return;
    }
    s.last_status = status;
    std::string what = "pid " + std::to_string(s.pid) + " " + status.describe() + " after " +
                       uptime_of(s, t.now());
    ExitCause cause;
    LogLevel level;
    if (s.state == SlotState::stopping) {
        cause = s.stop_reason;
        level = cause == ExitCause::requested                               ? LogLevel::info
                : cause == ExitCause::memory || cause == ExitCause::max_age ? LogLevel::warn
                                                                            : LogLevel::error;
        if (cause == ExitCause::memory) what += " (recycled: memory_limit)";
        if (cause == ExitCause::max_age) what += " (recycled: max_age)";
        if (cause == ExitCause::watchdog) what += " (watchdog: no heartbeat)";
        if (cause == ExitCause::start_timeout) what += " (not ready within start_timeout)";
    } else if (status.signaled) {
        cause = ExitCause::crashed;
        level = LogLevel::error;
    } else if (status.code == exit_code::worker_bad_config) {
        cause = ExitCause::bad_config;
        level = LogLevel::error;
    } else {
        cause = ExitCause::exited;
        level = status.code == 0 ? LogLevel::warn : LogLevel::error;
    }
    t.ended(cause, what, level);
}

void on_deadline(Step& t) {
    Slot& s = t.slot();
    if (!s.deadline || t.now() < *s.deadline) return;  // stale timer
    s.deadline.reset();
    const SlotPolicy& p = t.policy();
    std::string pid = "pid " + std::to_string(s.pid);
    switch (s.state) {
        case SlotState::starting:
            if (p.ready == ReadyMode::started) {
                t.become_ready();
            } else {
                t.abandon(p.stop_signal);
                t.ended(ExitCause::start_timeout,
                        pid + " not ready after " + format_duration(p.start_timeout) + ": sent " +
                            signal_name(p.stop_signal) + ", SIGKILL in " +
                            format_duration(p.abort_timeout) + ", not waited for",
                        LogLevel::error);
            }
            break;
        case SlotState::ready: {
            auto silent = std::chrono::duration_cast<Duration>(t.now() - s.last_heartbeat);
            if (!s.late && silent < p.watchdog) {
                s.late = true;
                t.log(LogLevel::warn, pid + " late: no heartbeat for " + format_duration(silent) +
                                          "; new connections go to other workers");
                t.arm(p.watchdog - silent);
                break;
            }
            t.abandon(SIGABRT);
            t.ended(ExitCause::watchdog,
                    pid + " sent no heartbeat for " + format_duration(p.watchdog) +
                        ": sent SIGABRT, SIGKILL in " + format_duration(p.abort_timeout) +
                        ", not waited for",
                    LogLevel::error);
            break;
        }
        case SlotState::stopping:
            t.log(LogLevel::warn, pid + " still running " + format_duration(p.stop_timeout) +
                                      " after " + signal_name(p.stop_signal) + ": sending SIGKILL");
            t.signal(kSigKill);
            break;
        case SlotState::backoff:
            t.spawn();
            break;
        case SlotState::stopped:
        case SlotState::failed:
            break;
    }
}

void on_release(Step& t) {
    t.slot().want_up = false;
    if (t.slot().state == SlotState::backoff) {
        t.slot().state = SlotState::stopped;
        t.disarm();
    }
}

void on_postpone(Step& t, TimePoint at) {
    Slot& s = t.slot();
    if (s.state != SlotState::backoff || (s.deadline && *s.deadline >= at)) return;
    t.arm(std::chrono::ceil<Duration>(at - t.now()));
}

template <class... F>
struct overloaded : F... {
    using F::operator()...;
};

}  // namespace

Transition step(const Slot& slot, const SlotPolicy& policy, const Event& ev, TimePoint now) {
    Step t(slot, policy, now);
    std::visit(overloaded{
                   [&](const event::Start&) { on_start(t); },
                   [&](const event::Stop&) { on_stop(t); },
                   [&](const event::Restart&) { on_restart(t); },
                   [&](const event::Kill&) { on_kill(t); },
                   [&](const event::Spawned& e) { on_spawned(t, e.pid); },
                   [&](const event::SpawnFailed& e) { on_spawn_failed(t, e.error); },
                   [&](const event::Ready& e) { on_ready(t, e.heartbeat); },
                   [&](const event::Heartbeat& e) { on_heartbeat(t, e); },
                   [&](const event::Exited& e) { on_exited(t, e.status); },
                   [&](const event::Deadline&) { on_deadline(t); },
                   [&](const event::Recycle& r) { on_recycle(t, r); },
                   [&](const event::Release&) { on_release(t); },
                   [&](const event::Postpone& e) { on_postpone(t, e.at); },
               },
               ev);
    return t.done();
}

StartOutcome start_outcome(const Slot& s, SlotState before) {
    if (s.state == SlotState::ready && before != SlotState::ready) return StartOutcome::ready;
    // Exited (and respawned) before ready, or stopped for start_timeout, or gone.
    if (s.restarts > 0 || (s.state != SlotState::starting && s.state != SlotState::ready))
        return StartOutcome::failed;
    return StartOutcome::pending;
}

Duration backoff_delay(const BackoffConfig& backoff, int failures) {
    if (failures <= 1) return std::min(backoff.initial, backoff.max);
    Duration d = std::max(backoff.initial, kBackoffBase);
    for (int i = 2; i < failures && d < backoff.max; ++i) d *= 2;
    return std::min(d, backoff.max);
}

Duration late_after(const Slot& s, const SlotPolicy& p) {
    Duration w = p.watchdog;
    Duration expected = s.heartbeat_interval.count() > 0 ? s.heartbeat_interval : w / 2;
    return std::clamp<Duration>(expected * 3 / 2, w / 10, w * 9 / 10);
}

bool coming(const Slot& s, TimePoint now) {
    switch (s.state) {
        case SlotState::starting:
        case SlotState::ready:
            return true;
        case SlotState::stopping:
            return s.want_up;  // a restart: the next one starts as soon as this one is gone
        case SlotState::backoff:
            return s.deadline && *s.deadline <= now + kSoon;
        case SlotState::stopped:
        case SlotState::failed:
            return false;
    }
    return false;
}

ExitStatus ExitStatus::from_wait_status(int status) {
    ExitStatus s;
    if (WIFSIGNALED(status)) {
        s.signaled = true;
        s.code = WTERMSIG(status);
        s.core_dumped = WCOREDUMP(status);
    } else {
        s.code = WEXITSTATUS(status);
    }
    return s;
}

std::string ExitStatus::describe() const {
    if (abandoned) return "sent " + signal_name(code) + ", replaced without waiting";
    if (!signaled) return "exited with code " + std::to_string(code);
    return "killed by " + signal_name(code) + (core_dumped ? " (core dumped)" : "");
}

SlotPolicy SlotPolicy::from(const ProgramConfig& p) {
    SlotPolicy policy;
    policy.restart = p.restart;
    // `listening` is a READY the master derives from the Node channel: the same wait.
    policy.ready = p.ready == ReadyMode::listening ? ReadyMode::notify : p.ready;
    policy.start_time = p.start_time;
    policy.start_timeout = p.start_timeout;
    policy.watchdog = p.watchdog;
    policy.stop_timeout = p.stop_timeout;
    policy.stop_signal = p.stop_signal;
    policy.backoff = p.backoff;
    policy.min_uptime = p.min_uptime;
    policy.abort_timeout = p.abort_timeout;
    return policy;
}

const char* to_string(SlotState state) {
    switch (state) {
        case SlotState::stopped:
            return "stopped";
        case SlotState::starting:
            return "starting";
        case SlotState::ready:
            return "ready";
        case SlotState::stopping:
            return "stopping";
        case SlotState::backoff:
            return "backoff";
        case SlotState::failed:
            return "failed";
    }
    return "?";
}

const char* to_string(ExitCause cause) {
    switch (cause) {
        case ExitCause::none:
            return "none";
        case ExitCause::requested:
            return "requested";
        case ExitCause::exited:
            return "exited";
        case ExitCause::crashed:
            return "crashed";
        case ExitCause::watchdog:
            return "watchdog";
        case ExitCause::start_timeout:
            return "start_timeout";
        case ExitCause::spawn_failed:
            return "spawn_failed";
        case ExitCause::memory:
            return "memory";
        case ExitCause::max_age:
            return "max_age";
        case ExitCause::bad_config:
            return "bad_config";
    }
    return "?";
}

}  // namespace clusterd

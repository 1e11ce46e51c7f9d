// The slot state machine: every state x event cell, then the scenarios that matter
// (backoff on a fake clock, healthy vs failing runs, late heartbeats, the watchdog abandoning a
// hung worker, stop escalation, restart policies).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/exit_codes.hpp"
#include "daemon/policy/slot.hpp"

using namespace clusterd;
using namespace std::chrono_literals;

namespace {

const TimePoint t0 = TimePoint{} + 1000s;

SlotPolicy policy() {
    SlotPolicy p;
    p.watchdog = 10s;
    p.start_timeout = 30s;
    p.stop_timeout = 5s;
    p.backoff = {0ms, 30s};
    p.min_uptime = 1s;
    p.abort_timeout = 2s;
    return p;
}

Slot in_state(SlotState state) {
    Slot s;
    s.state = state;
    switch (state) {
        case SlotState::starting:
            s.want_up = true;
            s.pid = 100;
            s.started_at = t0;
            s.deadline = t0 + 30s;
            break;
        case SlotState::ready:
            s.want_up = true;
            s.pid = 100;
            s.started_at = t0;
            s.ready_at = t0;
            s.last_heartbeat = t0;
            s.deadline = t0 + 10s;
            break;
        case SlotState::stopping:
            s.pid = 100;
            s.started_at = t0;
            s.stop_reason = ExitCause::requested;
            s.deadline = t0 + 5s;
            break;
        case SlotState::backoff:
            s.want_up = true;
            s.failures = 2;
            s.deadline = t0 + 100ms;
            break;
        case SlotState::stopped:
        case SlotState::failed:
            break;
    }
    return s;
}

// A compact signature of an action list: "spawn", "signal:15", "arm", "cancel"; logs left out.
std::vector<std::string> kinds(const std::vector<Action>& actions) {
    std::vector<std::string> out;
    for (const auto& a : actions) {
        if (std::holds_alternative<action::Spawn>(a)) out.push_back("spawn");
        if (auto* s = std::get_if<action::Signal>(&a))
            out.push_back("signal:" + std::to_string(s->sig));
        if (auto* s = std::get_if<action::Abandon>(&a))
            out.push_back("abandon:" + std::to_string(s->sig));
        if (std::holds_alternative<action::ArmDeadline>(a)) out.push_back("arm");
        if (std::holds_alternative<action::CancelDeadline>(a)) out.push_back("cancel");
    }
    return out;
}

bool has_log(const std::vector<Action>& actions, LogLevel level, const std::string& fragment) {
    for (const auto& a : actions)
        if (auto* l = std::get_if<action::Log>(&a))
            if (l->level == level && l->message.find(fragment) != std::string::npos) return true;
    return false;
}

using V = std::vector<std::string>;

struct Cell {
    SlotState state;
    const char* event;
    SlotState next;
    V actions;
};

Event make_event(const std::string& name) {
    if (name == "start") return event::Start{};
    if (name == "stop") return event::Stop{};
    if (name == "restart") return event::Restart{};
    if (name == "kill") return event::Kill{};
    if (name == "spawned") return event::Spawned{200};
    if (name == "spawn_failed") return event::SpawnFailed{12};
    if (name == "ready") return event::Ready{};
    if (name == "heartbeat") return event::Heartbeat{};
    if (name == "exited") return event::Exited{ExitStatus{false, 1, false}};
    if (name == "recycle") return event::Recycle{};
    if (name == "release") return event::Release{};
    if (name == "postpone") return event::Postpone{t0 + 5s};
    return event::Deadline{};
}

// The time each cell happens at: deadlines are due, everything else is early.
TimePoint when(const Slot& s, const std::string& ev) {
    return ev == "deadline" && s.deadline ? *s.deadline : t0 + 1ms;
}

using S = SlotState;
const std::vector<Cell> table = {
    // stopped
    {S::stopped, "start", S::starting, V{"spawn"}},
    {S::stopped, "stop", S::stopped, V{}},
    {S::stopped, "restart", S::starting, V{"spawn"}},
    {S::stopped, "kill", S::stopped, V{}},
    {S::stopped, "spawned", S::stopped, V{}},
    {S::stopped, "spawn_failed", S::stopped, V{}},
    {S::stopped, "ready", S::stopped, V{}},
    {S::stopped, "heartbeat", S::stopped, V{}},
    {S::stopped, "exited", S::stopped, V{}},
    {S::stopped, "deadline", S::stopped, V{}},
    {S::stopped, "recycle", S::stopped, V{}},
    {S::stopped, "release", S::stopped, V{}},
    {S::stopped, "postpone", S::stopped, V{}},
    // starting (pid 100, start_timeout armed)
    {S::starting, "start", S::starting, V{}},
    {S::starting, "stop", S::stopping, V{"signal:15", "arm"}},
    {S::starting, "restart", S::stopping, V{"signal:15", "arm"}},
    {S::starting, "kill", S::stopping, V{"signal:9", "cancel"}},
    {S::starting, "spawned", S::starting, V{}},
    {S::starting, "spawn_failed", S::starting, V{}},
    {S::starting, "ready", S::ready, V{"cancel", "arm"}},
    {S::starting, "heartbeat", S::starting, V{}},
    {S::starting, "exited", S::starting, V{"cancel", "spawn"}},
    // not ready in time: abandoned (TERM now, KILL after abort_timeout), replaced at once
    {S::starting, "deadline", S::starting, V{"abandon:15", "spawn"}},
    {S::starting, "recycle", S::stopping, V{"signal:15", "arm"}},
    {S::starting, "release", S::starting, V{}},
    {S::starting, "postpone", S::starting, V{}},
    // ready (pid 100, watchdog armed)
    {S::ready, "start", S::ready, V{}},
    {S::ready, "stop", S::stopping, V{"signal:15", "arm"}},
    {S::ready, "restart", S::stopping, V{"signal:15", "arm"}},
    {S::ready, "kill", S::stopping, V{"signal:9", "cancel"}},
    {S::ready, "spawned", S::ready, V{}},
    {S::ready, "spawn_failed", S::ready, V{}},
    {S::ready, "ready", S::ready, V{}},
    {S::ready, "heartbeat", S::ready, V{"arm"}},
    {S::ready, "exited", S::starting, V{"cancel", "spawn"}},
    // silent for the whole watchdog: abandoned (ABRT now, KILL after abort_timeout), replaced
    {S::ready, "deadline", S::starting, V{"abandon:6", "spawn"}},
    {S::ready, "recycle", S::stopping, V{"signal:15", "arm"}},
    {S::ready, "release", S::ready, V{}},
    {S::ready, "postpone", S::ready, V{}},
    // stopping (requested, want down, stop_timeout armed)
    {S::stopping, "start", S::stopping, V{}},
    {S::stopping, "stop", S::stopping, V{}},
    {S::stopping, "restart", S::stopping, V{}},
    {S::stopping, "kill", S::stopping, V{"signal:9", "cancel"}},
    {S::stopping, "spawned", S::stopping, V{}},
    {S::stopping, "spawn_failed", S::stopping, V{}},
    {S::stopping, "ready", S::stopping, V{}},
    {S::stopping, "heartbeat", S::stopping, V{}},
    {S::stopping, "exited", S::stopped, V{"cancel"}},
    {S::stopping, "deadline", S::stopping, V{"signal:9"}},
    {S::stopping, "recycle", S::stopping, V{}},
    {S::stopping, "release", S::stopping, V{}},
    {S::stopping, "postpone", S::stopping, V{}},
    // backoff (respawn armed)
    {S::backoff, "start", S::starting, V{"cancel", "spawn"}},
    {S::backoff, "stop", S::stopped, V{"cancel"}},
    {S::backoff, "restart", S::starting, V{"cancel", "spawn"}},
    {S::backoff, "kill", S::stopped, V{"cancel"}},
    {S::backoff, "spawned", S::backoff, V{}},
    {S::backoff, "spawn_failed", S::backoff, V{}},
    {S::backoff, "ready", S::backoff, V{}},
    {S::backoff, "heartbeat", S::backoff, V{}},
    {S::backoff, "exited", S::backoff, V{}},
    {S::backoff, "deadline", S::starting, V{"spawn"}},
    {S::backoff, "recycle", S::stopped, V{"cancel"}},
    {S::backoff, "release", S::stopped, V{"cancel"}},
    {S::backoff, "postpone", S::backoff, V{"arm"}},
    // failed
    {S::failed, "start", S::starting, V{"spawn"}},
    {S::failed, "stop", S::failed, V{}},
    {S::failed, "restart", S::starting, V{"spawn"}},
    {S::failed, "kill", S::failed, V{}},
    {S::failed, "spawned", S::failed, V{}},
    {S::failed, "spawn_failed", S::failed, V{}},
    {S::failed, "ready", S::failed, V{}},
    {S::failed, "heartbeat", S::failed, V{}},
    {S::failed, "exited", S::failed, V{}},
    {S::failed, "deadline", S::failed, V{}},
    {S::failed, "recycle", S::failed, V{}},
    {S::failed, "release", S::failed, V{}},
    {S::failed, "postpone", S::failed, V{}},
};

}  // namespace

TEST_CASE("slot: every state x event cell") {
    CHECK(table.size() == 6 * 13);
    for (const auto& cell : table) {
        Slot s = in_state(cell.state);
        Transition t = step(s, policy(), make_event(cell.event), when(s, cell.event));
        INFO(to_string(cell.state), " + ", cell.event);
        CHECK(to_string(t.next.state) == std::string(to_string(cell.next)));
        CHECK(kinds(t.actions) == cell.actions);
    }
}

TEST_CASE("slot: an exit in a state without a worker is logged and ignored") {
    for (S state : {S::stopped, S::backoff, S::failed}) {
        Transition t = step(in_state(state), policy(), event::Exited{}, t0);
        CHECK(t.next.state == state);
        CHECK(has_log(t.actions, LogLevel::warn, "ignored"));
    }
}

TEST_CASE("slot: a crash loop backs off exponentially up to max, on a fake clock") {
    SlotPolicy p = policy();
    p.watchdog = 0ms;
    p.backoff = {0ms, 1s};
    Slot s = step(Slot{}, p, event::Start{}, t0).next;
    TimePoint now = t0;
    std::vector<long> delays;
    for (int i = 0; i < 7; ++i) {
        s = step(s, p, event::Spawned{100 + i}, now).next;
        now += 5ms;
        Transition t = step(s, p, event::Exited{ExitStatus{true, 11, false}}, now);
        s = t.next;
        CHECK(s.last_cause == ExitCause::crashed);
        CHECK(has_log(t.actions, LogLevel::error, "killed by SIGSEGV"));
        delays.push_back(static_cast<long>(s.last_backoff.count()));
        if (s.state == S::backoff) {
            now = *s.deadline;
            s = step(s, p, event::Deadline{}, now).next;
        }
        CHECK(s.state == S::starting);
    }
    CHECK(delays == std::vector<long>{0, 100, 200, 400, 800, 1000, 1000});
    CHECK(s.restarts == 7);
}

TEST_CASE("slot: a healthy run (ready for min_uptime) restarts at once, the count afresh") {
    SlotPolicy p = policy();
    p.watchdog = 0ms;
    Slot s = in_state(S::ready);
    s.failures = 5;
    Transition t = step(s, p, event::Exited{ExitStatus{true, 9, false}}, t0 + 1s);
    CHECK(t.next.failures == 0);
    CHECK(t.next.state == S::starting);
    CHECK(kinds(t.actions) == V{"cancel", "spawn"});
    CHECK(has_log(t.actions, LogLevel::error, "healthy run"));
    // Killed just before min_uptime: a failing run, backed off by the count.
    t = step(s, p, event::Exited{ExitStatus{true, 9, false}}, t0 + 999ms);
    CHECK(t.next.failures == 6);
    CHECK(t.next.state == S::backoff);
    CHECK(t.next.last_backoff == 1600ms);
    CHECK(has_log(t.actions, LogLevel::error, "failing run"));
    // Never ready: failing, however long it ran.
    Slot starting = in_state(S::starting);
    starting.failures = 1;
    t = step(starting, p, event::Exited{ExitStatus{false, 1, false}}, t0 + 10min);
    CHECK(t.next.failures == 2);
    CHECK(t.next.state == S::backoff);
}

TEST_CASE(
    "slot: healthy and failing runs on a fake clock: kills of healthy workers never back off") {
    SlotPolicy p = policy();
    p.watchdog = 0ms;
    p.backoff = {0ms, 5s};
    Slot s = step(Slot{}, p, event::Start{}, t0).next;
    TimePoint now = t0;
    // 100 kills, each 1.2 s after ready: every restart is immediate.
    for (int i = 0; i < 100; ++i) {
        s = step(s, p, event::Spawned{1000 + i}, now).next;
        now += 5ms;
        s = step(s, p, event::Ready{}, now).next;
        now += 1200ms;
        Transition t = step(s, p, event::Exited{ExitStatus{true, 9, false}}, now);
        s = t.next;
        REQUIRE(s.state == S::starting);
        CHECK(s.failures == 0);
    }
    // Then a storm: killed 5 ms after ready, again and again. Delays grow to the cap.
    std::vector<long> delays;
    for (int i = 0; i < 9; ++i) {
        s = step(s, p, event::Spawned{2000 + i}, now).next;
        s = step(s, p, event::Ready{}, now).next;
        now += 5ms;
        s = step(s, p, event::Exited{ExitStatus{true, 9, false}}, now).next;
        delays.push_back(static_cast<long>(s.last_backoff.count()));
        if (s.state == S::backoff) {
            now = *s.deadline;
            s = step(s, p, event::Deadline{}, now).next;
        }
        REQUIRE(s.state == S::starting);
    }
    CHECK(delays == std::vector<long>{0, 100, 200, 400, 800, 1600, 3200, 5000, 5000});
    // One healthy run wipes it all.
    s = step(s, p, event::Spawned{3000}, now).next;
    s = step(s, p, event::Ready{}, now).next;
    s = step(s, p, event::Exited{ExitStatus{true, 9, false}}, now + 1s).next;
    CHECK(s.state == S::starting);
    CHECK(s.failures == 0);
}

TEST_CASE("slot: a clean exit also counts towards the backoff under restart: always") {
    Slot s = in_state(S::ready);
    s.failures = 1;
    Transition t = step(s, policy(), event::Exited{ExitStatus{false, 0, false}}, t0 + 500ms);
    CHECK(t.next.state == S::backoff);
    CHECK(t.next.last_backoff == 100ms);
}

TEST_CASE("slot: the bad-configuration exit code fails the slot instead of respawning") {
    Transition t =
        step(in_state(S::ready), policy(),
             event::Exited{ExitStatus{false, exit_code::worker_bad_config, false}}, t0 + 1s);
    CHECK(t.next.state == S::failed);
    CHECK(t.next.last_cause == ExitCause::bad_config);
    CHECK(kinds(t.actions) == V{"cancel"});
    CHECK(has_log(t.actions, LogLevel::error, "not restarting, slot failed"));
}

TEST_CASE("slot: restart policies never and on-failure") {
    SlotPolicy p = policy();
    p.restart = RestartMode::never;
    Transition t = step(in_state(S::ready), p, event::Exited{ExitStatus{true, 9, false}}, t0);
    CHECK(t.next.state == S::stopped);
    CHECK_FALSE(t.next.want_up);

    p.restart = RestartMode::on_failure;
    t = step(in_state(S::ready), p, event::Exited{ExitStatus{false, 0, false}}, t0);
    CHECK(t.next.state == S::stopped);
    t = step(in_state(S::ready), p, event::Exited{ExitStatus{false, 3, false}}, t0);
    CHECK(t.next.state == S::starting);
}

TEST_CASE("slot: watchdog: a late heartbeat marks the worker late, silence abandons it") {
    SlotPolicy p = policy();  // watchdog 10s
    Slot s = step(Slot{}, p, event::Start{}, t0).next;
    s = step(s, p, event::Spawned{100}, t0).next;
    Transition t = step(s, p, event::Ready{}, t0);
    s = t.next;
    CHECK(*s.deadline == t0 + 7500ms);  // pace unknown: 1.5 x half the watchdog
    // Heartbeats every second: late once 1.5 s pass without one.
    for (int i = 1; i <= 5; ++i) s = step(s, p, event::Heartbeat{}, t0 + i * 1s).next;
    CHECK(s.heartbeat_interval == 1s);
    CHECK(*s.deadline == t0 + 6500ms);
    CHECK(step(s, p, event::Deadline{}, t0 + 6s).actions.empty());  // a stale timer
    t = step(s, p, event::Deadline{}, t0 + 6500ms);
    CHECK(t.next.state == S::ready);
    CHECK(t.next.late);
    CHECK(*t.next.deadline == t0 + 15s);  // the watchdog itself
    CHECK(has_log(t.actions, LogLevel::warn, "late: no heartbeat for 1.5s"));
    // A heartbeat in time clears it.
    Transition back = step(t.next, p, event::Heartbeat{}, t0 + 7s);
    CHECK_FALSE(back.next.late);
    CHECK(has_log(back.actions, LogLevel::warn, "heartbeat again"));
    // Silence for the whole watchdog: ABRT (and KILL after abort_timeout, the supervisor's
    // part), and the slot goes on at once: a healthy run up to its last heartbeat.
    t = step(t.next, p, event::Deadline{}, t0 + 15s);
    CHECK(t.next.state == S::starting);
    CHECK(t.next.pid == 0);
    CHECK(t.next.last_cause == ExitCause::watchdog);
    CHECK(t.next.failures == 0);
    CHECK(t.next.last_status.describe() == "sent SIGABRT, replaced without waiting");
    CHECK(kinds(t.actions) == V{"abandon:6", "spawn"});
    auto* ab = std::get_if<action::Abandon>(&t.actions.front());
    REQUIRE(ab != nullptr);
    CHECK(ab->grace == 2s);
    // The abandoned pid's exit is not the slot's business any more.
    Transition stale = step(t.next, p, event::Exited{ExitStatus{true, 6, true}}, t0 + 16s);
    CHECK(stale.next.state == S::starting);
    CHECK(stale.next.restarts == t.next.restarts);
}

TEST_CASE("slot: a heartbeat pace announced with READY counts from the start") {
    SlotPolicy p = policy();  // watchdog 10s
    Slot s = step(Slot{}, p, event::Start{}, t0).next;
    s = step(s, p, event::Spawned{100}, t0).next;
    s = step(s, p, event::Ready{1s}, t0).next;
    CHECK(*s.deadline == t0 + 1500ms);
}

TEST_CASE("slot: a released worker is aborted by its watchdog and not restarted") {
    SlotPolicy p = policy();
    Slot s = in_state(S::ready);
    s.late = true;
    s = step(s, p, event::Release{}, t0 + 8s).next;
    CHECK_FALSE(s.want_up);
    CHECK(s.state == S::ready);
    Transition t = step(s, p, event::Deadline{}, t0 + 10s);
    CHECK(t.next.state == S::stopped);
    CHECK(kinds(t.actions) == V{"abandon:6"});
}

TEST_CASE("slot: not ready within start_timeout: abandoned and replaced, a failing run") {
    SlotPolicy p = policy();
    Slot s = in_state(S::starting);
    s.failures = 3;
    Transition t = step(s, p, event::Deadline{}, t0 + 30s);
    CHECK(t.next.state == S::backoff);
    CHECK(t.next.failures == 4);
    CHECK(t.next.last_cause == ExitCause::start_timeout);
    CHECK(kinds(t.actions) == V{"abandon:15", "arm"});
}

TEST_CASE("slot: postpone only moves a backoff later") {
    Slot s = in_state(S::backoff);  // due at t0 + 100ms
    Transition t = step(s, policy(), event::Postpone{t0 + 50ms}, t0);
    CHECK(*t.next.deadline == t0 + 100ms);
    CHECK(t.actions.empty());
    t = step(s, policy(), event::Postpone{t0 + 900ms}, t0);
    CHECK(*t.next.deadline == t0 + 900ms);
    CHECK(step(t.next, policy(), event::Deadline{}, t0 + 100ms).actions.empty());
    CHECK(step(t.next, policy(), event::Deadline{}, t0 + 900ms).next.state == S::starting);
}

TEST_CASE("late_after: 1.5 heartbeat intervals, within a tenth and nine tenths of the watchdog") {
    SlotPolicy p = policy();  // watchdog 10s
    Slot s;
    CHECK(late_after(s, p) == 7500ms);
    s.heartbeat_interval = 1s;
    CHECK(late_after(s, p) == 1500ms);
    s.heartbeat_interval = 100ms;
    CHECK(late_after(s, p) == 1s);
    s.heartbeat_interval = 8s;
    CHECK(late_after(s, p) == 9s);
}

TEST_CASE("coming: who a client should wait for") {
    CHECK(coming(in_state(S::starting), t0));
    CHECK(coming(in_state(S::ready), t0));
    CHECK_FALSE(coming(in_state(S::stopping), t0));  // stopping for good
    Slot restarting = in_state(S::stopping);
    restarting.want_up = true;
    CHECK(coming(restarting, t0));
    Slot b = in_state(S::backoff);  // due at t0 + 100ms
    CHECK(coming(b, t0));
    b.deadline = t0 + 2s;
    CHECK_FALSE(coming(b, t0));
    CHECK_FALSE(coming(b, t0 + 1800ms));
    CHECK(coming(b, t0 + 1900ms));
    CHECK_FALSE(coming(in_state(S::failed), t0));
    CHECK_FALSE(coming(in_state(S::stopped), t0));
}

TEST_CASE("slot: requested stop is logged at info and leaves the slot stopped") {
    Slot s = step(in_state(S::ready), policy(), event::Stop{}, t0).next;
    Transition t = step(s, policy(), event::Exited{ExitStatus{false, 0, false}}, t0 + 1s);
    CHECK(t.next.state == S::stopped);
    CHECK(t.next.last_cause == ExitCause::requested);
    CHECK(t.next.failures == 0);
    CHECK(has_log(t.actions, LogLevel::info, "stopped"));
}

TEST_CASE("slot: restart stops the worker and starts a new one without backoff") {
    Slot s = step(in_state(S::ready), policy(), event::Restart{}, t0).next;
    CHECK(s.state == S::stopping);
    Transition t = step(s, policy(), event::Exited{ExitStatus{false, 0, false}}, t0 + 1s);
    CHECK(t.next.state == S::starting);
    CHECK(kinds(t.actions) == V{"cancel", "spawn"});
}

TEST_CASE("slot: a recycled worker stops for good with cause memory, logged as a warning") {
    Slot s = step(in_state(S::ready), policy(), event::Recycle{}, t0).next;
    CHECK(s.stop_reason == ExitCause::memory);
    Transition t = step(s, policy(), event::Exited{ExitStatus{false, 0, false}}, t0 + 1s);
    CHECK(t.next.state == S::stopped);
    CHECK(t.next.last_cause == ExitCause::memory);
    CHECK(has_log(t.actions, LogLevel::warn, "recycled: memory_limit"));
}

TEST_CASE("slot: ready: started becomes ready after start_time") {
    SlotPolicy p = policy();
    p.ready = ReadyMode::started;
    p.start_time = 1s;
    p.watchdog = 0ms;
    Slot s = step(Slot{}, p, event::Start{}, t0).next;
    s = step(s, p, event::Spawned{42}, t0).next;
    CHECK(*s.deadline == t0 + 1s);
    Transition t = step(s, p, event::Deadline{}, t0 + 1s);
    CHECK(t.next.state == S::ready);
    CHECK(kinds(t.actions).empty());
}

TEST_CASE("slot: a failed spawn backs off like a crash") {
    Slot s = step(Slot{}, policy(), event::Start{}, t0).next;
    Transition t = step(s, policy(), event::SpawnFailed{12}, t0);
    CHECK(t.next.last_cause == ExitCause::spawn_failed);
    CHECK(has_log(t.actions, LogLevel::critical, "could not start worker"));
    CHECK(t.next.state == S::starting);  // first failure: at once
    t = step(t.next, policy(), event::SpawnFailed{12}, t0);
    CHECK(t.next.state == S::backoff);
}

TEST_CASE("backoff_delay: initial first, then doubling from 100ms, capped") {
    BackoffConfig b{0ms, 1s};
    CHECK(backoff_delay(b, 1) == 0ms);
    CHECK(backoff_delay(b, 2) == 100ms);
    CHECK(backoff_delay(b, 3) == 200ms);
    CHECK(backoff_delay(b, 10) == 1s);
    BackoffConfig slow{2s, 30s};
    CHECK(backoff_delay(slow, 1) == 2s);
    CHECK(backoff_delay(slow, 2) == 2s);
    CHECK(backoff_delay(slow, 3) == 4s);
    CHECK(backoff_delay(slow, 100) == 30s);
}

TEST_CASE("ExitStatus describes exits and signals") {
    CHECK(ExitStatus{false, 3, false}.describe() == "exited with code 3");
    CHECK(ExitStatus{true, 11, true}.describe() == "killed by SIGSEGV (core dumped)");
}

TEST_CASE("start_outcome: ready, still starting, or failed to come up") {
    Slot starting = in_state(S::starting);
    CHECK(start_outcome(starting, S::stopped) == StartOutcome::pending);
    CHECK(start_outcome(in_state(S::ready), S::starting) == StartOutcome::ready);
    CHECK(start_outcome(in_state(S::ready), S::ready) == StartOutcome::pending);  // a heartbeat
    starting.restarts = 1;  // exited before ready and was respawned
    CHECK(start_outcome(starting, S::starting) == StartOutcome::failed);
    CHECK(start_outcome(in_state(S::stopping), S::starting) == StartOutcome::failed);
    CHECK(start_outcome(in_state(S::backoff), S::starting) == StartOutcome::failed);
}

// Faults that keep coming: deadlines, hung workers and their spares, restarts paced while
// nothing serves, the door, a flood of worker events logged as a summary, memory recycling
// and the steering of new connections to ready slots.

#include <signal.h>

#include <spdlog/spdlog.h>
#include <algorithm>

#include "common/duration.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

namespace {

spdlog::level::level_enum to_spdlog(LogLevel level) {
    switch (level) {
        case LogLevel::debug:
            return spdlog::level::debug;
        case LogLevel::info:
            return spdlog::level::info;
        case LogLevel::warn:
            return spdlog::level::warn;
        case LogLevel::error:
            return spdlog::level::err;
        case LogLevel::critical:
            return spdlog::level::critical;
    }
    return spdlog::level::info;
}

}  // namespace

// ---- faults that keep coming: deadlines, hung workers, pacing, the door ----

void Supervisor::Impl::on_deadline(Worker* w) {
    Program& prog = *w->program;
    const Slot& s = w->sm;
    TimePoint now = this->now();
    auto index = static_cast<std::size_t>(w->slot);
    bool current = index < prog.slots.size() && prog.slots[index] == w;
    // While nothing of the program serves, one restart per kProbeInterval: hold the others.
    if (s.state == SlotState::backoff && current && !stopping)
        if (auto until = pacing::hold(prog.pace, now)) return dispatch(w, event::Postpone{*until});
    // The watchdog is about to abort a late worker whose spare is still starting: the spare
    // takes the slot now.
    if (s.state == SlotState::ready && s.late && replacement_of(*w) && s.deadline &&
        now >= *s.deadline)
        promote_spare(w);
    dispatch(w, event::Deadline{});
}

std::vector<const Slot*> Program::slot_states() const {
    std::vector<const Slot*> out;
    out.reserve(slots.size());
    for (const Worker* w : slots) out.push_back(&w->sm);
    return out;
}

std::optional<TimePoint> Supervisor::Impl::next_try(const Worker& w) const {
    const Program& prog = *w.program;
    auto index = static_cast<std::size_t>(w.slot);
    if (index >= prog.slots.size() || prog.slots[index] != &w) return std::nullopt;
    return pacing::next_try(prog.pace, prog.slot_states(), index);
}

void Supervisor::Impl::abandon(Worker* w, pid_t pid, int sig, Duration grace) {
    if (pid <= 0) return;
    exec.kill(pid, sig);
    // A stopped process gets its signal (and dumps core) only once continued.
    if (exec.kill(-pid, SIGCONT) != 0) exec.kill(pid, SIGCONT);
    auto a = std::make_unique<Abandoned>(exec);
    a->label = label(w);
    a->since = now();
    abandoned[pid] = std::move(a);
    arm_abandoned(pid, now() + grace);
}

// ---- replace-then-drain ----

Worker* Supervisor::Impl::start_replacement(Program& prog, int slot,
                                            std::shared_ptr<const ProgramSpec> spec, Replace why,
                                            const Worker* old) {
    Worker* w = add_worker(prog, slot, std::move(spec), prog.sockets.for_slot(slot));
    w->replacing = Replacement{why, old ? old->id : 0};
    if (old) replacements[old->id] = w->id;
    return w;
}

Worker* Supervisor::Impl::replacement_of(const Worker& w) const {
    auto it = replacements.find(w.id);
    if (it == replacements.end()) return nullptr;
    auto nw = workers.find(it->second);
    return nw == workers.end() ? nullptr : nw->second.get();
}

void Supervisor::Impl::take_slot(Worker* w, Worker* old, Replace why) {
    Program& prog = *w->program;
    prog.slots[static_cast<std::size_t>(w->slot)] = w;
    old->retiring = true;
    abandon_wait(old, "replaced before it was ready");
    switch (why) {
        case Replace::roll:
            return dispatch(old, event::Stop{});
        case Replace::memory:
            return dispatch(old, event::Recycle{ExitCause::memory});
        case Replace::age:
            return dispatch(old, event::Recycle{ExitCause::max_age});
        case Replace::late:
            w->sm.restarts = old->sm.restarts + 1;
            return dispatch(old, event::Release{});
    }
}

void Supervisor::Impl::start_spare(Worker* w) {
    Program& prog = *w->program;
    Worker* spare = start_replacement(prog, w->slot, prog.spec, Replace::late, w);
    spdlog::warn("{}: pid {} is late: starting a spare on its sockets", label(w), w->sm.pid);
    dispatch(spare, event::Start{});
}

void Supervisor::Impl::promote_spare(Worker* late) {
    Program& prog = *late->program;
    Worker* spare = replacement_of(*late);
    replacements.erase(late->id);
    if (!spare) return;
    spare->replacing.reset();
    auto index = static_cast<std::size_t>(late->slot);
    if (index >= prog.slots.size() || prog.slots[index] != late) {
        // The slot went on without the late worker (scaled away, rolled, removed): its
        // spare has nothing to take over.
        spare->retiring = true;
        return dispatch(spare, event::Stop{});
    }
    spdlog::warn("{}: spare pid {} takes over from hung pid {}", label(spare), spare->sm.pid,
                 late->sm.pid);
    take_slot(spare, late, Replace::late);
}

// Restarts while no worker of the program is ready, and the door: decided by pacing::, done
// here (see daemon/policy/pacing.hpp).
void Supervisor::Impl::pace(Program& prog) {
    if (stopping || prog.removed) return;
    pacing::Plan plan =
        pacing::after_change(prog.pace, prog.slot_states(), prog.rollout.has_value(), now());
    if (!plan.wake.empty()) {
        spdlog::info("{}: a worker is ready again: {} slot{} in backoff retry now", prog.name,
                     plan.wake.size(), plan.wake.size() == 1 ? "" : "s");
        std::vector<std::uint64_t> ids;
        for (auto k : plan.wake) ids.push_back(prog.slots[k]->id);
        for (auto id : ids)
            if (auto it = workers.find(id); it != workers.end())
                dispatch(it->second.get(), event::Start{});
    }
    if (!plan.probe) return;
    if (!prog.probe_timer) prog.probe_timer = exec.make_timer();
    std::string name = prog.name;
    prog.probe_timer->arm(*plan.probe, [this, name] {
        Program* p = find_program(name);
        if (!p || stopping) return;
        if (auto k = pacing::probe_pick(p->pace, p->slot_states()))
            dispatch(p->slots[*k], event::Start{});
    });
}

// The door: while no worker of the program is ready, starting, or due within kSoon, its
// sockets are shut and a client is refused at once. They listen again right before the next
// spawn (do_spawn), not earlier: a client never waits for a start that has not begun.
void Supervisor::Impl::update_door(Program& prog) {
    if (prog.removed || stopping || prog.sockets.empty()) return;
    std::vector<const Slot*> all;
    for (const auto& [id, w] : workers)
        if (w->program == &prog) all.push_back(&w->sm);
    pacing::Door door = pacing::door(prog.pace, all, now());
    if (door == pacing::Door::open && prog.sockets.is_shut()) {
        open_door(prog);
    } else if (door == pacing::Door::shut && !prog.sockets.is_shut()) {
        prog.sockets.shut();
        prog.steered.reset();
        // Said once per outage; the probes' brief openings in between are debug lines.
        if (!prog.refusing) {
            prog.refusing = true;
            spdlog::warn("{}: no worker can serve: refusing connections until one is ready",
                         prog.name);
        } else {
            spdlog::debug("{}: refusing connections again", prog.name);
        }
    }
    if (prog.refusing && prog.pace.serving) {
        prog.refusing = false;
        spdlog::info("{}: a worker is ready: accepting connections again", prog.name);
    }
}

void Supervisor::Impl::open_door(Program& prog) {
    prog.sockets.open();
    prog.steered.reset();
    spdlog::debug("{}: listening again for a starting worker", prog.name);
    resteer(prog);
}

// A flood of worker events (a crash loop, a kill storm) is logged as one summary line per
// kLogWindow once kLogBurst lines of a window are out.
namespace {
constexpr Duration kLogWindow{5000};
constexpr int kLogBurst = 10;
}  // namespace

void Supervisor::Impl::log_event(Worker* w, LogLevel level, const std::string& message) {
    Program& p = *w->program;
    if (level == LogLevel::debug) return spdlog::debug("{}: {}", label(w), message);
    TimePoint now = this->now();
    if (now - p.log_window_start >= kLogWindow) {
        flush_log_summary(p);
        p.log_window_start = now;
        p.log_lines = 0;
    }
    if (p.log_lines < kLogBurst) {
        ++p.log_lines;
        return spdlog::log(to_spdlog(level), "{}: {}", label(w), message);
    }
    if (p.log_suppressed++ > 0) return;
    if (!p.log_timer) p.log_timer = exec.make_timer();
    std::string name = p.name;
    p.log_timer->arm(p.log_window_start + kLogWindow, [this, name] {
        if (Program* prog = find_program(name)) {
            flush_log_summary(*prog);
            // Still flooding: the next window starts with its budget spent.
            prog->log_window_start = this->now();
            prog->log_lines = kLogBurst;
        }
    });
}

void Supervisor::Impl::flush_log_summary(Program& p) {
    if (p.log_suppressed == 0) return;
    std::string causes;
    for (const auto& [cause, n] : p.exits)
        causes +=
            (causes.empty() ? "" : ", ") + std::string(to_string(cause)) + " " + std::to_string(n);
    int ready = 0;
    for (const Worker* w : p.slots) ready += w->sm.state == SlotState::ready;
    spdlog::warn(
        "{}: {} more worker events in the last {} not logged one by one; {}/{} ready; "
        "exits since start: {}",
        p.name, p.log_suppressed,
        format_duration(std::chrono::duration_cast<Duration>(now() - p.log_window_start)), ready,
        p.slots.size(), causes);
    p.log_suppressed = 0;
}

// ---- memory_limit: a worker past it is replaced (new one first) and drains ----

// Polls RSS once a second, and only while some program sets a memory_limit.
void Supervisor::Impl::arm_memory_check() {
    bool wanted = std::any_of(programs.begin(), programs.end(), [](const auto& p) {
        return !p->removed && p->spec->config.memory_limit > 0;
    });
    if (!wanted || memory_timer_armed || stopping) return;
    memory_timer_armed = true;
    memory_timer->arm(now() + std::chrono::seconds(1), [this] {
        memory_timer_armed = false;
        check_memory();
        arm_memory_check();
    });
}

void Supervisor::Impl::check_memory() {
    std::vector<std::pair<Worker*, std::uint64_t>> over;
    for (const auto& prog : programs) {
        std::uint64_t limit = prog->spec->config.memory_limit;
        if (limit == 0 || prog->removed || prog->rollout) continue;
        for (Worker* w : prog->slots) {
            if (w->sm.state != SlotState::ready || replacement_of(*w)) continue;
            auto stats = exec.figures(w->sm.pid);
            if (stats && stats->rss_bytes > limit) over.emplace_back(w, stats->rss_bytes);
        }
    }
    for (auto [w, rss] : over) recycle(w, rss);
}

void Supervisor::Impl::recycle(Worker* w, std::uint64_t rss) {
    Program& prog = *w->program;
    spdlog::warn("{}: pid {} uses {} MiB, over memory_limit {} MiB: starting its replacement",
                 label(w), w->sm.pid, rss >> 20, prog.spec->config.memory_limit >> 20);
    emit("recycled", &prog, w, w->sm.pid,
         "pid " + std::to_string(w->sm.pid) + " uses " + std::to_string(rss >> 20) +
             " MiB, over memory_limit: its replacement starts",
         {{"cause", "memory"}, {"rss_bytes", rss}});
    dispatch(start_replacement(prog, w->slot, prog.spec, Replace::memory, w), event::Start{});
}

// The replacement of a recycled or late worker is up (it takes the slot; the old one drains
// with cause "memory", or is released) or failed to come up (the old one stays; the next
// check tries again).
void Supervisor::Impl::replacement_changed(Worker* w, SlotState before) {
    const Slot& s = w->sm;
    StartOutcome outcome = start_outcome(s, before);
    if (outcome == StartOutcome::pending) return;
    bool ready = outcome == StartOutcome::ready;
    Replacement r = *w->replacing;
    w->replacing.reset();
    auto it = workers.find(r.old_id);
    Worker* old = it == workers.end() ? nullptr : it->second.get();
    if (auto m = replacements.find(r.old_id); m != replacements.end() && m->second == w->id)
        replacements.erase(m);
    Program& prog = *w->program;
    auto index = static_cast<std::size_t>(w->slot);
    bool late_spare = r.why == Replace::late;
    // The slot may have been scaled away, stopped or handed to another worker meanwhile; a
    // late worker may have heartbeaten again.
    bool still_wanted = !prog.removed && index < prog.slots.size() && old &&
                        prog.slots[index] == old && old->sm.want_up &&
                        (!late_spare || old->sm.late);
    if (!ready || !still_wanted) {
        if (late_spare && ready && old)
            spdlog::info("{}: pid {} heartbeats again: its spare pid {} is not needed, stopping it",
                         label(w), old->sm.pid, w->sm.pid);
        else
            spdlog::error("{}: the replacement for {} did not come up; keeping pid {}", label(w),
                          late_spare              ? "a late worker"
                          : r.why == Replace::age ? "max_age recycling"
                                                  : "memory recycling",
                          old ? old->sm.pid : 0);
        w->retiring = true;
        if (r.why == Replace::age && old && old->age_timer && !ready) {
            std::uint64_t id = old->id;
            pid_t pid = old->sm.pid;
            old->age_timer->arm(now() + kAgeRetryAfterFailure, [this, id, pid] {
                auto it = workers.find(id);
                if (it != workers.end() && it->second->sm.pid == pid)
                    recycle_for_age(it->second.get());
            });
        }
        return dispatch(w, event::Stop{});
    }
    if (late_spare)
        spdlog::warn(
            "{}: spare pid {} ready: takes over from late pid {} (aborted if it sends "
            "no heartbeat within its watchdog, stopped if it does)",
            label(w), w->sm.pid, old->sm.pid);
    take_slot(w, old, r.why);
}

// New connections go only to slots whose worker is ready (all of them when none is): a
// slot whose worker crashed keeps what is already queued for its replacement, but gets
// nothing new while it waits out its backoff; a slot being scaled away gets nothing new.
void Supervisor::Impl::resteer(Program& prog, bool check) {
    if (prog.sockets.is_shut()) return;
    if (check && !prog.steered) check_listeners(prog);
    // Ready and on time; else ready or starting (a late one beats none); else every slot.
    std::vector<int> live;
    for (const Worker* w : prog.slots)
        if (w->sm.state == SlotState::ready && !w->sm.late) live.push_back(w->slot);
    if (live.empty())
        for (const Worker* w : prog.slots)
            if (w->sm.state == SlotState::ready || w->sm.state == SlotState::starting)
                live.push_back(w->slot);
    if (prog.steered == live) return;
    prog.steered = live;
    std::string problem = prog.sockets.steer(live);
    if (!problem.empty())
        spdlog::warn("{}: {}new connections may wait on a slot without a worker", prog.name,
                     problem);
}

// ---- max_age: a worker that old is replaced (new one first), one slot at a time ----

void Supervisor::Impl::arm_age(Worker* w) {
    const ProgramConfig& pc = w->spec->config;
    if (pc.max_age.count() <= 0 || w->sm.state != SlotState::ready) {
        if (w->age_timer) w->age_timer->cancel();  // switched off by a reload
        return;
    }
    // Slot i of n comes due jitter * i / n early: slots started together never come due
    // together.
    auto n = static_cast<long long>(std::max<std::size_t>(w->program->slots.size(), 1));
    Duration early{pc.max_age_jitter.count() * (w->slot % n) / n};
    TimePoint due = w->sm.started_at + pc.max_age - early;
    if (!w->age_timer) w->age_timer = exec.make_timer();
    std::uint64_t id = w->id;
    pid_t pid = w->sm.pid;
    w->age_timer->arm(std::max(due, now()), [this, id, pid] {
        auto it = workers.find(id);
        if (it != workers.end() && it->second->sm.pid == pid) recycle_for_age(it->second.get());
    });
}

void Supervisor::Impl::recycle_for_age(Worker* w) {
    Program& prog = *w->program;
    auto index = static_cast<std::size_t>(w->slot);
    bool current = index < prog.slots.size() && prog.slots[index] == w;
    if (!current || w->sm.state != SlotState::ready || !w->sm.want_up || prog.removed || stopping ||
        w->spec->config.max_age.count() <= 0)
        return;
    // One slot at a time, and never while an operation (a roll, a scale) or another
    // replacement (its own late spare or memory replacement included) runs, nor while a
    // worker replaced or scaled away still drains: its turn comes again shortly.
    bool busy = prog.rollout.has_value() || replacement_of(*w) ||
                std::any_of(workers.begin(), workers.end(), [&](const auto& kv) {
                    const Worker& o = *kv.second;
                    return o.program == &prog && (o.replacing || (o.retiring && o.sm.pid != 0));
                });
    if (busy) {
        std::uint64_t id = w->id;
        pid_t pid = w->sm.pid;
        w->age_timer->arm(now() + kAgeRetry, [this, id, pid] {
            auto it = workers.find(id);
            if (it != workers.end() && it->second->sm.pid == pid) recycle_for_age(it->second.get());
        });
        return;
    }
    auto age = std::chrono::duration_cast<Duration>(now() - w->sm.started_at);
    spdlog::info("{}: pid {} is {} old (max_age {}): starting its replacement", label(w), w->sm.pid,
                 format_duration(age), format_duration(prog.spec->config.max_age));
    emit("recycled", &prog, w, w->sm.pid,
         "pid " + std::to_string(w->sm.pid) + " is " + format_duration(age) +
             " old, past max_age: its replacement starts",
         {{"cause", "max_age"}});
    dispatch(start_replacement(prog, w->slot, prog.spec, Replace::age, w), event::Start{});
}

}  // namespace clusterd

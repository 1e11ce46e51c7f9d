// The one dispatch: every event for a slot (a child exit, a notify datagram, a deadline, a
// command) runs the pure state machine (policy/slot.hpp) and performs the actions it returns.

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <charconv>
#include <cstring>

#include "common/duration.hpp"
#include "common/signals.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

namespace {

std::vector<int> allowed_cpus() {
    std::vector<int> cpus;
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
        for (int i = 0; i < CPU_SETSIZE; ++i)
            if (CPU_ISSET(i, &set)) cpus.push_back(i);
    return cpus;
}

bool gone(const Slot& s) {
    return s.pid == 0 && (s.state == SlotState::stopped || s.state == SlotState::failed);
}

}  // namespace

// ---- the one dispatch ----

void Supervisor::Impl::dispatch(Worker* w, Event ev) {
    SlotState before = w->sm.state;
    bool late_before = w->sm.late;
    bool want_before = w->sm.want_up;
    pid_t pid_before = w->sm.pid;
    bool beat = std::holds_alternative<event::Heartbeat>(ev);
    std::vector<Event> pending{std::move(ev)};
    for (std::size_t i = 0; i < pending.size(); ++i) {
        Event e = std::move(pending[i]);
        Transition t = step(w->sm, w->spec->policy, e, now());
        pid_t old_pid = w->sm.pid;
        Slot was = w->sm;
        w->sm = std::move(t.next);
        if (w->sm.ends != was.ends) ++w->program->exits[w->sm.last_cause];
        if (old_pid != 0 && w->sm.pid != old_pid) pids.erase(old_pid);
        for (auto& a : t.actions) perform(w, a, old_pid, pending);
        emit_step(w, was, old_pid);
    }
    bool moved = w->sm.state != before || w->sm.late != late_before || w->sm.want_up != want_before;
    // A heartbeat (the most frequent event) that changed nothing but the deadline is done:
    // nothing of the program (steering, pacing, the door, systemd's status) depends on it,
    // so nothing looks at the program's other workers.
    if (beat && !moved && w->sm.pid == pid_before) return;
    // Else pacing and the door need look at the program's other workers only if it moved.
    after_dispatch(w, before, moved);
}

void Supervisor::Impl::perform(Worker* w, Action& a, pid_t old_pid, std::vector<Event>& pending) {
    if (auto* log = std::get_if<action::Log>(&a)) {
        log_event(w, log->level, log->message);
    } else if (auto* ab = std::get_if<action::Abandon>(&a)) {
        abandon(w, old_pid, ab->sig, ab->grace);
    } else if (auto* sig = std::get_if<action::Signal>(&a)) {
        pid_t pid = w->sm.pid != 0 ? w->sm.pid : old_pid;
        if (sig->sig == w->spec->config.stop_signal && pid == w->sm.pid && w->ipc &&
            w->ipc->connected()) {
            // PM2's shutdown_with_message: the message instead of the stop signal.
            if (w->spec->config.shutdown_message) {
                w->ipc->send_message("\"shutdown\"");
                spdlog::debug("{}: sent 'shutdown' to pid {} on its Node channel", label(w), pid);
                return;
            }
            // A Node cluster worker stops as its own primary would stop it: disconnect first
            // (its servers close, what they serve finishes, it closes the channel), then the
            // signal. stop_timeout's SIGKILL still bounds it all.
            if (w->ipc->online()) {
                std::uint64_t id = w->id;
                int s = sig->sig;
                w->ipc->disconnect([this, id, pid, s] {
                    auto it = workers.find(id);
                    if (it == workers.end() || it->second->sm.pid != pid) return;
                    Worker* w = it->second.get();
                    // Served out and disconnected: most exit now by themselves (their loop
                    // is empty); one that has timers or its own handles left gets the signal.
                    if (!w->ipc_timer) w->ipc_timer = exec.make_timer();
                    w->ipc_timer->arm(now() + kNodeExitGrace, [this, id, pid, s] {
                        auto it = workers.find(id);
                        if (it != workers.end() && it->second->sm.pid == pid) exec.kill(pid, s);
                    });
                });
                return;
            }
        }
        // KILL takes the worker's whole process group, so no grandchild outlives it.
        pid_t target = sig->sig == SIGKILL ? -pid : pid;
        int error = pid > 0 ? exec.kill(target, sig->sig) : 0;
        if (error == ESRCH && target < 0) error = exec.kill(pid, SIGKILL);  // no group yet
        if (error != 0 && error != ESRCH)
            spdlog::critical("{}: kill({}, {}) failed: {}", label(w), target, signal_name(sig->sig),
                             std::strerror(error));
    } else if (auto* arm = std::get_if<action::ArmDeadline>(&a)) {
        arm_deadline(w, arm->at);
    } else if (std::holds_alternative<action::CancelDeadline>(a)) {
        w->timer->cancel();
    } else if (std::holds_alternative<action::Spawn>(a)) {
        pending.push_back(do_spawn(w));
    }
}

Event Supervisor::Impl::do_spawn(Worker* w) {
    static const std::vector<int> cpus = allowed_cpus();
    const ProgramSpec& spec = *w->spec;
    SlotContext ctx;
    ctx.slot = w->slot;
    ctx.workers = static_cast<int>(w->program->slots.size());
    ctx.generation = spec.generation;
    if (!w->notify) {
        try {
            open_notify(w);
        } catch (const std::system_error& e) {
            spdlog::critical("{}: {}", label(w), e.what());
            return event::SpawnFailed{e.code().value()};
        }
    }
    ctx.notify_socket = w->notify->path();
    for (const auto& s : w->sockets) ctx.listen_fds.push_back(s->get());
    UniqueFd ipc_end;  // the worker's end of its Node channel: the master's copy closes here
    if (spec.config.ipc == IpcMode::node) {
        try {
            ipc_end = open_ipc(w);
        } catch (const std::system_error& e) {
            spdlog::critical("{}: {}", label(w), e.what());
            return event::SpawnFailed{e.code().value()};
        }
        ctx.ipc_fd = ipc_end.get();
    }
    ctx.listen_names = w->program->sockets.names();
    UniqueFd pipe;  // the master's copy of the write end closes when this returns
    if (w->capture) {
        try {
            pipe = w->capture->open();
        } catch (const std::system_error& e) {
            spdlog::critical("{}: {}", label(w), e.what());
            return event::SpawnFailed{e.code().value()};
        }
        ctx.output_fd = pipe.get();
    } else {
        ctx.output_fd = spec.output->get();
    }
    if (spec.config.cpu_affinity && !cpus.empty())
        ctx.cpu = cpus[static_cast<std::size_t>(w->slot) % cpus.size()];
    Program& prog = *w->program;
    // Its scoreboard record, held by the process until it is reaped (board_seats).
    std::optional<BoardSeat> seat;
    w->board_index.reset();
    w->board_beats = w->board_figures = false;
    if (auto index = board_record(w)) {
        seat.emplace(prog.board, *index);
        ctx.board_fd = prog.board->fd();
        ctx.board_offset = Scoreboard::offset(*index);
    }
    // The worker must find its sockets listening; while nothing of the program serves,
    // its starts are paced (this one is the probe).
    if (prog.sockets.is_shut() || !prog.sockets.all_listening()) open_door(prog);
    pacing::spawned(prog.pace, now());
    // What the previous process of this slot reported is not this one's.
    w->status.clear();
    w->fields.clear();
    const LaunchPlan* plan = &spec.plan;
    std::optional<LaunchPlan> resolved;
    if (!spec.unresolved.empty()) {
        try {
            resolved = LaunchPlan::resolve(spec.config, builtin_worker, environment);
            plan = &*resolved;
        } catch (const std::exception& e) {
            spdlog::critical("{}: cannot start a worker: {}", label(w), e.what());
            return event::SpawnFailed{ENOENT};
        }
    }
    SpawnSpec spawn_spec = make_spawn_spec(spec.config, *plan, ctx);
    if (seat) spawn_spec.pid_word = prog.board->pid_word(seat->index);
    Started r = exec.spawn(spawn_spec, label(w), plan->path);
    if (r.pid < 0) {
        spdlog::critical("{}: cannot start a worker: {}() failed: {}", label(w), r.call,
                         std::strerror(r.error));
        return event::SpawnFailed{r.error};
    }
    pids[r.pid] = w;
    w->notify->set_main_pid(r.pid);
    if (seat) {
        prog.board->set_pid(seat->index, r.pid);
        w->board_index = seat->index;
        board_seats.erase(r.pid);  // a record of an earlier process of this pid, not reaped
        board_seats.emplace(r.pid, std::move(*seat));
    }
    return event::Spawned{r.pid};
}

void Supervisor::Impl::after_dispatch(Worker* w, SlotState before, bool moved) {
    std::uint64_t id = w->id;
    Program* prog = w->program;
    if (rolling_in(*w))
        rollout_worker_changed(w, before);  // may stop, even drop, w
    else if (w->replacing)
        replacement_changed(w, before);
    else if (w->waiting)
        start_changed(w, before);
    auto it = workers.find(id);
    if (it != workers.end() && w->sm.state == SlotState::ready && before != SlotState::ready) {
        arm_age(w);
        if (!prog->removed) start_waiting_programs();
    }
    if (it != workers.end() && !prog->all_ready_logged && !prog->slots.empty()) {
        bool all = true;
        for (const Worker* s : prog->slots) all = all && s->sm.state == SlotState::ready;
        if (all) {
            prog->all_ready_logged = true;
            spdlog::info(
                "{}: all {} workers ready in {}", prog->name, prog->slots.size(),
                format_duration(std::chrono::duration_cast<Duration>(now() - prog->started_at)));
        }
    }
    bool live = std::any_of(programs.begin(), programs.end(),
                            [prog](const auto& p) { return p.get() == prog; });
    if (live && it != workers.end() && moved) {
        const Slot& s = w->sm;
        auto index = static_cast<std::size_t>(w->slot);
        bool current = index < prog->slots.size() && prog->slots[index] == w;
        // A late worker gets a spare on its sockets: it takes what is queued there, and the
        // slot once ready. A released one that heartbeats again is surplus: it stops.
        if (current && s.state == SlotState::ready && s.late && !replacement_of(*w) &&
            !prog->rollout && !prog->removed && !stopping)
            start_spare(w);
        if (w->retiring && s.state == SlotState::ready && !s.want_up && !s.late) {
            spdlog::warn("{}: pid {} heartbeats again after its spare took over: stopping it",
                         label(w), s.pid);
            dispatch(w, event::Stop{});
            it = workers.find(id);
        }
        // A slot that will not be back soon hands back what is queued on its own sockets:
        // better a reset now than a wait for nobody (new connections go elsewhere already).
        if (current && s.state == SlotState::backoff && before != SlotState::backoff &&
            s.deadline && *s.deadline - now() >= kProbeInterval && prog->pace.serving) {
            if (int n = prog->sockets.refuse_queued(w->slot); n > 0) {
                spdlog::warn("{}: back in {}: refused the {} connection{} queued for it", label(w),
                             format_duration(s.last_backoff), n, n == 1 ? "" : "s");
            }
            prog->steered.reset();
        }
    }
    if (live) {
        if (moved || it == workers.end()) pace(*prog);
        resteer(*prog);
        if (moved || it == workers.end()) update_door(*prog);
    }
    if (it != workers.end() && w->retiring && gone(w->sm)) drop_worker(w);
    report_to_systemd();
    if (stopping) {
        stop_in_order();
        finish_if_stopped();
    }
}

// A retired worker is gone: forget it, and with it the last reference to the sockets only
// it held (a slot scaled away). What is still queued there now is lost: count and say so.
void Supervisor::Impl::drop_worker(Worker* w) {
    Program* prog = w->program;
    // A replacement under way for it finds it gone (and stops); one it was is forgotten.
    replacements.erase(w->id);
    if (w->replacing)
        if (auto m = replacements.find(w->replacing->old_id);
            m != replacements.end() && m->second == w->id)
            replacements.erase(m);
    bool closes_socket = false;
    for (const auto& s : w->sockets) {
        if (s.use_count() != 1) continue;
        closes_socket = true;
        auto q = listen_queue(s->get());
        int queued = q ? static_cast<int>(q->queued) : 0;
        if (queued > 0)
            spdlog::warn("{}: closing its socket with {} queued connection{} (lost)", label(w),
                         queued, queued == 1 ? "" : "s");
    }
    Part on_exit = std::move(w->on_exit);
    workers.erase(w->id);
    // A closed socket moved its group's last socket into its index: steer anew (every
    // program: a group can be shared while an address moves from one program to another).
    for (auto& p : programs) {
        if (p->removed || !closes_socket) continue;
        p->steered.reset();
        resteer(*p);
    }
    on_exit.done(true, "");
    if (!prog->removed) return;
    for (const auto& [id, other] : workers)
        if (other->program == prog) return;
    spdlog::info("{}: removed", prog->name);
    if (!find_program(prog->name)) logs.forget(prog->name);  // its kept output goes with it
    std::erase_if(programs, [prog](const auto& p) { return p.get() == prog; });
}

// ---- events from the outside ----

void Supervisor::Impl::on_child_exit(pid_t pid, int status) {
    board_seats.erase(pid);  // its scoreboard record: nobody writes there any more
    auto it = pids.find(pid);
    if (it == pids.end()) {
        if (auto h = helpers.find(pid); h != helpers.end()) {
            auto done = std::move(h->second);
            helpers.erase(h);
            return done(status);
        }
        if (auto a = abandoned.find(pid); a != abandoned.end()) {
            exec.kill(-pid, SIGKILL);  // whatever it left in its process group
            spdlog::warn(
                "{}: abandoned pid {} {} {} after it was given up", a->second->label, pid,
                ExitStatus::from_wait_status(status).describe(),
                format_duration(std::chrono::duration_cast<Duration>(now() - a->second->since)));
            abandoned.erase(a);
            if (stopping) finish_if_stopped();
            return;
        }
        spdlog::debug("reaped pid {} (not a worker): {}", pid,
                      ExitStatus::from_wait_status(status).describe());
        return;
    }
    Worker* w = it->second;
    pids.erase(it);
    // The worker led its own process group; whatever it left in it (a crash, an exit on its
    // own, SIGABRT from the watchdog) must not outlive it. The group id cannot be reused
    // while the group has members, so this reaches only the worker's leftovers.
    if (exec.kill(-pid, SIGKILL) == 0)
        spdlog::warn("{}: killed the processes pid {} left in its process group", label(w), pid);
    // Its figures (loop lag, connections...) described a live process; its last STATUS text
    // stays, as its last words, until the slot's next process starts.
    w->fields.clear();
    w->board_index.reset();
    w->board_beats = w->board_figures = false;
    w->ipc.reset();
    if (w->ipc_timer) w->ipc_timer->cancel();
    dispatch(w, event::Exited{ExitStatus::from_wait_status(status)});
}

void Supervisor::Impl::open_notify(Worker* w) {
    std::uint64_t id = w->id;
    const LaunchPlan& plan = w->spec->plan;
    w->notify = std::make_unique<NotifySocket>(
        io, *notify_dir, std::to_string(id), plan.uid, plan.uid ? plan.gid : std::nullopt, label(w),
        notify_counters,
        [this, id](const NotifySender& s, const NotifyMessage& m) { on_notify(id, s, m); });
    w->notify->start();
}

void Supervisor::Impl::on_notify(std::uint64_t id, const NotifySender& sender,
                                 const NotifyMessage& m) {
    auto wit = workers.find(id);
    if (wit == workers.end()) return;
    Worker* w = wit->second.get();
    const pid_t pid = sender.pid;
    const pid_t main = w->sm.pid;
    if (pid != main || main == 0) {
        // A process given up on (abandoned after a watchdog or start timeout, still running
        // until abort_timeout) keeps this slot's NOTIFY_SOCKET, as do its children (its
        // process group): it must not speak for the worker that replaced it.
        auto of = [&](auto&& is) {
            if (is(pid) || (sender.pgid > 0 && is(sender.pgid))) return true;
            return std::any_of(sender.ancestors.begin(), sender.ancestors.end(), is);
        };
        bool another = pids.count(pid) > 0;
        bool given_up = of([&](pid_t p) { return abandoned.count(p) > 0; });
        bool below = main != 0 && (sender.pgid == main ||
                                   std::find(sender.ancestors.begin(), sender.ancestors.end(),
                                             main) != sender.ancestors.end());
        bool all = w->spec->config.notify_access == NotifyAccess::all;
        std::string why =
            another     ? "it is another worker"
            : given_up  ? "it is a process of the slot's previous run"
            : main == 0 ? "the slot has no process now"
            : !all ? "it is not the worker's pid " + std::to_string(main) + " (notify_access: main)"
            : !sender.known ? "it exited before its message was read, so nothing tells whose "
                              "it was (send from a process that outlives the send, or use "
                              "sd_notify_barrier())"
            : !below ? "it is neither in the worker's process group (" + std::to_string(main) +
                           ") nor below pid " + std::to_string(main)
                     : "";
        if (!why.empty()) {
            ++notify_counters.foreign_sender;
            w->notify->warn(std::string(m.ready ? "READY=1" : "notify message") + " from pid " +
                            std::to_string(pid) + " dropped: " + why);
            return;
        }
    }
    apply_notify(w, pid, m);
}

void Supervisor::Impl::apply_notify(Worker* w, pid_t pid, const NotifyMessage& m) {
    std::uint64_t id = w->id;
    if (m.status) w->status = *m.status;
    std::size_t dropped = m.fields_dropped + merge_notify_fields(w->fields, m.fields);
    if (m.status_truncated) ++notify_counters.status_truncated;
    notify_counters.fields_dropped += dropped;
    if (dropped > 0 || m.status_truncated)
        w->notify->warn(
            "pid " + std::to_string(pid) + ": " + std::to_string(dropped) +
            " X_CLUSTERD_ field(s) dropped" + (m.status_truncated ? ", STATUS cut" : "") +
            " (limits: " + std::to_string(kNotifyMaxFields) + " fields, names " +
            std::to_string(kNotifyMaxKey) + " B, values " + std::to_string(kNotifyMaxValue) +
            " B, STATUS " + std::to_string(kNotifyMaxStatus) + " B)");
    if (m.ready) {
        // X_CLUSTERD_HEARTBEAT_USEC: the pace the worker promises (its first heartbeat may be
        // a second away; a hang before it should not wait for 1.5 half-watchdogs).
        Duration pace{0};
        if (auto f = m.fields.find("HEARTBEAT_USEC"); f != m.fields.end()) {
            std::int64_t usec = 0;
            auto [end, ec] =
                std::from_chars(f->second.data(), f->second.data() + f->second.size(), usec);
            if (ec == std::errc{} && usec > 0)
                pace = std::chrono::ceil<Duration>(std::chrono::microseconds(usec));
        }
        // What it writes to its scoreboard record, said there before READY=1.
        if (w->board_index && w->program->board && pid == w->sm.pid) {
            BoardReading r = w->program->board->read(*w->board_index);
            if (r.pid == pid) {
                w->board_figures = (r.flags & sdk::kFlagFigures) != 0;
                w->board_beats =
                    (r.flags & sdk::kFlagHeartbeat) != 0 && w->spec->policy.watchdog.count() > 0;
            }
        }
        dispatch(w, event::Ready{pace});
    }
    if (m.watchdog && workers.count(id)) dispatch(w, event::Heartbeat{});
}

}  // namespace clusterd

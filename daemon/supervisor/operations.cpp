// Reload, rolling restart and scale: the supervisor's long operations. Each is started by a
// command or a signal, runs on the loop through worker events, and reports through an
// Operation to whoever asked.
#include <spdlog/spdlog.h>

#include "common/duration.hpp"
#include "daemon/process/config_check.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/policy/reload_plan.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"
#include "daemon/process/systemd.hpp"

namespace clusterd {

namespace {

// How long new connections may still be landing on a socket after it was steered away
// (a handshake that started before the steering finishes into the old queue).
constexpr Duration kSteerSettle{50};
constexpr Duration kDrainPoll{10};
// Failed runs of a roll back's new worker before its slot restarts in place instead.
constexpr int kRollbackTries = 3;

std::string join(const std::vector<std::string>& lines, const char* sep) {
    std::string s;
    for (const auto& l : lines)
        if (!l.empty()) s += (s.empty() ? "" : sep) + l;
    return s;
}

}  // namespace

void Supervisor::Impl::part_done(const std::shared_ptr<Operation>& op, bool ok,
                                 const std::string& line) {
    if (!line.empty()) {
        op->results.push_back(line);
        (ok ? spdlog::info("{}", line) : spdlog::error("{}", line));
    }
    if (!ok) op->ok = false;
    if (--op->pending > 0) return;
    if (op->reload) (op->ok ? reloads_ok : reloads_failed)++;
    if (op->reload) reload_in_progress = false;
    if (op->reload && systemd_notify) clusterd::notify("READY=1");
    if (op->reporter) op->reporter->finish(reply(op->ok, join(op->results, "\n")));
}

// An operation waiting for `w` to become ready must not wait forever once `w` is given up.
void Supervisor::Impl::abandon_wait(Worker* w, const std::string& why) {
    if (!w->waiting) return;
    std::shared_ptr<Operation> op = std::move(w->waiting);
    w->waiting.reset();
    if (w->incoming) return;  // a rollout counts itself once, not per worker
    part_done(op, false, label(w) + ": " + why);
}

Program* Supervisor::Impl::find_program(const std::string& name) {
    for (auto& p : programs)
        if (p->name == name && !p->removed) return p.get();
    return nullptr;
}

int Supervisor::Impl::configured_workers(const Program& prog) const {
    for (const auto& pc : config.programs)
        if (pc.name == prog.name) return pc.workers;
    return static_cast<int>(prog.slots.size());
}

std::string Supervisor::Impl::state_file() const {
    return state_file_path(config.daemon.state_dir,
                           config_path.empty() ? "<built-in>" : config_path);
}

void Supervisor::Impl::persist_scale() {
    state.config = config_path.empty() ? "<built-in>" : config_path;
    state.scale.clear();
    for (const auto& p : programs) {
        if (!p->runtime_scale || p->removed) continue;
        const ProgramConfig* pc = nullptr;
        for (const auto& c : config.programs)
            if (c.name == p->name) pc = &c;
        state.scale[p->name] = {*p->runtime_scale, pc ? cores_text(*pc) : ""};
    }
    std::string error = save_state(state_file(), state);
    if (!error.empty())
        spdlog::warn("runtime scale not saved, it will not survive a restart: {}", error);
}

// ---- reload: load, validate, diff, then apply; nothing changes unless all of it can ----

void Supervisor::Impl::refuse_reload(const std::shared_ptr<Reporter>& reporter,
                                     const std::string& why) {
    spdlog::error("reload refused: {}", why);
    ++reloads_failed;
    if (systemd_notify) clusterd::notify("READY=1");
    reporter->finish(reply(false, why));
}

// The file is read and parsed off the loop (a config of a few MiB takes a second of CPU,
// which would delay every heartbeat); the loop goes on until the result is back.
void Supervisor::Impl::reload(std::shared_ptr<Reporter> reporter) {
    if (systemd_notify) clusterd::notify("RELOADING=1\n" + monotonic_usec_field());
    auto refuse = [&](const std::string& why) { refuse_reload(reporter, why); };
    if (config_path.empty())
        return refuse("clusterd runs its built-in default config: there is no file to reload");
    if (reload_in_progress || reload_loading) return refuse("another reload is still in progress");
    for (const auto& p : programs)
        if (p->rollout && !p->rollout->rollback &&
            rules::rule(rules::Running::rolling_restart, rules::Later::reload) ==
                rules::Rule::refused)
            return refuse(p->name + ": a rolling restart is in progress");

    reload_loading = true;
    try {
        exec.load_config(config_path, [this, reporter](LoadedConfig loaded) {
            reload_loading = false;
            apply_reload(reporter, std::move(loaded));
        });
    } catch (const std::system_error& e) {  // no thread to be had
        reload_loading = false;
        return refuse(std::string("cannot start reading the config: ") + e.what());
    }
}

void Supervisor::Impl::apply_reload(std::shared_ptr<Reporter> reporter, LoadedConfig loaded) {
    auto refuse = [&](const std::string& why) { refuse_reload(reporter, why); };
    if (stopping) return refuse("clusterd is stopping");
    if (!loaded.config) return refuse("invalid config, nothing changed:\n" + loaded.error);
    // Asked for while the file was being read.
    for (const auto& p : programs)
        if (p->rollout && !p->rollout->rollback &&
            rules::rule(rules::Running::rolling_restart, rules::Later::reload) ==
                rules::Rule::refused)
            return refuse(p->name + ": a rolling restart is in progress");
    Config next = std::move(*loaded.config);
    overrides.apply(next.daemon);
    // What `clusterd check` and `run` refuse, a reload refuses too, before anything changes. The
    // checks look up users and groups, so they run here on the loop, not on the parse thread.
    if (auto problems = check_runtime(next, builtin_worker, environment); !problems.empty()) {
        std::string text;
        for (const auto& d : problems) text += (text.empty() ? "" : "\n") + d.to_string();
        return refuse("invalid config, nothing changed:\n" + text);
    }
    ReloadPlan plan = plan_reload(config, next);

    // Everything that can fail (users, executables, sockets) is prepared before anything
    // running is touched.
    struct Prepared {
        std::shared_ptr<const ProgramSpec> spec;
        std::optional<SocketTable> sockets;
        int workers = 0;
    };
    std::map<std::string, Prepared> prepared;
    try {
        for (const auto& pp : plan.programs) {
            if (pp.kind == ProgramPlan::Kind::remove) continue;
            const ProgramConfig& pc =
                *std::find_if(next.programs.begin(), next.programs.end(),
                              [&](const auto& p) { return p.name == pp.name; });
            Program* prog = find_program(pp.name);
            Prepared p;
            if (pp.kind == ProgramPlan::Kind::add) {
                p.workers = pc.workers;
                p.spec = make_spec(pc, 1);
                // An address a removed program listened on is taken over with its sockets
                // (a renamed program): their queues carry over, nothing is bound twice.
                const SocketTable* previous = nullptr;
                for (const auto& other : plan.programs) {
                    Program* old = other.kind == ProgramPlan::Kind::remove
                                       ? find_program(other.name)
                                       : nullptr;
                    for (const auto& e : old ? old->sockets.entries() : std::vector<ListenConfig>{})
                        for (const auto& l : pc.listen)
                            if (e.host == l.host && e.port == l.port) previous = &old->sockets;
                }
                p.sockets.emplace(pc.listen, p.workers, previous, &activated);
            } else {
                p.workers = pp.scale ? pc.workers : static_cast<int>(prog->slots.size());
                if (pp.restart || pp.in_place)
                    p.spec = make_spec(pc, prog->spec->generation + (pp.restart ? 1 : 0));
                bool listen_changed =
                    std::find(pp.changed.begin(), pp.changed.end(), "listen") != pp.changed.end();
                if (listen_changed)
                    p.sockets.emplace(pc.listen, p.workers, &prog->sockets, &activated);
            }
            prepared.emplace(pp.name, std::move(p));
        }
    } catch (const std::exception& e) {
        return refuse(std::string("nothing changed: ") + e.what());
    }

    std::string summary = plan.summary();
    spdlog::info("reload of {}: {}", config_path, summary);
    auto op = std::make_shared<Operation>();
    op->reporter = reporter;
    op->reload = true;
    op->pending = 1;  // held until everything below is started
    reload_in_progress = true;
    op->progress("reload: " + summary);

    if (next.daemon.log_level != config.daemon.log_level)
        spdlog::set_level(spdlog::level::from_str(next.daemon.log_level));
    for (const auto& field : plan.daemon_changed)
        if (field == "control" || field == "control_group" || field == "metrics")
            op->progress("daemon." + field + " changes take effect when clusterd restarts");
    if (next.daemon.log_file != config.daemon.log_file) {
        try {
            reopen_log(next.daemon.log_file);
            op->progress("daemon.log_file: now " +
                         (next.daemon.log_file.empty() ? "stderr" : next.daemon.log_file));
        } catch (const std::exception& e) {
            op->progress("daemon.log_file: " + std::string(e.what()) + "; still logging as before");
        }
    }

    config = next;
    ++config_generation;
    // A roll back still running makes way for a new roll of its program (or its removal);
    // it merges with a scale or an in-place change.
    for (const auto& pp : plan.programs)
        if (Program* prog = find_program(pp.name);
            prog && prog->rollout && (pp.restart || pp.kind == ProgramPlan::Kind::remove))
            end_rollout(*prog, "a reload");
    for (const auto& pp : plan.programs) {
        if (pp.kind == ProgramPlan::Kind::remove) {
            Program* prog = find_program(pp.name);
            prog->removed = true;
            prog->slots.clear();
            prog->sockets = SocketTable();  // its workers hold the last references now
            std::vector<Worker*> mine;
            for (auto& [id, w] : workers)
                if (w->program == prog) mine.push_back(w.get());
            for (Worker* w : mine) {
                w->retiring = true;
                abandon_wait(w, "removed before it was ready");
            }
            // Drained like a scale-down: when another program takes over the address, its
            // steering sends new connections to its own sockets, and what is queued here is
            // still accepted before these workers stop.
            drain_and_stop(*prog, mine, op);
            op->results.push_back(pp.name + ": removed, " + std::to_string(mine.size()) +
                                  " workers draining");
            continue;
        }
        Prepared& p = prepared.at(pp.name);
        if (pp.kind == ProgramPlan::Kind::add) {
            auto prog = std::make_unique<Program>();
            prog->name = pp.name;
            prog->spec = p.spec;
            prog->sockets = std::move(*p.sockets);
            resteer(*prog);
            prog->started_at = now();
            Program* raw = prog.get();
            programs.push_back(std::move(prog));
            for (int k = 0; k < p.workers; ++k) {
                Worker* w = add_worker(*raw, k, raw->spec, raw->sockets.for_slot(k));
                raw->slots.push_back(w);
                w->waiting = op;
                ++op->pending;
            }
            for (Worker* w : std::vector<Worker*>(raw->slots)) dispatch(w, event::Start{});
            continue;
        }
        Program& prog = *find_program(pp.name);
        std::optional<int> scale_before = prog.runtime_scale;
        if (pp.scale) prog.runtime_scale.reset();
        int current = static_cast<int>(prog.slots.size());
        if (pp.restart) {
            if (p.workers < current) scale(prog, p.workers, op);
            std::optional<SocketTable> previous;
            if (p.sockets) {
                previous = prog.sockets;
                prog.sockets = std::move(*p.sockets);
                prog.steered.reset();
            }
            begin_rollout(prog, p.spec, op, std::move(previous), current, scale_before);
            // Not when the roll failed already (a spawn that failed at once): the count went
            // back with the config.
            if (p.workers > current && prog.spec == p.spec) {
                scale(prog, p.workers, op);
                if (prog.rollout) prog.rollout->scaled = false;  // the reload's own count
            }
        } else {
            if (pp.in_place) {
                prog.spec = p.spec;
                for (auto& [id, w] : workers)
                    if (w->program == &prog && w->spec->generation == p.spec->generation)
                        w->spec = p.spec;
                if (prog.rollout && prog.rollout->to->generation == p.spec->generation)
                    prog.rollout->to = p.spec;
                op->results.push_back(pp.name + ": applied in place (" + join(pp.changed, ", ") +
                                      ")");
            }
            if (p.workers != current) scale(prog, p.workers, op);
        }
    }
    persist_scale();
    arm_memory_check();
    part_done(op, true, "");
}

// ---- rolling restart: new worker beside the old one, ready, then the old one drains ----

void Supervisor::Impl::begin_rollout(Program& prog, std::shared_ptr<const ProgramSpec> to,
                                     std::shared_ptr<Operation> op,
                                     std::optional<SocketTable> previous_sockets,
                                     std::optional<int> restore_workers,
                                     std::optional<int> restore_scale) {
    ++op->pending;
    if (prog.stopped) {  // nothing runs to be replaced: the new generation waits for `start`
        prog.spec = std::move(to);
        return part_done(op, true,
                         prog.name + ": stopped; generation " +
                             std::to_string(prog.spec->generation) + " runs when it starts");
    }
    Rollout r;
    r.from = prog.spec;
    r.to = std::move(to);
    r.op = op;
    for (int k = 0; k < static_cast<int>(prog.slots.size()); ++k) r.todo.push_back(k);
    r.previous_sockets = std::move(previous_sockets);
    r.restore_workers = restore_workers.value_or(static_cast<int>(prog.slots.size()));
    r.restore_scale = restore_workers ? restore_scale : prog.runtime_scale;
    start_rollout(prog, std::move(r));
}

void Supervisor::Impl::start_rollout(Program& prog, Rollout r) {
    std::string line = prog.name + ": rolling " + (r.rollback ? "back " : "restart of ") +
                       std::to_string(r.todo.size()) + " workers to generation " +
                       std::to_string(r.to->generation) + " (max_surge " +
                       std::to_string(r.to->config.max_surge) + ")";
    prog.spec = r.to;
    prog.rollout = std::move(r);
    prog.rollout->op->progress(line);
    advance_rollout(prog);
}

void Supervisor::Impl::advance_rollout(Program& prog) {
    while (prog.rollout && prog.rollout->in_flight < prog.rollout->to->config.max_surge &&
           !prog.rollout->todo.empty()) {
        int k = prog.rollout->todo.front();
        prog.rollout->todo.pop_front();
        Worker* w = add_worker(prog, k, prog.rollout->to, prog.sockets.for_slot(k));
        w->incoming = true;
        w->waiting = prog.rollout->op;
        ++prog.rollout->in_flight;
        dispatch(w, event::Start{});  // may fail at once and end the rollout
    }
    if (!prog.rollout || prog.rollout->in_flight > 0 || !prog.rollout->todo.empty()) return;
    auto op = prog.rollout->op;
    int now_on = 0;
    for (const Worker* w : prog.slots) now_on += w->spec == prog.rollout->to;
    std::string line = prog.name + ": " + std::to_string(now_on) + " workers now run generation " +
                       std::to_string(prog.rollout->to->generation);
    prog.rollout.reset();
    part_done(op, true, line);
}

bool Supervisor::Impl::admit(Program& prog, rules::Later later,
                             const std::function<void(const std::string&)>& refuse) {
    using rules::Running;
    std::optional<Running> running;
    if (prog.rollout)
        running = prog.rollout->rollback ? Running::roll_back : Running::rolling_restart;
    else if (prog.stopped)
        running = Running::stopped;
    if (!running) return true;
    static const char* const names[] = {"stop",  "start",  "restart", "restart --rolling",
                                        "scale", "reload", "signal"};
    switch (rules::rule(*running, later)) {
        case rules::Rule::refused:
            refuse(*running == Running::stopped
                       ? prog.name + " is stopped: nothing to roll (`clusterd start " + prog.name +
                             "` starts it)"
                       : prog.name + ": a rolling restart is in progress (`clusterd stop " +
                             prog.name + "` ends it)");
            return false;
        case rules::Rule::supersedes:
            end_rollout(prog, names[static_cast<int>(later)]);
            return true;
        case rules::Rule::ends_it:
            prog.stopped = false;
            return true;
        case rules::Rule::merges:
            return true;
    }
    return true;
}

void Supervisor::Impl::adopt_current_spec(Worker& w) {
    const auto& spec = w.program->spec;
    if (w.spec == spec) return;
    if (w.spec->plan.uid != spec->plan.uid || w.spec->plan.gid != spec->plan.gid)
        w.notify.reset();  // made anew, for the new user, at the next spawn
    w.spec = spec;
}

void Supervisor::Impl::end_rollout(Program& prog, const std::string& by) {
    Rollout r = std::move(*prog.rollout);
    prog.rollout.reset();
    std::vector<std::uint64_t> incoming;
    for (auto& [id, w] : workers)
        if (w->program == &prog && w->incoming) {
            w->incoming = false;
            w->waiting.reset();
            w->retiring = true;
            incoming.push_back(id);
        }
    for (auto id : incoming)
        if (auto it = workers.find(id); it != workers.end())
            dispatch(it->second.get(), event::Stop{});
    // A reload's new config stays in force (the program is stopped, not rolled back); a
    // `restart --rolling` did not happen and says so; a roll back makes way for the next roll.
    if (r.rollback)
        part_done(r.op, true, prog.name + ": rolling back superseded by " + by);
    else if (r.op->reload)
        part_done(r.op, true,
                  prog.name + ": stopped during its rolling restart; generation " +
                      std::to_string(r.to->generation) + " runs when it starts");
    else
        part_done(r.op, false, prog.name + ": rolling restart ended by " + by);
}

void Supervisor::Impl::rollout_worker_changed(Worker* w, SlotState before) {
    Program& prog = *w->program;
    const Slot& s = w->sm;
    StartOutcome outcome = start_outcome(s, before);
    if (outcome == StartOutcome::pending) return;
    bool ready = outcome == StartOutcome::ready;
    std::shared_ptr<Operation> op = std::move(w->waiting);
    w->waiting.reset();

    if (!w->incoming) {  // a scale-up or a new program: this slot is simply up, or not
        std::string line =
            label(w) +
            (ready ? "" : ": did not become ready (" + std::string(to_string(s.last_cause)) + ")");
        if (ready) op->progress(label(w) + ": ready (pid " + std::to_string(s.pid) + ")");
        part_done(op, ready, ready ? "" : line);
        return;
    }
    w->incoming = false;
    if (ready) {
        Worker* old = prog.slots[static_cast<std::size_t>(w->slot)];
        prog.slots[static_cast<std::size_t>(w->slot)] = w;
        --prog.rollout->in_flight;
        op->progress(prog.name + ": slot " + std::to_string(w->slot + 1) + "/" +
                     std::to_string(prog.slots.size()) + " ready (pid " + std::to_string(s.pid) +
                     ", generation " + std::to_string(w->spec->generation) + ")");
        old->retiring = true;
        abandon_wait(old, "replaced by the new generation before it was ready");
        dispatch(old, event::Stop{});
        advance_rollout(prog);
        return;
    }
    // Going back to a generation that ran, a crash is a fault of the moment, not of its
    // config: the slot's restart policy tries again, and the roll back waits. After
    // kRollbackTries failed runs the slot stops waiting: its worker restarts on the kept
    // generation in place.
    if (prog.rollout->rollback) {
        if (s.want_up && s.state != SlotState::failed && s.failures < kRollbackTries) {
            w->incoming = true;
            w->waiting = std::move(op);
            return;
        }
        --prog.rollout->in_flight;
        w->retiring = true;
        int k = w->slot;
        dispatch(w, event::Stop{});
        spdlog::warn("{}: rolling back: the kept generation failed {} times beside it; "
                     "restarting the slot's worker on it in place",
                     prog.name + "[" + std::to_string(k) + "]", kRollbackTries);
        if (k < static_cast<int>(prog.slots.size())) {
            Worker* current = prog.slots[static_cast<std::size_t>(k)];
            adopt_current_spec(*current);
            dispatch(current, event::Restart{});
        }
        return advance_rollout(prog);
    }
    // The new generation does not come up: stop the roll, keep the old workers serving. (A
    // roll back that fails keeps the generation it was going back to: the other was rejected.)
    Rollout r = std::move(*prog.rollout);
    prog.rollout.reset();
    const auto& kept = r.rollback ? r.to : r.from;
    prog.spec = kept;
    if (r.previous_sockets) {
        prog.sockets = std::move(*r.previous_sockets);
        prog.steered.reset();
        resteer(prog);
    }
    for (auto& pc : config.programs)
        if (pc.name == prog.name) pc = kept->config;
    int other = 0;  // slots not on the kept generation
    for (const Worker* x : prog.slots) other += x->spec->generation != kept->generation;
    std::string line =
        prog.name + ": generation " + std::to_string(r.to->generation) +
        " did not become ready on slot " + std::to_string(w->slot) + " (" +
        s.last_status.describe() + ", " + to_string(s.last_cause) + "): " +
        (r.rollback ? "rolling back stopped; " + std::to_string(other) + " of " +
                          std::to_string(prog.slots.size()) + " slots still run generation " +
                          std::to_string(r.from->generation)
                    : "rolling restart stopped; the program keeps generation " +
                          std::to_string(kept->generation) +
                          (other > 0 ? " (" + std::to_string(other) + " of " +
                                           std::to_string(prog.slots.size()) +
                                           " slots that run the new one go back)"
                                     : ""));
    std::vector<Worker*> abandoned;
    for (auto& [id, other] : workers)
        if (other->program == &prog && (other.get() == w || (other->incoming && other->waiting)))
            abandoned.push_back(other.get());
    for (Worker* a : abandoned) {
        a->incoming = false;
        a->waiting.reset();
        a->retiring = true;
    }
    for (Worker* a : abandoned) dispatch(a, event::Stop{});
    // The count goes back too (a reload that changed cores), unless `scale` set one since.
    if (!r.scaled) {
        prog.runtime_scale = r.restore_scale;
        if (static_cast<int>(prog.slots.size()) != r.restore_workers)
            scale(prog, r.restore_workers, op);
        persist_scale();
    }
    // No worker is left on a rejected generation. Slots where it does not serve take the kept
    // one for their next start; those where it serves roll back, one surge at a time, like
    // any roll (whoever asked has the answer already).
    if (!r.rollback) {
        Rollout back;
        back.from = r.to;
        back.to = prog.spec;
        back.rollback = true;
        back.scaled = true;
        // Replaced first only when the kept generation is proven (a slot serves on it); else
        // nothing is lost by a restart in place.
        bool proven = false;
        for (const Worker* x : prog.slots)
            proven = proven || (x->spec->generation == prog.spec->generation &&
                                x->sm.state == SlotState::ready);
        std::vector<std::uint64_t> restart;
        for (Worker* x : prog.slots) {
            if (x->spec->generation == prog.spec->generation) continue;
            if (x->sm.state == SlotState::ready && !prog.stopped && proven) {
                back.todo.push_back(x->slot);
                continue;
            }
            adopt_current_spec(*x);
            if (x->sm.state == SlotState::starting || x->sm.state == SlotState::ready)
                restart.push_back(x->id);
        }
        for (auto id : restart)
            if (auto it = workers.find(id); it != workers.end())
                dispatch(it->second.get(), event::Restart{});
        if (!back.todo.empty()) {
            auto back_op = std::make_shared<Operation>();
            back_op->reporter = log_reporter(prog.name + ": roll back");
            back_op->pending = 2;  // the roll, and this function
            back.op = back_op;
            start_rollout(prog, std::move(back));
            part_done(back_op, true, "");
        }
    }
    part_done(op, false, line);
}

// ---- scale: new slots join the reuseport group; leaving slots are drained first ----

void Supervisor::Impl::scale(Program& prog, int n, std::shared_ptr<Operation> op) {
    const int current = static_cast<int>(prog.slots.size());
    if (prog.rollout) prog.rollout->scaled = true;  // it ends with this count, whatever happens
    if (n == current) return;
    ++op->pending;
    std::string line =
        prog.name + ": scaled " + std::to_string(current) + " -> " + std::to_string(n);
    op->progress(prog.name + ": scaling " + std::to_string(current) + " -> " + std::to_string(n));
    if (n > current) {
        try {
            prog.sockets.resize(n);
        } catch (const std::exception& e) {
            return part_done(op, false, prog.name + ": cannot scale up: " + e.what());
        }
        std::vector<Worker*> added;
        try {
            // The new workers' notify sockets are file descriptors too: a count that does not
            // fit is refused here, before it is saved or anything starts.
            for (int k = current; k < n; ++k) {
                added.push_back(add_worker(prog, k, prog.spec, prog.sockets.for_slot(k)));
                open_notify(added.back());
            }
            check_fd_headroom(prog.spec->config, added.size());
        } catch (const std::exception& e) {
            for (Worker* w : added) workers.erase(w->id);  // never started
            prog.sockets.resize(current);
            return part_done(op, false, prog.name + ": cannot scale up: " + e.what());
        }
        for (Worker* w : added) prog.slots.push_back(w);
        // A stopped program's new slots start with it.
        if (prog.stopped) return part_done(op, true, line + " (stopped: they start with it)");
        for (Worker* w : added) {
            w->waiting = op;
            ++op->pending;
        }
        for (Worker* w : added) dispatch(w, event::Start{});
        return part_done(op, true, line);
    }
    std::vector<Worker*> leaving(prog.slots.begin() + n, prog.slots.end());
    prog.slots.resize(static_cast<std::size_t>(n));
    // A rolling restart in progress covers only the slots that stay; its new workers for the
    // others leave with them.
    if (prog.rollout) {
        Rollout& r = *prog.rollout;
        for (auto& [id, w] : workers)
            if (w->program == &prog && w->incoming && w->slot >= n) {
                w->incoming = false;
                w->waiting.reset();
                --r.in_flight;
                leaving.push_back(w.get());
            }
        std::erase_if(r.todo, [n](int k) { return k >= n; });
    }
    resteer(prog);
    prog.sockets.resize(n);
    for (Worker* w : leaving) {
        w->retiring = true;
        abandon_wait(w, "scaled away before it was ready");
        w->on_exit = op;  // the scale is done once the leaving workers are gone
        ++op->pending;
    }
    drain_and_stop(prog, std::move(leaving), op);
    advance_rollout(prog);  // it may be done now
    part_done(op, true, line);
}

// Wait until nothing is queued on the leaving slots' own sockets (their workers keep
// accepting meanwhile), then stop those workers. Bounded by the program's stop_timeout.
void Supervisor::Impl::drain_and_stop(Program& prog, std::vector<Worker*> leaving,
                                      std::shared_ptr<Operation>) {
    auto d = std::make_shared<Drain>(exec);
    d->program = prog.name;
    d->started = now();
    d->deadline = d->started + prog.spec->policy.stop_timeout;
    // Only the sockets no one else holds (the leaving slots' own; a rolling restart's new
    // worker for a leaving slot holds them too).
    std::map<const UniqueFd*, long> held;
    for (Worker* w : leaving)
        for (const auto& s : w->sockets) ++held[s.get()];
    for (Worker* w : leaving) {
        d->ids.push_back(w->id);
        for (const auto& s : w->sockets)
            if (s.use_count() == held[s.get()] && held[s.get()] > 0) {
                held[s.get()] = 0;  // once
                d->sockets.push_back(s);
            }
    }
    drain_poll(d);
}

void Supervisor::Impl::drain_poll(std::shared_ptr<Drain> d) {
    TimePoint now = this->now();
    int queued = 0;
    for (const auto& s : d->sockets)
        if (auto q = listen_queue(s->get())) queued += static_cast<int>(q->queued);
    if (now - d->started < kSteerSettle || (queued > 0 && now < d->deadline)) {
        d->timer->arm(now + kDrainPoll, [this, d] { drain_poll(d); });
        return;
    }
    if (queued > 0)
        spdlog::warn("{}: drain deadline reached with {} connections still queued", d->program,
                     queued);
    d->sockets.clear();  // the workers hold the last references now
    for (auto id : d->ids)
        if (auto it = workers.find(id); it != workers.end())
            dispatch(it->second.get(), event::Stop{});
}

}  // namespace clusterd

// Rolling restarts: a new worker beside the old one, ready, then the old one drains; at most
// max_surge at a time. A roll that fails rolls back what it replaced. Which later command
// supersedes, merges with or is refused by a roll: admit() and policy/operation_rules.hpp.
#include <spdlog/spdlog.h>

#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

namespace {

// Failed runs of a roll back's new worker before its slot restarts in place instead.
constexpr int kRollbackTries = 3;

}  // namespace

// ---- rolling restart: new worker beside the old one, ready, then the old one drains ----

void Supervisor::Impl::begin_rollout(Program& prog, std::shared_ptr<const ProgramSpec> to,
                                     std::shared_ptr<Operation> op,
                                     std::optional<SocketTable> previous_sockets,
                                     std::optional<int> restore_workers,
                                     std::optional<int> restore_scale) {
    Part part = op->part(prog.name + ": rolling restart did not finish");
    if (prog.stopped) {  // nothing runs to be replaced: the new generation waits for `start`
        prog.spec = std::move(to);
        return part.done(true, prog.name + ": stopped; generation " +
                                   std::to_string(prog.spec->generation) + " runs when it starts");
    }
    Rollout r;
    r.part = std::move(part);
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
        Worker* w = start_replacement(prog, k, prog.rollout->to, Replace::roll, nullptr);
        ++prog.rollout->in_flight;
        dispatch(w, event::Start{});  // may fail at once and end the rollout
    }
    if (!prog.rollout || prog.rollout->in_flight > 0 || !prog.rollout->todo.empty()) return;
    Part part = std::move(prog.rollout->part);
    int now_on = 0;
    for (const Worker* w : prog.slots) now_on += w->spec == prog.rollout->to;
    std::string line = prog.name + ": " + std::to_string(now_on) + " workers now run generation " +
                       std::to_string(prog.rollout->to->generation);
    prog.rollout.reset();
    part.done(true, line);
}

std::optional<rules::Running> Supervisor::Impl::running_on(const Program& prog) {
    using rules::Running;
    if (prog.rollout) return prog.rollout->rollback ? Running::roll_back : Running::rolling_restart;
    if (prog.stopped) return Running::stopped;
    return std::nullopt;
}

bool Supervisor::Impl::admit(Program& prog, rules::Later later,
                             const std::function<void(const std::string&)>& refuse) {
    using rules::Running;
    std::optional<Running> running = running_on(prog);
    if (!running) return true;
    switch (rules::rule(*running, later)) {
        case rules::Rule::refused:
            refuse(*running == Running::stopped
                       ? prog.name + " is stopped: nothing to roll (`clusterd start " + prog.name +
                             "` starts it)"
                       : prog.name + ": a rolling restart is in progress (`clusterd stop " +
                             prog.name + "` ends it)");
            return false;
        case rules::Rule::supersedes:
            end_rollout(prog, rules::to_string(later));
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
        if (w->program == &prog && rolling_in(*w)) {
            w->replacing.reset();
            w->retiring = true;
            incoming.push_back(id);
        }
    for (auto id : incoming)
        if (auto it = workers.find(id); it != workers.end())
            dispatch(it->second.get(), event::Stop{});
    // A reload's new config stays in force (the program is stopped, not rolled back); a
    // `restart --rolling` did not happen and says so; a roll back makes way for the next roll.
    if (r.rollback)
        r.part.done(true, prog.name + ": rolling back superseded by " + by);
    else if (r.reload)
        r.part.done(true, prog.name + ": stopped during its rolling restart; generation " +
                              std::to_string(r.to->generation) + " runs when it starts");
    else
        r.part.done(false, prog.name + ": rolling restart ended by " + by);
}

void Supervisor::Impl::rollout_worker_changed(Worker* w, SlotState before) {
    Program& prog = *w->program;
    const Slot& s = w->sm;
    StartOutcome outcome = start_outcome(s, before);
    if (outcome == StartOutcome::pending) return;
    bool ready = outcome == StartOutcome::ready;
    if (!prog.rollout) {  // ended meanwhile: this worker is on its own
        w->replacing.reset();
        return;
    }
    std::shared_ptr<Operation> op = prog.rollout->op;
    std::optional<Replacement> replacing = std::move(w->replacing);
    w->replacing.reset();
    if (ready) {
        --prog.rollout->in_flight;
        op->progress(prog.name + ": slot " + std::to_string(w->slot + 1) + "/" +
                     std::to_string(prog.slots.size()) + " ready (pid " + std::to_string(s.pid) +
                     ", generation " + std::to_string(w->spec->generation) + ")");
        take_slot(w, prog.slots[static_cast<std::size_t>(w->slot)], Replace::roll);
        advance_rollout(prog);
        return;
    }
    // Going back to a generation that ran, a crash is a fault of the moment, not of its
    // config: the slot's restart policy tries again, and the roll back waits. After
    // kRollbackTries failed runs the slot stops waiting: its worker restarts on the kept
    // generation in place.
    if (prog.rollout->rollback) {
        if (s.want_up && s.state != SlotState::failed && s.failures < kRollbackTries) {
            w->replacing = replacing;
            return;
        }
        --prog.rollout->in_flight;
        w->retiring = true;
        int k = w->slot;
        dispatch(w, event::Stop{});
        spdlog::warn(
            "{}: rolling back: the kept generation failed {} times beside it; "
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
        if (other->program == &prog && (other.get() == w || rolling_in(*other)))
            abandoned.push_back(other.get());
    for (Worker* a : abandoned) {
        a->replacing.reset();
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
            auto back_op = std::make_shared<Operation>(log_reporter(prog.name + ": roll back"));
            Part hold = back_op->part("");
            back.op = back_op;
            back.part = back_op->part(prog.name + ": roll back did not finish");
            start_rollout(prog, std::move(back));
            hold.done(true, "");
        }
    }
    r.part.done(false, line);
}

// A worker an operation waits for that is not a roll's (a scale-up, a new program's): up,
// or not.
void Supervisor::Impl::start_changed(Worker* w, SlotState before) {
    const Slot& s = w->sm;
    StartOutcome outcome = start_outcome(s, before);
    if (outcome == StartOutcome::pending) return;
    bool ready = outcome == StartOutcome::ready;
    Part part = std::move(w->waiting);
    if (ready) part.operation()->progress(label(w) + ": ready (pid " + std::to_string(s.pid) + ")");
    part.done(ready, ready ? ""
                           : label(w) + ": did not become ready (" +
                                 std::string(to_string(s.last_cause)) + ")");
}

}  // namespace clusterd

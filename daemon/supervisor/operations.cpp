// The long operations' common parts (an Operation finishes once every part has; the runtime
// scale is kept in the state file) and scale: new slots join the reuseport group, leaving
// slots are drained first. Reload is in reload.cpp, rolling restarts in rollout.cpp; how
// they compose is the table in policy/operation_rules.hpp.
#include <spdlog/spdlog.h>

#include "daemon/net/listen_queue.hpp"
#include "daemon/process/systemd.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

namespace {

// How long new connections may still be landing on a socket after it was steered away
// (a handshake that started before the steering finishes into the old queue).
constexpr Duration kSteerSettle{50};
constexpr Duration kDrainPoll{10};

}  // namespace

// An operation waiting for `w` to become ready must not wait forever once `w` is given up.
void Supervisor::Impl::abandon_wait(Worker* w, const std::string& why) {
    if (w->waiting) w->waiting.done(false, label(w) + ": " + why);
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

// ---- scale: new slots join the reuseport group; leaving slots are drained first ----

void Supervisor::Impl::scale(Program& prog, int n, std::shared_ptr<Operation> op) {
    const int current = static_cast<int>(prog.slots.size());
    if (prog.rollout) prog.rollout->scaled = true;  // it ends with this count, whatever happens
    if (n == current) return;
    Part part = op->part(prog.name + ": scale did not finish");
    std::string line =
        prog.name + ": scaled " + std::to_string(current) + " -> " + std::to_string(n);
    op->progress(prog.name + ": scaling " + std::to_string(current) + " -> " + std::to_string(n));
    if (n > current) {
        try {
            prog.sockets.resize(n);
        } catch (const std::exception& e) {
            return part.done(false, prog.name + ": cannot scale up: " + e.what());
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
            return part.done(false, prog.name + ": cannot scale up: " + e.what());
        }
        for (Worker* w : added) prog.slots.push_back(w);
        emit("scaled", &prog, nullptr, 0,
             "scaled " + std::to_string(current) + " -> " + std::to_string(n),
             {{"from", current}, {"to", n}});
        // A stopped program's new slots start with it.
        if (prog.stopped) return part.done(true, line + " (stopped: they start with it)");
        if (!prog.waiting_for.empty())
            return part.done(true,
                             line + " (waiting for " + prog.waiting_for + ": they start with it)");
        for (Worker* w : added) w->waiting = op->part(label(w) + ": gone before it was ready");
        for (Worker* w : added) dispatch(w, event::Start{});
        return part.done(true, line);
    }
    std::vector<Worker*> leaving(prog.slots.begin() + n, prog.slots.end());
    prog.slots.resize(static_cast<std::size_t>(n));
    emit("scaled", &prog, nullptr, 0,
         "scaled " + std::to_string(current) + " -> " + std::to_string(n),
         {{"from", current}, {"to", n}});
    // A rolling restart in progress covers only the slots that stay; its new workers for the
    // others leave with them.
    if (prog.rollout) {
        Rollout& r = *prog.rollout;
        for (auto& [id, w] : workers)
            if (w->program == &prog && rolling_in(*w) && w->slot >= n) {
                w->replacing.reset();
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
        w->on_exit = op->part("");  // the scale is done once the leaving workers are gone
    }
    drain_and_stop(prog, std::move(leaving), op);
    advance_rollout(prog);  // it may be done now
    part.done(true, line);
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

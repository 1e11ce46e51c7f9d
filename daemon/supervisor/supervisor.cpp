#include "daemon/supervisor/supervisor.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <set>

#include "common/duration.hpp"
#include "common/exit_codes.hpp"
#include "common/limits.hpp"
#include "common/signals.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/process/proc_stats.hpp"
#include "daemon/supervisor/asio_executor.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"
#include "daemon/process/systemd.hpp"

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

std::vector<int> allowed_cpus() {
    std::vector<int> cpus;
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
        for (int i = 0; i < CPU_SETSIZE; ++i)
            if (CPU_ISSET(i, &set)) cpus.push_back(i);
    return cpus;
}

UniqueFd open_output(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!fd) throw std::system_error(errno, std::system_category(), "open(" + path + ") failed");
    return fd;
}

bool gone(const Slot& s) {
    return s.pid == 0 && (s.state == SlotState::stopped || s.state == SlotState::failed);
}

}  // namespace

Supervisor::Impl::Impl(asio::io_context& io_, Executor& exec_, Config cfg, std::string path,
                       std::string worker, std::vector<std::string> env)
    : io(io_),
      exec(exec_),
      config(std::move(cfg)),
      config_path(std::move(path)),
      builtin_worker(std::move(worker)),
      environment(std::move(env)),
      shutdown_timer(exec_.make_timer()),
      systemd_notify(std::getenv("NOTIFY_SOCKET") != nullptr),
      systemd_watchdog(exec_.make_timer()),
      memory_timer(exec_.make_timer()),
      listener_timer(exec_.make_timer()) {}

// ---- start-up: everything that can fail happens before the first fork ----

void Supervisor::Impl::start() {
    started_at = now();
    // Before any socket is bound: a directory that cannot be used stops the start here.
    notify_dir = std::make_unique<NotifyDir>(NotifyDir::for_control(config.daemon.control));
    std::vector<std::string> errors;
    std::string file = state_file();
    // A state file from before it was kept per config (<state_dir>/state.json) belongs to
    // the default config.
    std::string legacy = config.daemon.state_dir + "/state.json";
    if (config_path == kDefaultConfigPath && ::access(file.c_str(), F_OK) != 0 &&
        ::access(legacy.c_str(), F_OK) == 0) {
        spdlog::info("reading runtime scale from {} (it moves to {})", legacy, file);
        file = legacy;
    }
    state = load_state(file, errors);
    for (const auto& e : errors) spdlog::warn("state file: {}", e);
    bool dropped = false;
    for (const auto& pc : config.programs) {
        auto it = state.scale.find(pc.name);
        if (it != state.scale.end() && !it->second.cores.empty() &&
            it->second.cores != cores_text(pc)) {
            spdlog::info(
                "{}: runtime scale of {} workers ignored: cores in the config changed from {} to "
                "{} since it was set",
                pc.name, it->second.workers, it->second.cores, cores_text(pc));
            state.scale.erase(it);
            it = state.scale.end();
            dropped = true;
        }
        int n = it != state.scale.end() ? it->second.workers : pc.workers;
        std::unique_ptr<Program> prog;
        try {
            prog = make_program(pc, n);
        } catch (const std::exception& e) {
            // A saved scale the machine cannot hold (sockets, file descriptors) must not
            // keep the daemon from starting: the config's count is tried instead.
            if (it == state.scale.end()) throw;
            spdlog::warn("{}: runtime scale of {} workers ignored: {}", pc.name, n, e.what());
            state.scale.erase(it);
            it = state.scale.end();
            dropped = true;
            n = pc.workers;
            prog = make_program(pc, n);
        }
        if (it != state.scale.end()) {
            prog->runtime_scale = n;
            spdlog::info("{}: {} workers from a runtime scale (config says {}; {})", pc.name, n,
                         pc.workers, file);
        }
        programs.push_back(std::move(prog));
    }
    if (dropped || file != state_file()) persist_scale();
    for (const auto& [name, sock] : activated) {
        bool used = false;
        for (const auto& pc : config.programs)
            for (const auto& l : pc.listen) used = used || l.name == name;
        spdlog::info(
            "socket \"{}\" (fd {}) passed by systemd{}", name, sock->get(),
            used ? ": used instead of binding" : ": no listen entry has that name, unused");
    }
    if (!config.daemon.metrics.empty()) {
        metrics = std::make_unique<MetricsServer>(
            io, config.daemon.metrics, [this] { return metrics_text(); },
            [this] { return health(); });
        metrics->start();
        spdlog::info("metrics on http://{}/metrics and /healthz", metrics->address());
    }
    exec.start([this](pid_t pid, int status) { on_child_exit(pid, status); },
               [this](int sig) { on_signal(sig); });
    arm_memory_check();
    arm_listener_check();
    if (auto interval = systemd_watchdog_interval(); interval.count() > 0)
        do_systemd_watchdog(interval / 2);
    for (auto& prog : programs) {
        spdlog::info("{}: starting {} worker{} ({})", prog->name, prog->slots.size(),
                     prog->slots.size() == 1 ? "" : "s", prog->spec->plan.path);
        prog->started_at = now();
        for (Worker* w : prog->slots) dispatch(w, event::Start{});
    }
}

std::shared_ptr<const ProgramSpec> Supervisor::Impl::make_spec(const ProgramConfig& pc,
                                                               std::uint64_t generation) const {
    auto spec = std::make_shared<ProgramSpec>();
    spec->config = pc;
    spec->policy = SlotPolicy::from(pc);
    spec->plan = LaunchPlan::resolve(pc, builtin_worker, environment);
    spec->generation = generation;
    if (pc.output != "inherit" && pc.output != "capture") *spec->output = open_output(pc.output);
    return spec;
}

// Beyond its listening and notify sockets, a worker holds in the master the read end of its
// output pipe (output: capture) and, until its execve, of its exec-status pipe; new workers
// all start at once. The child, a copy of the master, needs a free fd per listener to move
// them into place; the rest is for the output pipe's write end, the control and metrics
// servers and the log.
namespace {
constexpr std::size_t kFdHeadroom = 16;
}  // namespace

void Supervisor::Impl::check_fd_headroom(const ProgramConfig& pc, std::size_t new_workers) const {
    std::size_t per_worker = 1 + (pc.output == "capture" ? 1 : 0);
    std::size_t need = new_workers * per_worker + pc.listen.size() + kFdHeadroom;
    auto available = free_fds();
    if (!available || *available >= need) return;
    throw std::runtime_error(std::to_string(new_workers) + " more worker" +
                             (new_workers == 1 ? "" : "s") + " would need " + std::to_string(need) +
                             " more file descriptors, " + std::to_string(*available) +
                             " are left under the daemon's RLIMIT_NOFILE (LimitNOFILE=)");
}

std::unique_ptr<Program> Supervisor::Impl::make_program(const ProgramConfig& pc, int n) {
    auto prog = std::make_unique<Program>();
    prog->name = pc.name;
    prog->spec = make_spec(pc, 1);
    prog->sockets = SocketTable(pc.listen, n, nullptr, &activated);
    resteer(*prog);
    try {
        // Each worker's notify socket is a file descriptor of the master's: opened now, so
        // that a count the machine cannot hold fails here, before anything starts.
        for (int k = 0; k < n; ++k) {
            prog->slots.push_back(add_worker(*prog, k, prog->spec, prog->sockets.for_slot(k)));
            open_notify(prog->slots.back());
        }
        check_fd_headroom(pc, static_cast<std::size_t>(n));
    } catch (...) {
        for (Worker* w : prog->slots) workers.erase(w->id);  // never started
        throw;
    }
    for (const auto& l : pc.listen)
        spdlog::info("{}: listening on {} ({}{})", pc.name, l.address(), l.name,
                     l.reuseport ? ", one reuseport socket per worker" : ", shared socket");
    return prog;
}

Worker* Supervisor::Impl::add_worker(Program& prog, int slot,
                                     std::shared_ptr<const ProgramSpec> spec,
                                     std::vector<SocketRef> sockets) {
    std::uint64_t id = next_worker_id++;
    auto w = std::make_unique<Worker>(exec, id, &prog, slot, std::move(spec), std::move(sockets));
    Worker* raw = w.get();
    if (raw->spec->config.output == "capture")
        raw->capture = std::make_unique<OutputCapture>(io, prog.name, slot);
    workers.emplace(id, std::move(w));
    return raw;
}

std::string Supervisor::Impl::label(const Worker* w) const {
    return w->program->name + "[" + std::to_string(w->slot) + "]";
}

// ---- the one dispatch ----

void Supervisor::Impl::dispatch(Worker* w, Event ev) {
    SlotState before = w->sm.state;
    bool late_before = w->sm.late;
    bool want_before = w->sm.want_up;
    std::vector<Event> pending{std::move(ev)};
    for (std::size_t i = 0; i < pending.size(); ++i) {
        Event e = std::move(pending[i]);
        Transition t = step(w->sm, w->spec->policy, e, now());
        pid_t old_pid = w->sm.pid;
        int ends = w->sm.ends;
        w->sm = std::move(t.next);
        if (w->sm.ends != ends) ++w->program->exits[to_string(w->sm.last_cause)];
        if (old_pid != 0 && w->sm.pid != old_pid) pids.erase(old_pid);
        for (auto& a : t.actions) perform(w, a, old_pid, pending);
    }
    // A heartbeat (the most frequent event) changes none of these: pacing and the door need
    // not look at the program's other workers then.
    after_dispatch(
        w, before,
        w->sm.state != before || w->sm.late != late_before || w->sm.want_up != want_before);
}

void Supervisor::Impl::perform(Worker* w, Action& a, pid_t old_pid, std::vector<Event>& pending) {
    if (auto* log = std::get_if<action::Log>(&a)) {
        log_event(w, log->level, log->message);
    } else if (auto* ab = std::get_if<action::Abandon>(&a)) {
        abandon(w, old_pid, ab->sig, ab->grace);
    } else if (auto* sig = std::get_if<action::Signal>(&a)) {
        pid_t pid = w->sm.pid != 0 ? w->sm.pid : old_pid;
        // KILL takes the worker's whole process group, so no grandchild outlives it.
        pid_t target = sig->sig == SIGKILL ? -pid : pid;
        int error = pid > 0 ? exec.kill(target, sig->sig) : 0;
        if (error == ESRCH && target < 0) error = exec.kill(pid, SIGKILL);  // no group yet
        if (error != 0 && error != ESRCH)
            spdlog::critical("{}: kill({}, {}) failed: {}", label(w), target, signal_name(sig->sig),
                             std::strerror(error));
    } else if (auto* arm = std::get_if<action::ArmDeadline>(&a)) {
        std::uint64_t id = w->id;
        w->timer->arm(arm->at, [this, id] {
            // After a stall of the loop, heartbeats may be queued that were sent in time:
            // this worker's are read before it is judged (its socket only: a crash loop of
            // many slots must not read every socket at every deadline).
            auto it = workers.find(id);
            if (it != workers.end() && it->second->notify) it->second->notify->drain();
            it = workers.find(id);
            if (it != workers.end()) on_deadline(it->second.get());
        });
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
    // The worker must find its sockets listening; while nothing of the program serves,
    // its starts are paced (this one is the probe).
    if (prog.sockets.is_shut() || !prog.sockets.all_listening()) open_door(prog);
    pacing::spawned(prog.pace, now());
    // What the previous process of this slot reported is not this one's.
    w->status.clear();
    w->fields.clear();
    Started r = exec.spawn(make_spawn_spec(spec.config, spec.plan, ctx), label(w), spec.plan.path);
    if (r.pid < 0) {
        spdlog::critical("{}: cannot start a worker: {}() failed: {}", label(w), r.call,
                         std::strerror(r.error));
        return event::SpawnFailed{r.error};
    }
    pids[r.pid] = w;
    return event::Spawned{r.pid};
}

void Supervisor::Impl::after_dispatch(Worker* w, SlotState before, bool moved) {
    std::uint64_t id = w->id;
    Program* prog = w->program;
    if (w->waiting)
        rollout_worker_changed(w, before);  // may stop, even drop, w
    else if (w->replaces != 0)
        recycle_changed(w, before);
    auto it = workers.find(id);
    if (it != workers.end() && !prog->all_ready_logged && !prog->slots.empty()) {
        bool all = true;
        for (const Worker* s : prog->slots) all = all && s->sm.state == SlotState::ready;
        if (all) {
            prog->all_ready_logged = true;
            spdlog::info("{}: all {} workers ready in {}", prog->name, prog->slots.size(),
                         format_duration(std::chrono::duration_cast<Duration>(now() -
                                                                              prog->started_at)));
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
        if (current && s.state == SlotState::ready && s.late && !w->recycling && !prog->rollout &&
            !prog->removed && !stopping)
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
    if (stopping) finish_if_stopped();
}

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
    if (s.state == SlotState::ready && s.late && w->recycling && s.deadline && now >= *s.deadline)
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
    a->timer->arm(a->since + grace, [this, pid] {
        auto it = abandoned.find(pid);
        if (it == abandoned.end()) return;
        spdlog::warn("{}: abandoned pid {} still running after abort_timeout: sending SIGKILL",
                     it->second->label, pid);
        if (exec.kill(-pid, SIGKILL) != 0) exec.kill(pid, SIGKILL);
    });
    abandoned[pid] = std::move(a);
}

void Supervisor::Impl::start_spare(Worker* w) {
    Program& prog = *w->program;
    w->recycling = true;
    Worker* spare = add_worker(prog, w->slot, prog.spec, prog.sockets.for_slot(w->slot));
    spare->replaces = w->id;
    spare->replace_cause = ExitCause::watchdog;
    spdlog::warn("{}: pid {} is late: starting a spare on its sockets", label(w), w->sm.pid);
    dispatch(spare, event::Start{});
}

void Supervisor::Impl::promote_spare(Worker* late) {
    Program& prog = *late->program;
    Worker* spare = nullptr;
    for (auto& [id, other] : workers)
        if (other->replaces == late->id) spare = other.get();
    late->recycling = false;
    if (!spare) return;
    spare->replaces = 0;
    spare->replace_cause = ExitCause::none;
    spare->sm.restarts = late->sm.restarts + 1;
    auto index = static_cast<std::size_t>(late->slot);
    if (index >= prog.slots.size() || prog.slots[index] != late) {
        // The slot went on without the late worker (scaled away, rolled, removed): its
        // spare has nothing to take over.
        spare->retiring = true;
        return dispatch(spare, event::Stop{});
    }
    prog.slots[index] = spare;
    late->retiring = true;
    spdlog::warn("{}: spare pid {} takes over from hung pid {}", label(spare), spare->sm.pid,
                 late->sm.pid);
    dispatch(late, event::Release{});
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
        causes += (causes.empty() ? "" : ", ") + cause + " " + std::to_string(n);
    int ready = 0;
    for (const Worker* w : p.slots) ready += w->sm.state == SlotState::ready;
    spdlog::warn(
        "{}: {} more worker events in the last {} not logged one by one; {}/{} ready; "
        "exits since start: {}",
        p.name, p.log_suppressed,
        format_duration(std::chrono::duration_cast<Duration>(now() - p.log_window_start)),
        ready, p.slots.size(), causes);
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
            if (w->sm.state != SlotState::ready || w->recycling) continue;
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
    w->recycling = true;
    Worker* next = add_worker(prog, w->slot, prog.spec, prog.sockets.for_slot(w->slot));
    next->replaces = w->id;
    dispatch(next, event::Start{});
}

// The replacement of a recycled worker is up (take its slot, the old one drains with cause
// "memory") or failed to come up (keep the old one; the next check tries again).
void Supervisor::Impl::recycle_changed(Worker* w, SlotState before) {
    const Slot& s = w->sm;
    StartOutcome outcome = start_outcome(s, before);
    if (outcome == StartOutcome::pending) return;
    bool ready = outcome == StartOutcome::ready;
    auto it = workers.find(w->replaces);
    Worker* old = it == workers.end() ? nullptr : it->second.get();
    w->replaces = 0;
    if (old) old->recycling = false;
    Program& prog = *w->program;
    auto index = static_cast<std::size_t>(w->slot);
    bool late_spare = w->replace_cause == ExitCause::watchdog;
    w->replace_cause = ExitCause::none;
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
                          late_spare ? "a late worker" : "memory recycling", old ? old->sm.pid : 0);
        w->retiring = true;
        return dispatch(w, event::Stop{});
    }
    prog.slots[index] = w;
    old->retiring = true;
    if (late_spare) {
        w->sm.restarts = old->sm.restarts + 1;
        spdlog::warn(
            "{}: spare pid {} ready: takes over from late pid {} (aborted if it sends "
            "no heartbeat within its watchdog, stopped if it does)",
            label(w), w->sm.pid, old->sm.pid);
        return dispatch(old, event::Release{});
    }
    dispatch(old, event::Recycle{});
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

// A retired worker is gone: forget it, and with it the last reference to the sockets only
// it held (a slot scaled away). What is still queued there now is lost: count and say so.
void Supervisor::Impl::drop_worker(Worker* w) {
    Program* prog = w->program;
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
    std::shared_ptr<Operation> on_exit = std::move(w->on_exit);
    workers.erase(w->id);
    // A closed socket moved its group's last socket into its index: steer anew (every
    // program: a group can be shared while an address moves from one program to another).
    for (auto& p : programs) {
        if (p->removed || !closes_socket) continue;
        p->steered.reset();
        resteer(*p);
    }
    if (on_exit) part_done(on_exit, true, "");
    if (!prog->removed) return;
    for (const auto& [id, other] : workers)
        if (other->program == prog) return;
    spdlog::info("{}: removed", prog->name);
    std::erase_if(programs, [prog](const auto& p) { return p.get() == prog; });
}

// ---- events from the outside ----

void Supervisor::Impl::on_child_exit(pid_t pid, int status) {
    auto it = pids.find(pid);
    if (it == pids.end()) {
        if (auto a = abandoned.find(pid); a != abandoned.end()) {
            exec.kill(-pid, SIGKILL);  // whatever it left in its process group
            spdlog::warn("{}: abandoned pid {} {} {} after it was given up", a->second->label, pid,
                         ExitStatus::from_wait_status(status).describe(),
                         format_duration(std::chrono::duration_cast<Duration>(now() -
                                                                              a->second->since)));
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
    dispatch(w, event::Exited{ExitStatus::from_wait_status(status)});
}

void Supervisor::Impl::open_notify(Worker* w) {
    std::uint64_t id = w->id;
    const LaunchPlan& plan = w->spec->plan;
    w->notify = std::make_unique<NotifySocket>(
        io, *notify_dir, std::to_string(id), plan.uid, plan.uid ? plan.gid : std::nullopt, label(w),
        notify_counters, [this, id](pid_t pid, const NotifyMessage& m) { on_notify(id, pid, m); });
    w->notify->start();
}

void Supervisor::Impl::on_notify(std::uint64_t id, pid_t pid, const NotifyMessage& m) {
    auto wit = workers.find(id);
    if (wit == workers.end()) return;
    Worker* w = wit->second.get();
    if (pid != w->sm.pid || w->sm.pid == 0) {
        auto it = pids.find(pid);
        // A process given up on (abandoned after a watchdog or start timeout, still running
        // until abort_timeout) keeps this slot's NOTIFY_SOCKET, as do its children (its
        // process group): it must not speak for the worker that replaced it.
        pid_t group = ::getpgid(pid);
        bool given_up = abandoned.count(pid) > 0 || (group > 0 && abandoned.count(group) > 0);
        if (it != pids.end() || given_up || w->spec->config.notify_access == NotifyAccess::main ||
            w->sm.pid == 0) {
            // Another worker's pid (its descendants sharing the uid), a process of this
            // slot's previous run, or a child under notify_access: main.
            ++notify_counters.foreign_sender;
            w->notify->warn("notify message from pid " + std::to_string(pid) + " ignored: " +
                            (it != pids.end() ? "another worker"
                             : given_up       ? "a process of the slot's previous run"
                                        : "not the worker's pid " + std::to_string(w->sm.pid) +
                                              " (notify_access: main)"));
            return;
        }
    }
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
        dispatch(w, event::Ready{pace});
    }
    if (m.watchdog && workers.count(id)) dispatch(w, event::Heartbeat{});
}

void Supervisor::Impl::on_signal(int sig) {
    if (stopping && sig != SIGTERM && sig != SIGINT) {
        spdlog::warn("{} ignored: clusterd is shutting down", signal_name(sig));
        return;
    }
    switch (sig) {
        case SIGTERM:
        case SIGINT:
            return handle_stop(sig);
        case SIGHUP:
            return handle_hup();
        case SIGUSR1:
            return handle_usr1();
        case SIGTTIN:
            return handle_scale_signal(+1);
        case SIGTTOU:
            return handle_scale_signal(-1);
        default:
            spdlog::warn("{} received: not supported by this version of clusterd, ignored",
                         signal_name(sig));
    }
}

/// TERM/INT: graceful stop of everything; a second one kills what is left.
void Supervisor::Impl::handle_stop(int sig) {
    auto kill_all = [this] {
        for (const auto& [pid, a] : abandoned)
            if (exec.kill(-pid, SIGKILL) != 0) exec.kill(pid, SIGKILL);
        std::vector<std::uint64_t> ids;
        for (const auto& [id, w] : workers) ids.push_back(id);
        for (auto id : ids)
            if (auto it = workers.find(id); it != workers.end())
                dispatch(it->second.get(), event::Kill{});
    };
    if (stopping) {
        spdlog::warn("{} again: killing the remaining workers", signal_name(sig));
        return kill_all();
    }
    stopping = true;
    if (systemd_notify) clusterd::notify("STOPPING=1");
    for (auto& prog : programs) {  // whoever waits on a rolling restart gets its end
        if (!prog->rollout) continue;
        auto op = prog->rollout->op;
        prog->rollout.reset();
        part_done(op, false, prog->name + ": rolling restart interrupted: clusterd is stopping");
    }
    spdlog::info("{} received: stopping all workers (shutdown_timeout {})", signal_name(sig),
                 format_duration(config.daemon.shutdown_timeout));
    shutdown_timer->arm(now() + config.daemon.shutdown_timeout, [kill_all] {
        spdlog::warn("shutdown_timeout reached: killing the remaining workers");
        kill_all();
    });
    std::vector<std::uint64_t> ids;
    for (const auto& [id, w] : workers) ids.push_back(id);
    for (auto id : ids)
        if (auto it = workers.find(id); it != workers.end()) {
            abandon_wait(it->second.get(), "clusterd is shutting down");
            dispatch(it->second.get(), event::Stop{});
        }
    finish_if_stopped();
}

/// HUP: reload the config file.
void Supervisor::Impl::handle_hup() {
    reload(log_reporter("reload (SIGHUP)"));
}

/// USR1: reopen output files (logrotate's convention).
void Supervisor::Impl::handle_usr1() {
    std::set<const ProgramSpec*> done;
    auto reopen = [&](const ProgramSpec& spec) {
        if (!spec.output || !*spec.output || !done.insert(&spec).second) return;
        try {
            *spec.output = open_output(spec.config.output);
        } catch (const std::exception& e) {
            spdlog::critical("{}: {}", spec.config.name, e.what());
        }
    };
    for (const auto& prog : programs) reopen(*prog->spec);
    for (const auto& [id, w] : workers) reopen(*w->spec);
    if (!config.daemon.log_file.empty()) {
        try {
            reopen_log(config.daemon.log_file);
        } catch (const std::exception& e) {
            spdlog::critical("daemon.log_file not reopened: {}", e.what());
        }
    }
    spdlog::info("SIGUSR1 received: output files{} reopened",
                 config.daemon.log_file.empty() ? "" : " and the log file");
}

/// TTIN/TTOU: one worker more/less for every program.
void Supervisor::Impl::handle_scale_signal(int delta) {
    auto op = std::make_shared<Operation>();
    op->reporter = log_reporter(delta > 0 ? "SIGTTIN" : "SIGTTOU");
    op->pending = 1;  // held until every program is handled
    for (auto& prog : programs) {
        if (prog->removed) continue;
        int n = static_cast<int>(prog->slots.size()) + delta;
        if (n < 1 || n > limits::kMaxWorkers) {
            spdlog::warn("{}: {} ignored: {}", prog->name, delta > 0 ? "SIGTTIN" : "SIGTTOU",
                         n < 1 ? std::string("already 1 worker")
                               : "already " + std::to_string(limits::kMaxWorkers) +
                                     " workers, the most a program may have");
            continue;
        }
        scale(*prog, n, op);
        if (static_cast<int>(prog->slots.size()) == n) prog->runtime_scale = n;  // it happened
    }
    persist_scale();
    part_done(op, true, "");
}

// sd_notify to our own supervisor (systemd), when there is one: READY=1 once every slot's
// first worker is ready, has failed for good, or has failed at all (a crash-looping program
// must not hold back READY=1 until systemd's start timeout kills the whole service), then
// STATUS= on change.
void Supervisor::Impl::report_to_systemd() {
    if (!systemd_notify) return;
    std::string status;
    bool settled = true;
    for (const auto& prog : programs) {
        std::size_t ready = 0;
        for (const Worker* w : prog->slots) {
            SlotState st = w->sm.state;
            if (st == SlotState::ready) ++ready;
            if (st != SlotState::ready && st != SlotState::failed &&
                !(st == SlotState::stopped && !w->sm.want_up) && w->sm.failures == 0)
                settled = false;
        }
        if (!status.empty()) status += ", ";
        status += prog->name + " " + std::to_string(ready) + "/" +
                  std::to_string(prog->slots.size()) + " ready";
    }
    std::string message;
    if (settled && !sent_ready && !stopping) {
        sent_ready = true;
        message = "READY=1\n";
    }
    if (status != last_status) message += "STATUS=" + status;
    last_status = status;
    if (!message.empty()) clusterd::notify(message);
}

// As PID 1 or a subreaper, the master inherits the orphans of its workers (a daemonized
// helper a crashed worker left behind). None may outlive it: whatever child is left when
// every worker has stopped is killed. It is reaped by the Reaper until the master exits.
void Supervisor::Impl::kill_leftovers() {
    std::vector<pid_t> left = exec.children();
    if (left.empty()) return;
    spdlog::warn("killing {} process{} left behind by stopped workers", left.size(),
                 left.size() == 1 ? "" : "es");
    for (pid_t child : left) exec.kill(child, SIGKILL);
}

// WATCHDOG=1 from the loop itself: a master stuck anywhere stops sending it.
void Supervisor::Impl::do_systemd_watchdog(std::chrono::microseconds interval) {
    clusterd::notify("WATCHDOG=1");
    systemd_watchdog->arm(now() + interval, [this, interval] { do_systemd_watchdog(interval); });
}

void Supervisor::Impl::finish_if_stopped() {
    if (finished || !pids.empty() || !abandoned.empty()) return;
    finished = true;
    memory_timer->cancel();
    listener_timer->cancel();
    if (metrics) metrics->close();
    kill_leftovers();
    spdlog::info("all workers stopped; exiting");
    shutdown_timer->cancel();
    systemd_watchdog->cancel();
    for (auto& [id, w] : workers) {
        w->timer->cancel();
        w->notify.reset();
    }
    for (auto& p : programs) {
        if (p->probe_timer) p->probe_timer->cancel();
        if (p->log_timer) p->log_timer->cancel();
        flush_log_summary(*p);
    }
    exec.finish();
}

Supervisor::Supervisor(asio::io_context& io, Config config, std::string config_path,
                       std::string builtin_worker, std::vector<std::string> environment,
                       DaemonOverrides overrides)
    : exec_(std::make_unique<AsioExecutor>(io)) {
    impl_ = std::make_unique<Impl>(io, *exec_, std::move(config), std::move(config_path),
                                   std::move(builtin_worker), std::move(environment));
    impl_->overrides = std::move(overrides);
    impl_->overrides.apply(impl_->config.daemon);
}

Supervisor::~Supervisor() {
    impl_.reset();  // before the executor whose timers and threads it uses
}

void Supervisor::start() {
    impl_->start();
}

void Supervisor::command(const nlohmann::json& request, std::shared_ptr<Reporter> reporter) {
    impl_->command(request, std::move(reporter));
}

void Supervisor::adopt_sockets(const std::map<std::string, int>& sockets) {
    for (const auto& [name, fd] : sockets)
        impl_->activated[name] = std::make_shared<const UniqueFd>(fd);
}

int Supervisor::exit_code() const {
    return exit_code::ok;
}

}  // namespace clusterd

#include "daemon/supervisor.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

#include "common/duration.hpp"
#include "common/exit_codes.hpp"
#include "common/signals.hpp"
#include "daemon/proc_stats.hpp"
#include "daemon/spawner.hpp"
#include "daemon/supervisor_impl.hpp"
#include "daemon/systemd.hpp"

namespace clusterd {

using boost::system::error_code;

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

Supervisor::Impl::Impl(asio::io_context& io_, Config cfg, std::string path, std::string worker,
                       std::vector<std::string> env)
    : io(io_),
      config(std::move(cfg)),
      config_path(std::move(path)),
      builtin_worker(std::move(worker)),
      environment(std::move(env)),
      signals(io_),
      shutdown_timer(io_),
      reaper(io_, [this](pid_t pid, int status) { on_child_exit(pid, status); }),
      notify(io_, [this](pid_t pid, const NotifyMessage& m) { on_notify(pid, m); }),
      systemd_notify(std::getenv("NOTIFY_SOCKET") != nullptr),
      systemd_watchdog(io_),
      memory_timer(io_) {}

// ---- start-up: everything that can fail happens before the first fork ----

void Supervisor::Impl::start() {
    started_at = Clock::now();
    std::string error;
    state = load_state(config.daemon.state_dir, error);
    if (!error.empty()) spdlog::warn("ignoring unreadable state file: {}", error);
    for (const auto& pc : config.programs) {
        auto it = state.scale.find(pc.name);
        int n = it != state.scale.end() ? it->second : pc.workers;
        auto prog = make_program(pc, n);
        if (it != state.scale.end()) {
            prog->runtime_scale = n;
            spdlog::info("{}: {} workers from a runtime scale (config says {})", pc.name, n,
                         pc.workers);
        }
        programs.push_back(std::move(prog));
    }
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
    reaper.start();
    notify.start();
    arm_memory_check();
    if (auto interval = systemd_watchdog_interval(); interval.count() > 0)
        do_systemd_watchdog(interval / 2);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU}) signals.add(sig);
    do_wait_signal();
    for (auto& prog : programs) {
        spdlog::info("{}: starting {} worker{} ({})", prog->name, prog->slots.size(),
                     prog->slots.size() == 1 ? "" : "s", prog->spec->plan.path);
        prog->started_at = Clock::now();
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

std::unique_ptr<Program> Supervisor::Impl::make_program(const ProgramConfig& pc, int n) {
    auto prog = std::make_unique<Program>();
    prog->name = pc.name;
    prog->spec = make_spec(pc, 1);
    prog->sockets = SocketTable(pc.listen, n, nullptr, &activated);
    resteer(*prog);
    for (int k = 0; k < n; ++k)
        prog->slots.push_back(add_worker(*prog, k, prog->spec, prog->sockets.for_slot(k)));
    for (const auto& l : pc.listen)
        spdlog::info("{}: listening on {} ({}{})", pc.name, l.address(), l.name,
                     l.reuseport ? ", one reuseport socket per worker" : ", shared socket");
    return prog;
}

Worker* Supervisor::Impl::add_worker(Program& prog, int slot,
                                     std::shared_ptr<const ProgramSpec> spec,
                                     std::vector<SocketRef> sockets) {
    std::uint64_t id = next_worker_id++;
    auto w = std::make_unique<Worker>(io, id, &prog, slot, std::move(spec), std::move(sockets));
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
    std::vector<Event> pending{std::move(ev)};
    for (std::size_t i = 0; i < pending.size(); ++i) {
        Event e = std::move(pending[i]);
        Transition t = step(w->sm, w->spec->policy, e, Clock::now());
        pid_t old_pid = w->sm.pid;
        w->sm = std::move(t.next);
        if (std::holds_alternative<event::Exited>(e) ||
            std::holds_alternative<event::SpawnFailed>(e))
            ++w->program->exits[to_string(w->sm.last_cause)];
        if (old_pid != 0 && w->sm.pid != old_pid) pids.erase(old_pid);
        for (auto& a : t.actions) perform(w, a, old_pid, pending);
    }
    after_dispatch(w, before);
}

void Supervisor::Impl::perform(Worker* w, Action& a, pid_t old_pid, std::vector<Event>& pending) {
    if (auto* log = std::get_if<action::Log>(&a)) {
        spdlog::log(to_spdlog(log->level), "{}: {}", label(w), log->message);
    } else if (auto* sig = std::get_if<action::Signal>(&a)) {
        pid_t pid = w->sm.pid != 0 ? w->sm.pid : old_pid;
        // KILL takes the worker's whole process group, so no grandchild outlives it.
        pid_t target = sig->sig == SIGKILL ? -pid : pid;
        int rc = pid > 0 ? ::kill(target, sig->sig) : 0;
        if (rc < 0 && errno == ESRCH && target < 0) rc = ::kill(pid, SIGKILL);  // no group yet
        if (rc < 0 && errno != ESRCH)
            spdlog::critical("{}: kill({}, {}) failed: {}", label(w), target, signal_name(sig->sig),
                             std::strerror(errno));
    } else if (auto* arm = std::get_if<action::ArmDeadline>(&a)) {
        w->timer.expires_at(arm->at);
        std::uint64_t id = w->id;
        w->timer.async_wait([this, id](const error_code& ec) {
            auto it = workers.find(id);
            if (!ec && it != workers.end()) dispatch(it->second.get(), event::Deadline{});
        });
    } else if (std::holds_alternative<action::CancelDeadline>(a)) {
        w->timer.cancel();
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
    ctx.notify_socket = notify.address();
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
    SpawnResult r = spawn(make_spawn_spec(spec.config, spec.plan, ctx));
    if (r.pid < 0) {
        spdlog::critical("{}: fork() failed: {}", label(w), std::strerror(r.error));
        return event::SpawnFailed{r.error};
    }
    pids[r.pid] = w;
    watch_exec(w, r.pid, std::move(r.status_pipe));
    return event::Spawned{r.pid};
}

// The status pipe reports a failed set-up step or execve; read it on the loop.
void Supervisor::Impl::watch_exec(Worker* w, pid_t pid, UniqueFd pipe) {
    auto sd = std::make_shared<asio::posix::stream_descriptor>(io, pipe.release());
    auto failure = std::make_shared<SpawnFailure>();
    std::string who = label(w);
    std::string path = w->spec->plan.path;
    sd->async_read_some(asio::buffer(failure.get(), sizeof *failure),
                        [sd, failure, who, path, pid](const error_code& ec, std::size_t n) {
                            if (ec || n != sizeof *failure) return;  // EOF: execve succeeded
                            spdlog::critical("{}: {}(\"{}\") failed in pid {}: {}", who,
                                             spawn_step_name(failure->step), path, pid,
                                             std::strerror(failure->error));
                        });
}

void Supervisor::Impl::after_dispatch(Worker* w, SlotState before) {
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
                         format_duration(std::chrono::duration_cast<Duration>(Clock::now() -
                                                                              prog->started_at)));
        }
    }
    if (std::any_of(programs.begin(), programs.end(),
                    [prog](const auto& p) { return p.get() == prog; }))
        resteer(*prog);
    if (it != workers.end() && w->retiring && gone(w->sm)) drop_worker(w);
    report_to_systemd();
    if (stopping) finish_if_stopped();
}

// ---- memory_limit: a worker past it is replaced (new one first) and drains ----

// Polls RSS once a second, and only while some program sets a memory_limit.
void Supervisor::Impl::arm_memory_check() {
    bool wanted = std::any_of(programs.begin(), programs.end(), [](const auto& p) {
        return !p->removed && p->spec->config.memory_limit > 0;
    });
    if (!wanted || memory_timer_armed || stopping) return;
    memory_timer_armed = true;
    memory_timer.expires_after(std::chrono::seconds(1));
    memory_timer.async_wait([this](const error_code& ec) {
        memory_timer_armed = false;
        if (ec) return;
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
            auto stats = read_proc_stats(w->sm.pid);
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
    // The slot may have been scaled away, stopped or handed to another worker meanwhile.
    bool still_wanted = !prog.removed && index < prog.slots.size() && old &&
                        prog.slots[index] == old && old->sm.want_up;
    if (!ready || !still_wanted) {
        spdlog::error("{}: the replacement for memory recycling did not come up; keeping pid {}",
                      label(w), old ? old->sm.pid : 0);
        w->retiring = true;
        return dispatch(w, event::Stop{});
    }
    prog.slots[index] = w;
    old->retiring = true;
    dispatch(old, event::Recycle{});
}

// New connections go only to slots whose worker is ready (all of them when none is): a
// slot whose worker crashed keeps what is already queued for its replacement, but gets
// nothing new while it waits out its backoff; a slot being scaled away gets nothing new.
void Supervisor::Impl::resteer(Program& prog) {
    std::vector<int> live;
    for (const Worker* w : prog.slots)
        if (w->sm.state == SlotState::ready) live.push_back(w->slot);
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
        spdlog::debug("reaped pid {} (not a worker): {}", pid,
                      ExitStatus::from_wait_status(status).describe());
        return;
    }
    Worker* w = it->second;
    pids.erase(it);
    // The worker led its own process group; whatever it left in it (a crash, an exit on its
    // own, SIGABRT from the watchdog) must not outlive it. The group id cannot be reused
    // while the group has members, so this reaches only the worker's leftovers.
    if (::kill(-pid, SIGKILL) == 0)
        spdlog::warn("{}: killed the processes pid {} left in its process group", label(w), pid);
    dispatch(w, event::Exited{ExitStatus::from_wait_status(status)});
}

void Supervisor::Impl::on_notify(pid_t pid, const NotifyMessage& m) {
    auto it = pids.find(pid);
    if (it == pids.end()) {
        spdlog::debug("notify message from pid {} (not a worker) ignored", pid);
        return;
    }
    Worker* w = it->second;
    if (m.status) w->status = *m.status;
    for (const auto& [k, v] : m.fields) w->fields[k] = v;
    std::uint64_t id = w->id;
    if (m.ready) dispatch(w, event::Ready{});
    if (m.watchdog && workers.count(id)) dispatch(w, event::Heartbeat{});
}

void Supervisor::Impl::do_wait_signal() {
    signals.async_wait([this](const error_code& ec, int sig) {
        if (ec) return;
        on_signal(sig);
        if (!finished) do_wait_signal();
    });
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
    shutdown_timer.expires_after(config.daemon.shutdown_timeout);
    shutdown_timer.async_wait([this, kill_all](const error_code& ec) {
        if (ec) return;
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
    spdlog::info("SIGUSR1 received: output files reopened");
}

/// TTIN/TTOU: one worker more/less for every program.
void Supervisor::Impl::handle_scale_signal(int delta) {
    auto op = std::make_shared<Operation>();
    op->reporter = log_reporter(delta > 0 ? "SIGTTIN" : "SIGTTOU");
    op->pending = 1;  // held until every program is handled
    for (auto& prog : programs) {
        if (prog->removed) continue;
        int n = static_cast<int>(prog->slots.size()) + delta;
        if (prog->rollout || n < 1) {
            spdlog::warn("{}: {} ignored: {}", prog->name, delta > 0 ? "SIGTTIN" : "SIGTTOU",
                         prog->rollout ? "a rolling restart is in progress" : "already 1 worker");
            continue;
        }
        prog->runtime_scale = n;
        scale(*prog, n, op);
    }
    persist_scale();
    part_done(op, true, "");
}

// sd_notify to our own supervisor (systemd), when there is one: READY=1 once every
// program's initial workers are ready or have failed for good, then STATUS= on change.
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
                !(st == SlotState::stopped && !w->sm.want_up))
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
    std::string pid = std::to_string(::getpid());
    std::ifstream in("/proc/" + pid + "/task/" + pid + "/children");
    std::vector<pid_t> left;
    for (pid_t child; in >> child;) left.push_back(child);
    if (left.empty()) return;
    spdlog::warn("killing {} process{} left behind by stopped workers", left.size(),
                 left.size() == 1 ? "" : "es");
    for (pid_t child : left) ::kill(child, SIGKILL);
}

// WATCHDOG=1 from the loop itself: a master stuck anywhere stops sending it.
void Supervisor::Impl::do_systemd_watchdog(std::chrono::microseconds interval) {
    clusterd::notify("WATCHDOG=1");
    systemd_watchdog.expires_after(interval);
    systemd_watchdog.async_wait([this, interval](const error_code& ec) {
        if (!ec) do_systemd_watchdog(interval);
    });
}

void Supervisor::Impl::finish_if_stopped() {
    if (finished || !pids.empty()) return;
    finished = true;
    memory_timer.cancel();
    if (metrics) metrics->close();
    kill_leftovers();
    spdlog::info("all workers stopped; exiting");
    shutdown_timer.cancel();
    systemd_watchdog.cancel();
    signals.cancel();
    notify.close();
    for (auto& [id, w] : workers) w->timer.cancel();
    io.stop();
}

Supervisor::Supervisor(asio::io_context& io, Config config, std::string config_path,
                       std::string builtin_worker, std::vector<std::string> environment)
    : impl_(std::make_unique<Impl>(io, std::move(config), std::move(config_path),
                                   std::move(builtin_worker), std::move(environment))) {}

Supervisor::~Supervisor() = default;

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

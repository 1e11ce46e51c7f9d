#include "daemon/supervisor.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_map>

#include "common/duration.hpp"
#include "common/exit_codes.hpp"
#include "common/fd.hpp"
#include "common/signals.hpp"
#include "daemon/launch.hpp"
#include "daemon/listeners.hpp"
#include "daemon/notify_receiver.hpp"
#include "daemon/reaper.hpp"
#include "daemon/slot.hpp"
#include "daemon/spawner.hpp"

namespace clusterd {

namespace asio = boost::asio;
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

}  // namespace

struct WorkerSlot {
    explicit WorkerSlot(asio::io_context& io) : timer(io) {}
    Slot slot;
    asio::steady_timer timer;
    std::string status;                         // last STATUS= text
    std::map<std::string, std::string> fields;  // last X_CLUSTERD_* values
};

struct Program {
    ProgramConfig config;
    SlotPolicy policy;
    LaunchPlan plan;
    std::unique_ptr<ProgramListeners> listeners;
    UniqueFd output;
    std::uint64_t generation = 1;
    std::vector<std::unique_ptr<WorkerSlot>> slots;
    TimePoint started_at{};
    bool all_ready_logged = false;
};

struct SlotRef {
    std::size_t program;
    std::size_t slot;
};

struct Supervisor::Impl {
    Impl(asio::io_context& io_, Config cfg, std::string worker, std::vector<std::string> env)
        : io(io_),
          config(std::move(cfg)),
          builtin_worker(std::move(worker)),
          environment(std::move(env)),
          signals(io_),
          shutdown_timer(io_),
          reaper(io_, [this](pid_t pid, int status) { on_child_exit(pid, status); }),
          notify(io_, [this](pid_t pid, const NotifyMessage& m) { on_notify(pid, m); }) {}

    // ---- start-up (may throw: nothing runs yet) ----

    void start() {
        for (const auto& pc : config.programs) programs.push_back(make_program(pc));
        reaper.start();
        notify.start();
        for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU})
            signals.add(sig);
        do_wait_signal();
        for (std::size_t p = 0; p < programs.size(); ++p) {
            Program& prog = *programs[p];
            spdlog::info(
                "{}: starting {} worker{} ({})", prog.config.name, prog.config.workers,
                prog.config.workers == 1 ? "" : "s",
                prog.config.command.empty() ? "built-in worker " + prog.plan.path : prog.plan.path);
            prog.started_at = Clock::now();
            for (std::size_t s = 0; s < prog.slots.size(); ++s) dispatch({p, s}, event::Start{});
        }
    }

    std::unique_ptr<Program> make_program(const ProgramConfig& pc) {
        auto prog = std::make_unique<Program>();
        prog->config = pc;
        prog->policy = SlotPolicy::from(pc);
        prog->plan = LaunchPlan::resolve(pc, builtin_worker, environment);
        prog->listeners = std::make_unique<ProgramListeners>(pc, pc.workers);
        if (pc.output != "inherit") prog->output = open_output(pc.output);
        for (int i = 0; i < pc.workers; ++i)
            prog->slots.push_back(std::make_unique<WorkerSlot>(io));
        for (const auto& l : pc.listen)
            spdlog::info("{}: listening on {} ({}{})", pc.name, l.address(), l.name,
                         l.reuseport ? ", one reuseport socket per worker" : ", shared socket");
        return prog;
    }

    static UniqueFd open_output(const std::string& path) {
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
        if (!fd)
            throw std::system_error(errno, std::system_category(), "open(" + path + ") failed");
        return fd;
    }

    // ---- the one dispatch ----

    void dispatch(SlotRef ref, Event ev) {
        std::deque<Event> pending{std::move(ev)};
        while (!pending.empty()) {
            Event e = std::move(pending.front());
            pending.pop_front();
            Program& prog = *programs[ref.program];
            WorkerSlot& ws = *prog.slots[ref.slot];
            Transition t = step(ws.slot, prog.policy, e, Clock::now());
            pid_t old_pid = ws.slot.pid;
            ws.slot = std::move(t.next);
            if (old_pid != 0 && ws.slot.pid != old_pid) pids.erase(old_pid);
            for (auto& a : t.actions) perform(ref, a, old_pid, pending);
        }
        after_dispatch(ref);
    }

    void perform(SlotRef ref, Action& a, pid_t old_pid, std::deque<Event>& pending) {
        Program& prog = *programs[ref.program];
        WorkerSlot& ws = *prog.slots[ref.slot];
        if (auto* log = std::get_if<action::Log>(&a)) {
            spdlog::log(to_spdlog(log->level), "{}[{}]: {}", prog.config.name, ref.slot,
                        log->message);
        } else if (auto* sig = std::get_if<action::Signal>(&a)) {
            pid_t pid = ws.slot.pid != 0 ? ws.slot.pid : old_pid;
            if (pid > 0) send_signal(prog, ref, pid, sig->sig);
        } else if (auto* arm = std::get_if<action::ArmDeadline>(&a)) {
            ws.timer.expires_at(arm->at);
            ws.timer.async_wait([this, ref](const error_code& ec) {
                if (!ec) dispatch(ref, event::Deadline{});
            });
        } else if (std::holds_alternative<action::CancelDeadline>(a)) {
            ws.timer.cancel();
        } else if (std::holds_alternative<action::Spawn>(a)) {
            pending.push_back(do_spawn(ref));
        }
    }

    void send_signal(Program& prog, SlotRef ref, pid_t pid, int sig) {
        // KILL takes the worker's whole process group, so no grandchild outlives it.
        pid_t target = sig == SIGKILL ? -pid : pid;
        if (::kill(target, sig) < 0 && errno != ESRCH)
            spdlog::critical("{}[{}]: kill({}, {}) failed: {}", prog.config.name, ref.slot, target,
                             signal_name(sig), std::strerror(errno));
    }

    Event do_spawn(SlotRef ref) {
        Program& prog = *programs[ref.program];
        static const std::vector<int> cpus = allowed_cpus();
        SlotContext ctx;
        ctx.slot = static_cast<int>(ref.slot);
        ctx.workers = static_cast<int>(prog.slots.size());
        ctx.generation = prog.generation;
        ctx.notify_socket = notify.address();
        ctx.listen_fds = prog.listeners->fds_for(ctx.slot);
        ctx.listen_names = prog.listeners->names();
        ctx.output_fd = prog.output.get();
        if (prog.config.cpu_affinity && !cpus.empty()) ctx.cpu = cpus[ref.slot % cpus.size()];
        SpawnResult r = spawn(make_spawn_spec(prog.config, prog.plan, ctx));
        if (r.pid < 0) {
            spdlog::critical("{}[{}]: fork() failed: {}", prog.config.name, ref.slot,
                             std::strerror(r.error));
            return event::SpawnFailed{r.error};
        }
        pids[r.pid] = ref;
        watch_exec(ref, r.pid, std::move(r.status_pipe));
        return event::Spawned{r.pid};
    }

    // The status pipe reports a failed set-up step or execve; read it on the loop.
    void watch_exec(SlotRef ref, pid_t pid, UniqueFd pipe) {
        auto sd = std::make_shared<asio::posix::stream_descriptor>(io, pipe.release());
        auto failure = std::make_shared<SpawnFailure>();
        sd->async_read_some(asio::buffer(failure.get(), sizeof *failure),
                            [this, ref, pid, sd, failure](const error_code& ec, std::size_t n) {
                                if (ec || n != sizeof *failure) return;  // EOF: execve succeeded
                                const Program& prog = *programs[ref.program];
                                spdlog::critical("{}[{}]: {}(\"{}\") failed in pid {}: {}",
                                                 prog.config.name, ref.slot,
                                                 spawn_step_name(failure->step), prog.plan.path,
                                                 pid, std::strerror(failure->error));
                            });
    }

    void after_dispatch(SlotRef ref) {
        Program& prog = *programs[ref.program];
        if (!prog.all_ready_logged) {
            bool all = true;
            for (const auto& ws : prog.slots) all = all && ws->slot.state == SlotState::ready;
            if (all) {
                prog.all_ready_logged = true;
                spdlog::info("{}: all {} workers ready in {}", prog.config.name, prog.slots.size(),
                             format_duration(std::chrono::duration_cast<Duration>(
                                 Clock::now() - prog.started_at)));
            }
        }
        report_to_systemd();
        if (stopping) finish_if_stopped();
    }

    // sd_notify to our own supervisor (systemd), when there is one: READY=1 once every
    // program's initial workers are ready or have failed for good, then STATUS= on change.
    void report_to_systemd() {
        if (!systemd_notify) return;
        std::string status;
        bool settled = true;
        for (const auto& prog : programs) {
            std::size_t ready = 0;
            for (const auto& ws : prog->slots) {
                SlotState st = ws->slot.state;
                if (st == SlotState::ready) ++ready;
                if (st != SlotState::ready && st != SlotState::failed &&
                    !(st == SlotState::stopped && !ws->slot.want_up))
                    settled = false;
            }
            if (!status.empty()) status += ", ";
            status += prog->config.name + " " + std::to_string(ready) + "/" +
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

    // ---- events from the outside ----

    void on_child_exit(pid_t pid, int status) {
        auto it = pids.find(pid);
        if (it == pids.end()) {
            spdlog::debug("reaped pid {} (not a worker): {}", pid,
                          ExitStatus::from_wait_status(status).describe());
            return;
        }
        SlotRef ref = it->second;
        pids.erase(it);
        dispatch(ref, event::Exited{ExitStatus::from_wait_status(status)});
    }

    void on_notify(pid_t pid, const NotifyMessage& m) {
        auto it = pids.find(pid);
        if (it == pids.end()) {
            spdlog::debug("notify message from pid {} (not a worker) ignored", pid);
            return;
        }
        SlotRef ref = it->second;
        WorkerSlot& ws = *programs[ref.program]->slots[ref.slot];
        if (m.status) ws.status = *m.status;
        for (const auto& [k, v] : m.fields) ws.fields[k] = v;
        if (m.ready) dispatch(ref, event::Ready{});
        if (m.watchdog) dispatch(ref, event::Heartbeat{});
    }

    void do_wait_signal() {
        signals.async_wait([this](const error_code& ec, int sig) {
            if (ec) return;
            on_signal(sig);
            if (!finished) do_wait_signal();
        });
    }

    void on_signal(int sig) {
        switch (sig) {
            case SIGTERM:
            case SIGINT:
                return handle_stop(sig);
            case SIGUSR1:
                return handle_usr1();
            default:
                spdlog::warn("{} received: not supported by this version of clusterd, ignored",
                             signal_name(sig));
        }
    }

    /// TERM/INT: graceful stop of everything; a second one kills what is left.
    void handle_stop(int sig) {
        if (stopping) {
            spdlog::warn("{} again: killing the remaining workers", signal_name(sig));
            for_each_slot([this](SlotRef ref) { dispatch(ref, event::Kill{}); });
            return;
        }
        stopping = true;
        if (systemd_notify) clusterd::notify("STOPPING=1");
        spdlog::info("{} received: stopping all workers (shutdown_timeout {})", signal_name(sig),
                     format_duration(config.daemon.shutdown_timeout));
        shutdown_timer.expires_after(config.daemon.shutdown_timeout);
        shutdown_timer.async_wait([this](const error_code& ec) {
            if (ec) return;
            spdlog::warn("shutdown_timeout reached: killing the remaining workers");
            for_each_slot([this](SlotRef ref) { dispatch(ref, event::Kill{}); });
        });
        for_each_slot([this](SlotRef ref) { dispatch(ref, event::Stop{}); });
        finish_if_stopped();
    }

    /// USR1: reopen output files (logrotate's convention).
    void handle_usr1() {
        for (auto& prog : programs) {
            if (prog->config.output == "inherit") continue;
            try {
                prog->output = open_output(prog->config.output);
            } catch (const std::exception& e) {
                spdlog::critical("{}: {}", prog->config.name, e.what());
            }
        }
        spdlog::info("SIGUSR1 received: output files reopened");
    }

    template <class F>
    void for_each_slot(F f) {
        for (std::size_t p = 0; p < programs.size(); ++p)
            for (std::size_t s = 0; s < programs[p]->slots.size(); ++s) f(SlotRef{p, s});
    }

    void finish_if_stopped() {
        if (finished || !pids.empty()) return;
        finished = true;
        spdlog::info("all workers stopped; exiting");
        shutdown_timer.cancel();
        signals.cancel();
        notify.close();
        for (auto& prog : programs) {
            for (auto& ws : prog->slots) ws->timer.cancel();
            prog->listeners.reset();
        }
        io.stop();
    }

    asio::io_context& io;
    Config config;
    std::string builtin_worker;
    std::vector<std::string> environment;
    asio::signal_set signals;
    asio::steady_timer shutdown_timer;
    Reaper reaper;
    NotifyReceiver notify;
    std::vector<std::unique_ptr<Program>> programs;
    std::unordered_map<pid_t, SlotRef> pids;
    bool stopping = false;
    bool finished = false;
    bool systemd_notify = std::getenv("NOTIFY_SOCKET") != nullptr;
    bool sent_ready = false;
    std::string last_status;
};

Supervisor::Supervisor(asio::io_context& io, Config config, std::string builtin_worker,
                       std::vector<std::string> environment)
    : impl_(std::make_unique<Impl>(io, std::move(config), std::move(builtin_worker),
                                   std::move(environment))) {}

Supervisor::~Supervisor() = default;

void Supervisor::start() {
    impl_->start();
}

int Supervisor::exit_code() const {
    return exit_code::ok;
}

}  // namespace clusterd

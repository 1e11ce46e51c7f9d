// The master's own signals (TERM/INT, HUP, USR1, TTIN/TTOU), what it tells systemd, and the
// end: every worker stopped, leftovers killed, the loop released.

#include <signal.h>

#include <spdlog/spdlog.h>
#include <set>

#include "common/duration.hpp"
#include "common/limits.hpp"
#include "common/signals.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/process/systemd.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

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
        case SIGUSR2:
            // An upgrade to the file at the path of the binary this daemon runs.
            return upgrade("", log_reporter("upgrade (SIGUSR2)"));
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
        Part part = std::move(prog->rollout->part);
        prog->rollout.reset();
        part.done(false, prog->name + ": rolling restart interrupted: clusterd is stopping");
    }
    spdlog::info("{} received: stopping all workers (shutdown_timeout {})", signal_name(sig),
                 format_duration(config.daemon.shutdown_timeout));
    shutdown_timer->arm(now() + config.daemon.shutdown_timeout, [kill_all] {
        spdlog::warn("shutdown_timeout reached: killing the remaining workers");
        kill_all();
    });
    stop_in_order();
    finish_if_stopped();
}

// Shutdown in the reverse of depends_on's order: a program is stopped once no program that
// depends on it has a process left (cycles are refused by the config).
void Supervisor::Impl::stop_in_order() {
    auto live = [this](const Program* p) {
        return std::any_of(workers.begin(), workers.end(), [p](const auto& kv) {
            return kv.second->program == p && kv.second->sm.pid != 0;
        });
    };
    std::vector<Program*> now_stopping;
    for (auto& prog : programs) {
        if (prog->shutdown_sent) continue;
        bool needed = std::any_of(programs.begin(), programs.end(), [&](const auto& q) {
            const auto& deps = q->spec->config.depends_on;
            return q.get() != prog.get() &&
                   std::find(deps.begin(), deps.end(), prog->name) != deps.end() &&
                   (!q->shutdown_sent || live(q.get()));
        });
        if (needed) continue;
        now_stopping.push_back(prog.get());
    }
    for (Program* prog : now_stopping) {
        prog->shutdown_sent = true;
        std::vector<std::uint64_t> ids;
        for (const auto& [id, w] : workers)
            if (w->program == prog) ids.push_back(id);
        for (auto id : ids)
            if (auto it = workers.find(id); it != workers.end()) {
                abandon_wait(it->second.get(), "clusterd is shutting down");
                dispatch(it->second.get(), event::Stop{});
            }
    }
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
            *spec.output = open_output(spec.config.output.path);
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
    auto op = std::make_shared<Operation>(log_reporter(delta > 0 ? "SIGTTIN" : "SIGTTOU"));
    Part hold = op->part("");  // until every program is handled
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
    hold.done(true, "");
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

}  // namespace clusterd

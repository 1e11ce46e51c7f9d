// The event stream (`clusterd events`), the hooks it runs, and the workers' captured output
// kept for `clusterd logs`.
//
// An event is one JSON object: {"seq", "time", "event", "program", "slot", "pid", "message",
// ...}; "exited" adds "cause", "code" or "signal", and "last_output" (its last lines, with
// output: capture). Hooks run one at a time per program, each with its timeout, through the
// executor like any child: a slow or failing hook delays nothing but the program's next hook.

#include <signal.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cstring>

#include "common/duration.hpp"
#include "common/signals.hpp"
#include "daemon/process/spawner.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

using nlohmann::json;

namespace {

// A hook's environment: the event, flattened into CLUSTERD_* variables.
std::vector<std::string> hook_env(const std::vector<std::string>& base, const json& e) {
    std::vector<std::string> env;
    for (const auto& kv : base)
        if (!kv.starts_with("CLUSTERD_")) env.push_back(kv);
    auto put = [&](const char* name, const char* key) {
        if (!e.contains(key)) return;
        const json& v = e[key];
        std::string text = v.is_string() ? v.get<std::string>() : v.dump();
        env.push_back(std::string(name) + "=" + text);
    };
    put("CLUSTERD_EVENT", "event");
    put("CLUSTERD_PROGRAM", "program");
    put("CLUSTERD_SLOT", "slot");
    put("CLUSTERD_PID", "pid");
    put("CLUSTERD_CAUSE", "cause");
    put("CLUSTERD_EXIT_CODE", "code");
    put("CLUSTERD_SIGNAL", "signal");
    put("CLUSTERD_MESSAGE", "message");
    put("CLUSTERD_TIME", "time");
    put("CLUSTERD_SEQ", "seq");
    put("CLUSTERD_RESULT", "result");
    if (e.contains("last_output") && e["last_output"].is_array()) {
        std::string text;
        for (const auto& l : e["last_output"])
            if (l.is_string()) text += (text.empty() ? "" : "\n") + l.get<std::string>();
        if (text.size() > 4096) text.erase(0, text.size() - 4096);
        env.push_back("CLUSTERD_LAST_OUTPUT=" + text);
    }
    return env;
}

std::string path_of(const std::vector<std::string>& env) {
    for (const auto& kv : env)
        if (kv.starts_with("PATH=")) return kv.substr(5);
    return kDefaultPath;
}

}  // namespace

void Supervisor::Impl::emit(const char* event, Program* prog, const Worker* w, pid_t pid,
                            const std::string& message, json fields) {
    json e = {{"time", format_wall_time(wall_time_ms())}, {"event", event}};
    if (prog) e["program"] = prog->name;
    if (w) e["slot"] = w->slot;
    if (pid > 0) e["pid"] = pid;
    e["message"] = message;
    for (auto& [k, v] : fields.items()) e[k] = std::move(v);
    events.publish(prog ? prog->name : std::string(), EventEntry(e));
    // Stopping, the master runs no new hook: it would be killed with what is left.
    if (stopping) return;
    e["seq"] = events.published();
    // A daemon's event (reload, upgrade) runs the hooks of every program that asks for it.
    for (const auto& p : programs) {
        if (p->removed || (prog && p.get() != prog)) continue;
        const auto& configured = p->spec->config.hooks;
        for (std::size_t i = 0; i < configured.size(); ++i) {
            if (std::find(configured[i].on.begin(), configured[i].on.end(), event) ==
                configured[i].on.end())
                continue;
            if (p->hook_queue.size() >= kMaxQueuedHooks) {
                // A storm drops many: the first and every 100th are logged.
                std::uint64_t dropped = ++p->hook_runs["dropped"];
                if (dropped % 100 == 1)
                    spdlog::warn(
                        "{}: {} hook runs wait already: the oldest is dropped ({} "
                        "dropped so far, clusterd_hook_runs_total)",
                        p->name, kMaxQueuedHooks, dropped);
                p->hook_queue.pop_front();
            }
            p->hook_queue.push_back({configured[i], e});
        }
        next_hook(*p);
    }
}

void Supervisor::Impl::emit_step(Worker* w, const Slot& before, pid_t old_pid) {
    Program* prog = w->program;
    const Slot& s = w->sm;
    if (s.ends != before.ends) {
        pid_t pid = old_pid;
        const ExitStatus& st = s.last_status;
        json f = {{"cause", to_string(s.last_cause)}};
        // A failed spawn has no process, hence no status; an abandoned one was sent `code`.
        if (s.last_cause != ExitCause::spawn_failed) {
            if (st.signaled || st.abandoned)
                f["signal"] = signal_name(st.code);
            else
                f["code"] = st.code;
        }
        if (w->capture) f["last_output"] = w->capture->tail();
        std::string what = s.last_cause == ExitCause::spawn_failed ? "a worker could not be started"
                           : st.abandoned ? "pid " + std::to_string(pid) + " given up on (sent " +
                                                signal_name(st.code) + ")"
                                          : "pid " + std::to_string(pid) + " " + st.describe();
        if (s.last_cause == ExitCause::watchdog)
            emit("hung", prog, w, pid,
                 "pid " + std::to_string(pid) + " sent no heartbeat within its watchdog",
                 {{"cause", "watchdog"}});
        emit("exited", prog, w, pid, what + " (" + to_string(s.last_cause) + ")", f);
    }
    if (s.pid != 0 && s.pid != before.pid && s.state == SlotState::starting)
        emit(s.restarts > 0 ? "restarted" : "started", prog, w, s.pid,
             "pid " + std::to_string(s.pid) + " started" +
                 (s.restarts > 0 ? " (restart " + std::to_string(s.restarts) + ")" : ""),
             {{"generation", w->spec->generation}});
    if (s.state == SlotState::ready && before.state != SlotState::ready)
        emit("ready", prog, w, s.pid,
             "pid " + std::to_string(s.pid) + " ready in " +
                 format_duration(std::chrono::duration_cast<Duration>(s.ready_at - s.started_at)));
    if (s.state == SlotState::backoff && before.state != SlotState::backoff)
        emit("backoff", prog, w, 0,
             "next start in " + format_duration(s.last_backoff) + " after " +
                 std::to_string(s.failures) + " failing run" + (s.failures == 1 ? "" : "s"),
             {{"delay_ms", s.last_backoff.count()}, {"failures", s.failures}});
    if (s.late && !before.late && s.state == SlotState::ready)
        emit("hung", prog, w, s.pid, "pid " + std::to_string(s.pid) + " is late with its heartbeat",
             {{"cause", "late"}});
}

void Supervisor::Impl::next_hook(Program& prog) {
    if (prog.hook_pid != 0 || prog.hook_queue.empty() || finished) return;
    if (stopping) {
        prog.hook_runs["dropped"] += prog.hook_queue.size();
        prog.hook_queue.clear();
        return;
    }
    PendingHook run = std::move(prog.hook_queue.front());
    prog.hook_queue.pop_front();
    const HookConfig& hook = run.hook;
    std::string name = hook.command.front();
    std::string event = run.event.value("event", "?");
    std::string label = prog.name + " " + event + " hook";
    SpawnSpec spec;
    if (name.find('/') == std::string::npos) {
        auto found = find_executable(name, path_of(environment));
        if (!found) {
            ++prog.hook_runs["failed"];
            spdlog::error("{}: {} not found in PATH", label, name);
            return next_hook(prog);
        }
        spec.path = *found;
    } else {
        spec.path = name;
    }
    spec.argv = hook.command;
    spec.env = hook_env(environment, run.event);
    spec.cwd = "/";
    Started r = exec.spawn(spec, label, spec.path);
    if (r.pid < 0) {
        ++prog.hook_runs["failed"];
        spdlog::error("{}: {}() failed: {}", label, r.call, std::strerror(r.error));
        return next_hook(prog);
    }
    pid_t pid = r.pid;
    prog.hook_pid = pid;
    spdlog::debug("{}: pid {} runs {}", label, pid, name);
    RunningHook& h = hooks[pid];
    h.program = prog.name;
    h.label = label;
    h.started = now();
    h.timer = exec.make_timer();
    helpers[pid] = [this, pid](int status) { hook_done(pid, status); };
    h.timer->arm(now() + hook.timeout, [this, pid, timeout = hook.timeout] {
        auto it = hooks.find(pid);
        if (it == hooks.end()) return;
        // The group goes, whatever it started; its exit then ends the run as a timeout.
        it->second.timed_out = true;
        spdlog::error("{}: pid {} still running after its timeout {}: killing it", it->second.label,
                      pid, format_duration(timeout));
        if (exec.kill(-pid, SIGKILL) != 0) exec.kill(pid, SIGKILL);
    });
}

void Supervisor::Impl::hook_done(pid_t pid, int wait_status) {
    auto it = hooks.find(pid);
    if (it == hooks.end()) return;
    RunningHook h = std::move(it->second);
    hooks.erase(it);
    ExitStatus st = ExitStatus::from_wait_status(wait_status);
    std::string took = format_duration(std::chrono::duration_cast<Duration>(now() - h.started));
    std::string result = h.timed_out ? "timeout" : st.signaled || st.code != 0 ? "failed" : "ok";
    if (result == "ok")
        spdlog::info("{}: pid {} done in {}", h.label, pid, took);
    else if (result == "timeout")
        spdlog::error("{}: pid {} killed after its timeout ({})", h.label, pid, took);
    else
        spdlog::error("{}: pid {} {} after {}", h.label, pid, st.describe(), took);
    Program* prog = find_program(h.program);
    if (!prog || prog->hook_pid != pid) return;  // its program went meanwhile
    prog->hook_pid = 0;
    ++prog->hook_runs[result];
    next_hook(*prog);
}

void Supervisor::Impl::end_hooks() {
    for (auto& [pid, h] : hooks) {
        spdlog::warn("{}: pid {} killed: an upgrade does not hand hooks over", h.label, pid);
        if (exec.kill(-pid, SIGKILL) != 0) exec.kill(pid, SIGKILL);
    }
    for (auto& prog : programs) {
        if (!prog->hook_queue.empty())
            spdlog::warn("{}: {} waiting hook runs dropped by the upgrade", prog->name,
                         prog->hook_queue.size());
        prog->hook_queue.clear();
    }
}

std::unique_ptr<OutputCapture> Supervisor::Impl::make_capture(const Program& prog, int slot) {
    std::string program = prog.name;
    return std::make_unique<OutputCapture>(
        io, prog.name, slot, nullptr,
        [this, program, slot](std::string_view line, bool) { output_line(program, slot, line); });
}

void Supervisor::Impl::output_line(const std::string& program, int slot, std::string_view line) {
    // A removed program's last workers still print as they drain: logged, not kept.
    if (!find_program(program)) return;
    logs.publish(program, LineEntry{wall_time_ms(), slot,
                                    std::string(line.substr(0, OutputCapture::kMaxLine))});
}

void Supervisor::Impl::feed_command(const ControlRequest& req, std::shared_ptr<Reporter> reporter) {
    bool is_logs = req.cmd == ControlCommand::logs;
    const Program* prog = nullptr;
    if (!req.program.empty()) {
        prog = find_program(req.program);
        if (!prog) return reporter->finish(reply(false, "no program \"" + req.program + "\""));
    }
    if (is_logs && prog) {
        const Output& out = prog->spec->config.output;
        if (out.is_file()) {
            // The file has it all: the client reads it itself.
            return reporter->finish({{"ok", true},
                                     {"message", prog->name + " writes to " + out.path},
                                     {"file", out.path}});
        }
        if (out.kind == Output::Kind::inherit)
            return reporter->finish(reply(
                false, prog->name + "'s output is not captured (output: inherit): it goes where "
                                    "the daemon's own stdout and stderr go"));
    }
    // What is sent at once stays well under the connection's queue limit (1 MiB).
    std::size_t omitted = 0;
    auto n = static_cast<std::size_t>(req.lines);
    auto backlog = is_logs ? logs.last(n, req.program, kFeedBacklogBytes, &omitted)
                           : events.last(n, req.program, kFeedBacklogBytes, &omitted);
    if (omitted > 0) reporter->send({{"omitted", omitted}, {"limit_bytes", kFeedBacklogBytes}});
    for (json& line : backlog) reporter->send(line);
    if (!req.follow) return reporter->finish({{"ok", true}, {"message", ""}});
    reporter->send({{"following", is_logs ? "logs" : "events"}});
    reporter->follow();
    if (is_logs)
        logs.follow(reporter, req.program);
    else
        events.follow(reporter, req.program);
}

}  // namespace clusterd

// The control commands (one JSON object per request, see control_server.hpp), dispatched
// through a table of one function each.
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <functional>

#include "common/limits.hpp"
#include "common/signals.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

using nlohmann::json;

namespace {

double to_seconds(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

json worker_json(const Worker& w, std::optional<TimePoint> next_try, TimePoint now,
                 std::optional<ProcessFigures> stats) {
    const Slot& s = w.sm;
    json j = {
        {"slot", w.slot},
        {"pid", s.pid},
        {"state", to_string(s.state)},
        {"generation", w.spec->generation},
        {"restarts", s.restarts},
        {"last_cause", to_string(s.last_cause)},
        {"status", w.status},
        {"fields", w.fields},
        {"retiring", w.retiring},
    };
    j["uptime_s"] = s.pid != 0 ? to_seconds(now - s.started_at) : 0.0;
    // Read from /proc only now: CPU% over the time since the previous status (or since the
    // worker started), like `top` between two refreshes.
    if (stats) {
        bool fresh = w.cpu_sampled_at == TimePoint{} || w.cpu_sampled_at < s.started_at;
        double cpu = stats->cpu_seconds - (fresh ? 0.0 : w.cpu_seconds);
        double wall =
            std::chrono::duration<double>(now - (fresh ? s.started_at : w.cpu_sampled_at)).count();
        j["rss_bytes"] = stats->rss_bytes;
        j["cpu_seconds"] = stats->cpu_seconds;
        j["cpu_percent"] = wall > 0 ? 100.0 * cpu / wall : 0.0;
        w.cpu_seconds = stats->cpu_seconds;
        w.cpu_sampled_at = now;
    }
    j["last_exit"] = s.last_cause == ExitCause::none ? "" : s.last_status.describe();
    // Why a slot is not serving: how often it failed in a row, when it tries next, and what
    // it printed last (output: capture).
    j["failures"] = s.failures;
    j["late"] = s.late;
    j["next_try_s"] = next_try ? json(std::max(0.0, to_seconds(*next_try - now))) : json(nullptr);
    j["last_output"] = w.capture ? json(w.capture->tail()) : json::array();
    return j;
}

}  // namespace

json Supervisor::Impl::status_json(const std::string& only) const {
    json progs = json::array();
    for (const auto& p : programs) {
        if (!only.empty() && p->name != only) continue;
        json slots = json::array();
        for (const Worker* w : p->slots)
            slots.push_back(worker_json(*w, next_try(*w), now(), figures(*w)));
        json draining = json::array();
        for (const auto& [id, w] : workers)
            if (w->program == p.get() &&
                std::find(p->slots.begin(), p->slots.end(), w.get()) == p->slots.end())
                draining.push_back(worker_json(*w, std::nullopt, now(), figures(*w)));
        int configured = p->removed ? 0 : configured_workers(*p);
        json exits = json::object();
        for (const auto& [cause, n] : p->exits) exits[to_string(cause)] = n;
        json listeners = json::array();
        const auto& entries = p->sockets.entries();
        for (std::size_t e = 0; e < entries.size(); ++e)
            if (entries[e].reuseport)
                listeners.push_back({{"listener", entries[e].name},
                                     {"address", entries[e].address()},
                                     {"steering", p->sockets.steering(e)},
                                     {"foreign_sockets", p->sockets.foreign_sockets(e)}});
        // A dependency with no ready worker while this program runs: it keeps running (as
        // systemd's Wants=), and says so.
        json down = p->waiting_for.empty() ? json(unmet_dependencies(*p)) : json::array();
        json hooks = json::object();
        for (const auto& [result, n] : p->hook_runs) hooks[result] = n;
        progs.push_back({
            {"name", p->name},
            {"depends_on", p->spec->config.depends_on},
            {"waiting_for", p->waiting_for},
            {"dependencies_down", down},
            {"hook_runs", hooks},
            {"max_age_s", to_seconds(p->spec->config.max_age)},
            {"generation", p->spec->generation},
            {"workers", p->slots.size()},
            {"config_workers", configured},
            {"runtime_scale", p->runtime_scale ? json(*p->runtime_scale) : json(nullptr)},
            {"rolling", p->rollout.has_value()},
            {"removed", p->removed},
            {"slots", slots},
            {"exits", exits},
            {"memory_limit", p->spec->config.memory_limit},
            {"accepting", !p->sockets.is_shut()},
            {"other_workers", draining},
            {"reuseport", listeners},
        });
    }
    return {
        {"daemon",
         {{"pid", ::getpid()},
          {"version", version},
          {"binary", self_binary},
          {"upgrades", upgrades},
          {"uptime_s", to_seconds(now() - started_at)},
          {"config", config_path.empty() ? "<built-in>" : config_path},
          {"config_generation", config_generation},
          {"reloads_ok", reloads_ok},
          {"reloads_failed", reloads_failed}}},
        {"programs", progs},
    };
}

// The request was decoded and checked (control/control_request.cpp): its fields have the
// types and ranges its command takes.
void Supervisor::Impl::command(const ControlRequest& req, std::shared_ptr<Reporter> reporter) {
    auto fail = [&](const std::string& why) { reporter->finish(reply(false, why)); };
    if (stopping) return fail("clusterd is shutting down");
    const std::string& name = req.program;
    Program* prog = name.empty() ? nullptr : find_program(name);
    auto need_program = [&]() -> Program* {
        if (name.empty())
            fail("\"program\" is required");
        else if (!prog)
            fail("no program named \"" + name + "\"");
        return prog;
    };
    auto each_worker = [&](Program& p, const std::function<void(Worker*)>& f) {
        for (Worker* w : std::vector<Worker*>(p.slots))
            if (workers.count(w->id)) f(w);
    };

    using Handler = std::function<void()>;
    const std::map<ControlCommand, Handler> table = {
        {ControlCommand::version,
         [&] {
             json r = reply(true, "clusterd " + version);
             r["version"] = version;
             r["state_format"] = kHandoverFormat;
             reporter->finish(r);
         }},
        {ControlCommand::status,
         [&] {
             if (!name.empty() && !prog) return fail("no program named \"" + name + "\"");
             refresh_for_reader();  // heartbeats and figures of the scoreboard, as of now
             json r = reply(true, "");
             r["status"] = status_json(name);
             reporter->finish(r);
         }},
        {ControlCommand::reload, [&] { reload(reporter); }},
        {ControlCommand::restart,
         [&] {
             if (!need_program()) return;
             bool rolling = req.rolling;
             if (!admit(*prog, rolling ? rules::Later::rolling_restart : rules::Later::restart,
                        fail))
                 return;
             prog->waiting_for.clear();  // an operator's restart does not wait for depends_on
             if (rolling) {
                 auto spec = std::make_shared<ProgramSpec>(*prog->spec);
                 spec->generation += 1;
                 auto op = std::make_shared<Operation>(reporter);
                 Part hold = op->part("");
                 begin_rollout(*prog, spec, op);
                 return hold.done(true, "");
             }
             each_worker(*prog, [&](Worker* w) {
                 adopt_current_spec(*w);
                 dispatch(w, event::Restart{});
             });
             reporter->finish(reply(
                 true, name + ": restarting " + std::to_string(prog->slots.size()) + " workers"));
         }},
        {ControlCommand::scale,
         [&] {
             if (!need_program()) return;
             if (req.workers < 1 || req.workers > limits::kMaxWorkers)
                 return fail("\"workers\" must be an integer from 1 to " +
                             std::to_string(limits::kMaxWorkers));
             int n = req.workers;
             if (!admit(*prog, rules::Later::scale, fail)) return;
             auto op = std::make_shared<Operation>(reporter);
             Part hold = op->part("");
             const bool already = static_cast<int>(prog->slots.size()) == n;
             scale(*prog, n, op);
             // Kept only once it happened: a scale that failed (no sockets or descriptors
             // left) must not come back at the next start.
             if (static_cast<int>(prog->slots.size()) == n) {
                 prog->runtime_scale = n;
                 if (n == configured_workers(*prog)) prog->runtime_scale.reset();
                 persist_scale();
             }
             hold.done(true, already ? name + ": already " + std::to_string(n) + " workers" : "");
         }},
        {ControlCommand::stop,
         [&] {
             if (!need_program()) return;
             if (!admit(*prog, rules::Later::stop, fail)) return;
             prog->stopped = true;
             each_worker(*prog, [&](Worker* w) { dispatch(w, event::Stop{}); });
             reporter->finish(reply(
                 true, name + ": stopping " + std::to_string(prog->slots.size()) + " workers"));
         }},
        {ControlCommand::start,
         [&] {
             if (!need_program() || !admit(*prog, rules::Later::start, fail)) return;
             prog->waiting_for.clear();  // an operator's start does not wait for depends_on
             each_worker(*prog, [&](Worker* w) {
                 if (w->sm.pid == 0 || !w->sm.want_up) adopt_current_spec(*w);
                 dispatch(w, event::Start{});
             });
             reporter->finish(reply(
                 true, name + ": starting " + std::to_string(prog->slots.size()) + " workers"));
         }},
        {ControlCommand::signal,
         [&] {
             if (!need_program()) return;
             auto sig = parse_signal(req.signal);
             if (!sig) return fail("\"signal\" must name a signal, e.g. HUP or USR1");
             if (!admit(*prog, rules::Later::signal, fail)) return;
             int sent = 0;
             each_worker(*prog, [&](Worker* w) {
                 if (w->sm.pid > 0 && exec.kill(w->sm.pid, *sig) == 0) ++sent;
             });
             reporter->finish(reply(true, name + ": " + signal_name(*sig) + " sent to " +
                                              std::to_string(sent) + " workers"));
         }},
        {ControlCommand::log_level,
         [&] {
             const std::string& level = req.level;
             if (!valid_log_level(level))
                 return fail("\"level\" must be one of trace, debug, info, warn, error");
             spdlog::set_level(spdlog::level::from_str(level));
             spdlog::info("log level set to {}", level);
             reporter->finish(reply(true, "log level " + level));
         }},
        {ControlCommand::upgrade, [&] { upgrade(req.binary, reporter); }},
        {ControlCommand::events, [&] { feed_command(req, reporter); }},
        {ControlCommand::logs, [&] { feed_command(req, reporter); }},
    };
    auto it = table.find(req.cmd);
    if (it == table.end()) return fail("unknown command");  // every command has a handler
    it->second();
}

}  // namespace clusterd

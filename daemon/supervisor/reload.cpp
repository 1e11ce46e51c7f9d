// Reload: read the file off the loop, validate, diff, prepare everything that can fail, then
// apply. Nothing running changes unless all of it can.
#include <spdlog/spdlog.h>

#include "daemon/policy/reload_plan.hpp"
#include "daemon/process/config_check.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/process/systemd.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

// ---- reload: load, validate, diff, then apply; nothing changes unless all of it can ----

void Supervisor::Impl::refuse_reload(const std::shared_ptr<Reporter>& reporter,
                                     const std::string& why) {
    spdlog::error("reload refused: {}", why);
    ++reloads_failed;
    emit("reload", nullptr, nullptr, 0, "reload refused: " + why,
         {{"result", "failed"}, {"error", why}});
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
        if (auto running = running_on(*p);
            running && rules::rule(*running, rules::Later::reload) == rules::Rule::refused)
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
        if (auto running = running_on(*p);
            running && rules::rule(*running, rules::Later::reload) == rules::Rule::refused)
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
    auto op = std::make_shared<Operation>(reporter);
    op->on_end = [this, summary](bool ok) {
        (ok ? reloads_ok : reloads_failed)++;
        emit("reload", nullptr, nullptr, 0, (ok ? "reload applied: " : "reload failed: ") + summary,
             {{"result", ok ? "ok" : "failed"}});
        reload_in_progress = false;
        if (systemd_notify) clusterd::notify("READY=1");
    };
    Part hold = op->part("");  // until everything below is started
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
            op->note(pp.name + ": removed, " + std::to_string(mine.size()) + " workers draining");
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
            raw->waiting_for = join_lines(unmet_dependencies(*raw), ", ");
            for (int k = 0; k < p.workers; ++k) {
                Worker* w = add_worker(*raw, k, raw->spec, raw->sockets.for_slot(k));
                raw->slots.push_back(w);
                if (raw->waiting_for.empty())
                    w->waiting = op->part(label(w) + ": gone before it was ready");
            }
            if (!raw->waiting_for.empty()) {
                op->note(pp.name + ": added, waiting for " + raw->waiting_for +
                         " to be ready (depends_on)");
                continue;
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
            if (prog.rollout) prog.rollout->reload = true;
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
                op->note(pp.name + ": applied in place (" + join_lines(pp.changed, ", ") + ")");
            }
            if (p.workers != current) scale(prog, p.workers, op);
        }
    }
    persist_scale();
    arm_memory_check();
    // max_age changed in place: each ready worker's due time follows (or is cancelled).
    for (const auto& pp : plan.programs)
        if (pp.in_place)
            if (Program* prog = find_program(pp.name))
                for (Worker* w : prog->slots) arm_age(w);
    // A depends_on changed in place may have released a waiting program.
    start_waiting_programs();
    hold.done(true, "");
}

}  // namespace clusterd

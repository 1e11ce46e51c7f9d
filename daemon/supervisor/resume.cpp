// The two ends of an upgrade's state (handover.hpp): what the old image saves, and the new
// image built from it (upgrade.cpp has the command, the check and the exec).

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>

#include "common/duration.hpp"
#include "common/notify.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

using json = nlohmann::json;

namespace {

using std::chrono::nanoseconds;

std::int64_t relative(TimePoint t, TimePoint now) {
    return t == TimePoint{} ? kNoTime : std::chrono::duration_cast<nanoseconds>(t - now).count();
}

TimePoint absolute(std::int64_t v, TimePoint now) {
    return v == kNoTime ? TimePoint{}
                        : now + std::chrono::duration_cast<Clock::duration>(nanoseconds(v));
}

std::int64_t to_ns(Duration d) {
    return std::chrono::duration_cast<nanoseconds>(d).count();
}

Duration from_ns(std::int64_t v) {
    return std::chrono::duration_cast<Duration>(nanoseconds(v));
}

HandoverSlot save_slot(const Slot& s, TimePoint now) {
    HandoverSlot h;
    h.state = static_cast<int>(s.state);
    h.want_up = s.want_up;
    h.pid = s.pid;
    h.restarts = s.restarts;
    h.failures = s.failures;
    h.started_at = relative(s.started_at, now);
    h.ready_at = relative(s.ready_at, now);
    h.last_heartbeat = relative(s.last_heartbeat, now);
    h.heartbeat_interval = to_ns(s.heartbeat_interval);
    h.late = s.late;
    h.ends = s.ends;
    h.deadline = s.deadline ? relative(*s.deadline, now) : kNoTime;
    h.stop_reason = static_cast<int>(s.stop_reason);
    h.last_cause = static_cast<int>(s.last_cause);
    h.last_signaled = s.last_status.signaled;
    h.last_code = s.last_status.code;
    h.last_core_dumped = s.last_status.core_dumped;
    h.last_abandoned = s.last_status.abandoned;
    h.last_backoff = to_ns(s.last_backoff);
    return h;
}

Slot load_slot(const HandoverSlot& h, TimePoint now) {
    if (h.state < 0 || h.state > static_cast<int>(SlotState::failed) || h.stop_reason < 0 ||
        h.stop_reason > static_cast<int>(ExitCause::max_age) || h.last_cause < 0 ||
        h.last_cause > static_cast<int>(ExitCause::max_age))
        throw HandoverError("a slot's state is out of range");
    Slot s;
    s.state = static_cast<SlotState>(h.state);
    s.want_up = h.want_up;
    s.pid = h.pid;
    s.restarts = h.restarts;
    s.failures = h.failures;
    s.started_at = absolute(h.started_at, now);
    s.ready_at = absolute(h.ready_at, now);
    s.last_heartbeat = absolute(h.last_heartbeat, now);
    s.heartbeat_interval = from_ns(h.heartbeat_interval);
    s.late = h.late;
    s.ends = h.ends;
    if (h.deadline != kNoTime) s.deadline = absolute(h.deadline, now);
    s.stop_reason = static_cast<ExitCause>(h.stop_reason);
    s.last_cause = static_cast<ExitCause>(h.last_cause);
    s.last_status.signaled = h.last_signaled;
    s.last_status.code = h.last_code;
    s.last_status.core_dumped = h.last_core_dumped;
    s.last_status.abandoned = h.last_abandoned;
    s.last_backoff = from_ns(h.last_backoff);
    return s;
}

std::optional<ExitCause> exit_cause(const std::string& name) {
    for (int c = 0; c <= static_cast<int>(ExitCause::max_age); ++c)
        if (name == to_string(static_cast<ExitCause>(c))) return static_cast<ExitCause>(c);
    return std::nullopt;
}

}  // namespace

HandoverState Supervisor::Impl::save(int requester_fd) const {
    TimePoint t = now();
    HandoverState s;
    s.version = version;
    s.run_args = run_args;
    s.upgrades = upgrades;
    s.config_path = config_path;
    s.config_source = config.source;
    s.config_text = config.text ? *config.text : std::string();
    if (config.files) s.config_files = *config.files;
    s.override_control = overrides.control;
    s.override_state_dir = overrides.state_dir;
    auto level = spdlog::level::to_string_view(spdlog::get_level());
    s.log_level = std::string(level.data(), level.size());
    if (s.log_level == "warning") s.log_level = "warn";
    s.started_at = relative(started_at, t);
    s.upgrade_started = relative(upgrade_asked, t);
    s.saved_at = std::chrono::duration_cast<nanoseconds>(t.time_since_epoch()).count();
    s.next_worker_id = next_worker_id;
    s.config_generation = config_generation;
    s.reloads_ok = reloads_ok;
    s.reloads_failed = reloads_failed;
    s.notify_counters = {{"oversized", notify_counters.oversized},
                         {"no_credentials", notify_counters.no_credentials},
                         {"foreign_sender", notify_counters.foreign_sender},
                         {"fields_dropped", notify_counters.fields_dropped},
                         {"status_truncated", notify_counters.status_truncated},
                         {"warnings_suppressed", notify_counters.warnings_suppressed}};
    for (const auto& prog : programs) {
        HandoverProgram p;
        p.name = prog->name;
        p.source = config.source;
        const auto& text = prog->spec->config.source_text;
        p.config_text = text ? *text : std::string();
        if (const auto& files = prog->spec->config.source_files) p.config_files = *files;
        p.generation = prog->spec->generation;
        p.runtime_scale = prog->runtime_scale.value_or(0);
        p.stopped = prog->stopped;
        for (const auto& [cause, n] : prog->exits) p.exits[to_string(cause)] = n;
        p.started_at = relative(prog->started_at, t);
        p.all_ready_logged = prog->all_ready_logged;
        p.serving = prog->pace.serving;
        p.next_probe = relative(prog->pace.next_probe, t);
        p.probe_at = relative(prog->pace.probe_at, t);
        p.refusing = prog->refusing;
        p.sockets = prog->sockets.fds();
        auto save_worker = [&](const Worker* w) {
            HandoverWorker hw;
            hw.id = w->id;
            hw.slot = w->slot;
            hw.retiring = w->retiring;
            if (w->replacing) {
                hw.replacing = static_cast<int>(w->replacing->why);
                hw.replaces = w->replacing->old_id;
            }
            hw.sm = save_slot(w->sm, t);
            hw.status = w->status;
            hw.fields = w->fields;
            hw.notify_fd = w->notify ? w->notify->fd() : -1;
            if (w->ipc) {
                hw.ipc_fd = w->ipc->fd();
                hw.ipc_input = w->ipc->pending_input();
            }
            if (w->capture) {
                hw.capture_fds = w->capture->fds();
                hw.capture_tail = w->capture->tail();
            }
            if (w->board_index && prog->board) {
                hw.board_index = static_cast<int>(*w->board_index);
                hw.board_beats = w->board_beats;
                hw.board_figures = w->board_figures;
            }
            return hw;
        };
        for (const Worker* w : prog->slots) p.workers.push_back(save_worker(w));
        for (const auto& [id, w] : workers)
            if (w->program == prog.get() &&
                std::find(prog->slots.begin(), prog->slots.end(), w.get()) == prog->slots.end())
                p.others.push_back(save_worker(w.get()));
        if (prog->board) {
            p.board_fd = prog->board->fd();
            for (const auto& [pid, seat] : board_seats)
                if (seat.board == prog->board && abandoned.count(pid))
                    p.board_abandoned[std::to_string(pid)] = static_cast<int>(seat.index);
        }
        s.programs.push_back(std::move(p));
    }
    for (const auto& [pid, a] : abandoned)
        s.abandoned.push_back({pid, a->label, relative(a->since, t), relative(a->kill_at, t)});
    for (const auto& [old_id, new_id] : replacements)
        s.replacements[std::to_string(old_id)] = new_id;
    for (const auto& [name, sock] : activated) s.activated[name] = sock->get();
    s.notify_dir = notify_dir ? notify_dir->path() : std::string();
    s.control_fd = control_listener;
    s.requester_fd = requester_fd;
    s.metrics_fd = metrics ? metrics->listener() : -1;
    s.systemd_notify = systemd_notify;
    s.sent_ready = sent_ready;
    return s;
}

void Supervisor::Impl::resume(const HandoverState& s, std::shared_ptr<Reporter> requester,
                              const std::string& failed) {
    // "Now" for the state's relative times is when it was saved: the exec's gap ago.
    TimePoint t = now() - std::chrono::duration_cast<Clock::duration>(
                              nanoseconds(std::max<std::int64_t>(s.exec_gap, 0)));
    std::string from = s.version;
    upgrades = s.upgrades + (failed.empty() ? 1 : 0);
    started_at = absolute(s.started_at, t);
    next_worker_id = s.next_worker_id;
    config_generation = s.config_generation;
    reloads_ok = s.reloads_ok;
    reloads_failed = s.reloads_failed;
    auto counter = [&](const char* name) {
        auto it = s.notify_counters.find(name);
        return it == s.notify_counters.end() ? 0 : it->second;
    };
    notify_counters.oversized = counter("oversized");
    notify_counters.no_credentials = counter("no_credentials");
    notify_counters.foreign_sender = counter("foreign_sender");
    notify_counters.fields_dropped = counter("fields_dropped");
    notify_counters.status_truncated = counter("status_truncated");
    notify_counters.warnings_suppressed = counter("warnings_suppressed");
    sent_ready = s.sent_ready;
    notify_dir = std::make_unique<NotifyDir>(s.notify_dir, true);
    for (const auto& [name, fd] : s.activated)
        activated[name] = std::make_shared<const UniqueFd>(fd);
    // What the state file holds stays as it is; only the in-memory copy is read again.
    std::vector<std::string> errors;
    state = load_state(state_file(), errors);

    // Each generation's config is read again from the text (and the files) it was read from.
    std::map<std::pair<std::string, ConfigFiles>, Config> texts;
    if (config.text) texts.emplace(std::pair(*config.text, *config.files), config);
    for (const HandoverProgram& hp : s.programs) {
        auto key = std::pair(hp.config_text, hp.config_files);
        auto it = texts.find(key);
        if (it == texts.end())
            it = texts.emplace(key, load_config_string(hp.config_text, hp.source, &hp.config_files))
                     .first;
        const ProgramConfig* pc = nullptr;
        for (const auto& p : it->second.programs)
            if (p.name == hp.name) pc = &p;
        if (pc == nullptr) throw HandoverError("program " + hp.name + " is not in its config");
        auto owned = std::make_unique<Program>();
        Program& prog = *owned;
        programs.push_back(std::move(owned));
        prog.name = hp.name;
        try {
            prog.spec = make_spec(*pc, hp.generation);
        } catch (const std::exception& e) {
            // The machine changed under a running program (its executable or user is gone):
            // its workers keep running; a new one fails to start, as it would have in the
            // old image, and is paced like any failure.
            spdlog::error("{}: its workers are kept, but a new one cannot start: {}", hp.name,
                          e.what());
            auto spec = std::make_shared<ProgramSpec>();
            spec->config = *pc;
            spec->policy = SlotPolicy::from(*pc);
            spec->generation = hp.generation;
            spec->unresolved = e.what();
            if (pc->output.is_file()) {
                try {
                    *spec->output = open_output(pc->output.path);
                } catch (const std::exception&) {
                }
            }
            prog.spec = spec;
        }
        prog.sockets = SocketTable::adopt(pc->listen, hp.sockets, activated);
        if (hp.runtime_scale > 0) prog.runtime_scale = hp.runtime_scale;
        prog.stopped = hp.stopped;
        for (const auto& [name, n] : hp.exits)
            if (auto cause = exit_cause(name)) prog.exits[*cause] = n;
        prog.started_at = absolute(hp.started_at, t);
        prog.all_ready_logged = hp.all_ready_logged;
        prog.pace.serving = hp.serving;
        prog.pace.next_probe = absolute(hp.next_probe, t);
        prog.refusing = hp.refusing;
        if (hp.board_fd >= 0) {
            std::vector<std::uint32_t> in_use;
            for (const auto* list : {&hp.workers, &hp.others})
                for (const auto& hw : *list)
                    if (hw.board_index >= 0 && hw.sm.pid != 0)
                        in_use.push_back(static_cast<std::uint32_t>(hw.board_index));
            for (const auto& [pid, index] : hp.board_abandoned)
                if (index >= 0) in_use.push_back(static_cast<std::uint32_t>(index));
            try {
                prog.board = std::make_shared<Scoreboard>(UniqueFd(hp.board_fd), in_use);
            } catch (const std::system_error& e) {
                prog.board_failed = true;
                spdlog::error(
                    "{}: its scoreboard cannot be read ({}): its workers' heartbeats "
                    "there are not seen",
                    hp.name, e.what());
            }
            if (prog.board)
                for (const auto& [pid, index] : hp.board_abandoned)
                    if (index >= 0)
                        board_seats.emplace(
                            static_cast<pid_t>(std::stol(pid)),
                            BoardSeat(prog.board, static_cast<std::uint32_t>(index)));
        }
        auto take = [&](const HandoverWorker& hw) {
            auto w = std::make_unique<Worker>(exec, hw.id, &prog, hw.slot, prog.spec,
                                              prog.sockets.for_slot(hw.slot));
            Worker* raw = w.get();
            workers.emplace(hw.id, std::move(w));
            raw->sm = load_slot(hw.sm, t);
            raw->retiring = hw.retiring;
            if (hw.replacing > static_cast<int>(Replace::age))
                throw HandoverError("a worker's replacement kind is out of range");
            if (hw.replacing >= 0)
                raw->replacing = Replacement{static_cast<Replace>(hw.replacing), hw.replaces};
            raw->status = hw.status;
            raw->fields = hw.fields;
            if (hw.notify_fd >= 0) {
                std::uint64_t id = hw.id;
                raw->notify = std::make_unique<NotifySocket>(
                    io, hw.notify_fd, notify_dir->path() + "/" + std::to_string(id), label(raw),
                    notify_counters, [this, id](const NotifySender& s, const NotifyMessage& m) {
                        on_notify(id, s, m);
                    });
                raw->notify->set_main_pid(raw->sm.pid);
                raw->notify->start();
            }
            if (hw.ipc_fd >= 0) {
                raw->ipc = std::make_unique<NodeChannel>(io, hw.ipc_fd, hw.ipc_input, label(raw),
                                                         node_counters, node_handlers(hw.id));
                raw->ipc->start();
            }
            if (prog.spec->config.output.kind == Output::Kind::capture) {
                raw->capture = make_capture(prog, hw.slot);
                for (int fd : hw.capture_fds) raw->capture->adopt(fd, hw.capture_tail);
            }
            if (raw->sm.pid != 0) pids[raw->sm.pid] = raw;
            if (hw.board_index >= 0 && raw->sm.pid != 0 && prog.board) {
                auto index = static_cast<std::uint32_t>(hw.board_index);
                board_seats.emplace(raw->sm.pid, BoardSeat(prog.board, index));
                raw->board_index = index;
                raw->board_beats = hw.board_beats;
                raw->board_figures = hw.board_figures;
            }
            if (raw->sm.deadline) arm_deadline(raw, *raw->sm.deadline);
            return raw;
        };
        for (const HandoverWorker& hw : hp.workers) prog.slots.push_back(take(hw));
        for (const HandoverWorker& hw : hp.others) take(hw);
    }
    for (const auto& [old_id, new_id] : s.replacements) replacements[std::stoull(old_id)] = new_id;
    for (const HandoverAbandoned& ha : s.abandoned) {
        auto a = std::make_unique<Abandoned>(exec);
        a->label = ha.label;
        a->since = absolute(ha.since, t);
        abandoned[ha.pid] = std::move(a);
        arm_abandoned(ha.pid, absolute(ha.kill_at, t));
    }
    if (s.metrics_fd >= 0) {
        metrics = std::make_unique<MetricsServer>(
            io, s.metrics_fd,
            [this] {
                refresh_for_reader();
                return metrics_text();
            },
            [this] { return health(); });
        metrics->start();
    }
    // Children that exited while the image changed are reaped here, as exits of their slots.
    start_loop();
    std::vector<Program*> resumed_ready;
    for (auto& prog : programs) {
        resteer(*prog);
        pace(*prog);
        for (Worker* w : prog->slots)
            if (w->sm.state == SlotState::ready) arm_age(w);
        // A program that waited for its depends_on (nothing of it ever started, nor was it
        // stopped) goes on waiting here.
        bool never_started = std::all_of(prog->slots.begin(), prog->slots.end(), [](Worker* w) {
            return w->sm.state == SlotState::stopped && !w->sm.want_up && w->sm.pid == 0 &&
                   w->sm.restarts == 0 && w->sm.ends == 0;
        });
        if (!prog->stopped && !prog->spec->config.depends_on.empty() && never_started) {
            prog->waiting_for = join_lines(unmet_dependencies(*prog), ", ");
            if (prog->waiting_for.empty()) resumed_ready.push_back(prog.get());
        }
    }
    // Their dependencies became ready while the image changed: they start now.
    for (Program* prog : resumed_ready)
        for (Worker* w : std::vector<Worker*>(prog->slots)) dispatch(w, event::Start{});
    if (failed.empty())
        emit("upgrade", nullptr, nullptr, 0, "upgraded from " + from + " to " + version,
             {{"result", "ok"}, {"from", from}, {"to", version}});
    else
        emit("upgrade", nullptr, nullptr, 0, "upgrade failed: " + failed,
             {{"result", "failed"}, {"error", failed}});
    std::size_t live = pids.size();
    std::string took;
    if (s.upgrade_started != kNoTime)
        took = " in " + format_duration(std::chrono::duration_cast<Duration>(
                            now() - absolute(s.upgrade_started, t)));
    json r;
    if (failed.empty()) {
        spdlog::info("upgraded from {} to {}{}: {} workers carried over, upgrade {}", from, version,
                     took, live, upgrades);
        r = reply(true, "upgraded from " + from + " to " + version + took + "; " +
                            std::to_string(live) + " workers kept running");
    } else {
        spdlog::error("upgrade failed: {}; back on {}", failed, version);
        r = reply(false, "upgrade failed: " + failed + "; still running " + version +
                             " (workers kept running)");
    }
    r["version"] = version;
    r["previous"] = from;
    r["upgrades"] = upgrades;
    json pid_list = json::array();
    for (const auto& [pid, w] : pids) pid_list.push_back(pid);
    r["pids"] = pid_list;
    if (systemd_notify) {
        // The reload systemd was told of (RELOADING=1) is over; a daemon that was not ready
        // yet says so when it is, as at start.
        last_status.clear();
        if (sent_ready) clusterd::notify("READY=1\n");
        report_to_systemd();
    }
    if (requester) requester->finish(r);
}

void Supervisor::Impl::arm_deadline(Worker* w, TimePoint when) {
    // A ready worker that heartbeats through its scoreboard record has its deadline checked
    // by its program's one board timer.
    if (w->board_beats && w->sm.state == SlotState::ready) {
        w->timer->cancel();
        return schedule_board(*w->program, when);
    }
    std::uint64_t id = w->id;
    w->timer->arm(when, [this, id] {
        // After a stall of the loop, heartbeats may be queued that were sent in time: this
        // worker's are read before it is judged (its socket only: a crash loop of many slots
        // must not read every socket at every deadline).
        auto it = workers.find(id);
        if (it != workers.end() && it->second->notify) it->second->notify->drain();
        it = workers.find(id);
        if (it != workers.end()) on_deadline(it->second.get());
    });
}

void Supervisor::Impl::arm_abandoned(pid_t pid, TimePoint when) {
    auto& a = abandoned.at(pid);
    a->kill_at = when;
    a->timer->arm(when, [this, pid] {
        auto it = abandoned.find(pid);
        if (it == abandoned.end()) return;
        spdlog::warn("{}: abandoned pid {} still running after abort_timeout: sending SIGKILL",
                     it->second->label, pid);
        if (exec.kill(-pid, SIGKILL) != 0) exec.kill(pid, SIGKILL);
    });
}

}  // namespace clusterd

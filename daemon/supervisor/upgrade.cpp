// `clusterd upgrade` and SIGUSR2: the master re-executes a new binary in its own pid and goes
// on supervising the same worker processes (handover.hpp has the state it hands over).
//
//   1. refused while an operation runs (operation_rules.hpp, Later::upgrade): only settled
//      slots are handed over;
//   2. the binary is checked: a regular, executable file, that run as a child with
//      `upgrade-check --state-fd 3` reads this very state within kUpgradeCheckTimeout;
//   3. the state is saved again (things moved during the check) into a sealed memfd, this
//      image's own binary is opened for a way back, close-on-exec is cleared on exactly the
//      fds the state names, systemd hears RELOADING=1, every signal is blocked (they stay
//      pending for the new image), and execve;
//   4. the new image (main.cpp, `resume`) rebuilds everything around the same fds and pids,
//      reaps what exited in between, answers the client on the connection it inherited and
//      tells systemd READY=1. If it cannot read the state it execs the old binary (by its fd)
//      with the same state and the reason, and the old image answers instead.
// If execve itself fails, this image undoes step 3 and reports why: nothing changed.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <array>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstring>

#include "common/duration.hpp"
#include "common/notify.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/process/spawner.hpp"
#include "daemon/process/systemd.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

extern char** environ;

namespace clusterd {

using json = nlohmann::json;

namespace {

using std::chrono::nanoseconds;

std::int64_t since(TimePoint t, TimePoint now) {
    return t == TimePoint{} ? kNoTime : std::chrono::duration_cast<nanoseconds>(t - now).count();
}

TimePoint at(std::int64_t v, TimePoint now) {
    return v == kNoTime ? TimePoint{}
                        : now + std::chrono::duration_cast<Clock::duration>(nanoseconds(v));
}

std::int64_t ns(Duration d) {
    return std::chrono::duration_cast<nanoseconds>(d).count();
}

Duration duration(std::int64_t v) {
    return std::chrono::duration_cast<Duration>(nanoseconds(v));
}

HandoverSlot save_slot(const Slot& s, TimePoint now) {
    HandoverSlot h;
    h.state = static_cast<int>(s.state);
    h.want_up = s.want_up;
    h.pid = s.pid;
    h.restarts = s.restarts;
    h.failures = s.failures;
    h.started_at = since(s.started_at, now);
    h.ready_at = since(s.ready_at, now);
    h.last_heartbeat = since(s.last_heartbeat, now);
    h.heartbeat_interval = ns(s.heartbeat_interval);
    h.late = s.late;
    h.ends = s.ends;
    h.deadline = s.deadline ? since(*s.deadline, now) : kNoTime;
    h.stop_reason = static_cast<int>(s.stop_reason);
    h.last_cause = static_cast<int>(s.last_cause);
    h.last_signaled = s.last_status.signaled;
    h.last_code = s.last_status.code;
    h.last_core_dumped = s.last_status.core_dumped;
    h.last_abandoned = s.last_status.abandoned;
    h.last_backoff = ns(s.last_backoff);
    return h;
}

Slot load_slot(const HandoverSlot& h, TimePoint now) {
    if (h.state < 0 || h.state > static_cast<int>(SlotState::failed) || h.stop_reason < 0 ||
        h.stop_reason > static_cast<int>(ExitCause::memory) || h.last_cause < 0 ||
        h.last_cause > static_cast<int>(ExitCause::memory))
        throw HandoverError("a slot's state is out of range");
    Slot s;
    s.state = static_cast<SlotState>(h.state);
    s.want_up = h.want_up;
    s.pid = h.pid;
    s.restarts = h.restarts;
    s.failures = h.failures;
    s.started_at = at(h.started_at, now);
    s.ready_at = at(h.ready_at, now);
    s.last_heartbeat = at(h.last_heartbeat, now);
    s.heartbeat_interval = duration(h.heartbeat_interval);
    s.late = h.late;
    s.ends = h.ends;
    if (h.deadline != kNoTime) s.deadline = at(h.deadline, now);
    s.stop_reason = static_cast<ExitCause>(h.stop_reason);
    s.last_cause = static_cast<ExitCause>(h.last_cause);
    s.last_status.signaled = h.last_signaled;
    s.last_status.code = h.last_code;
    s.last_status.core_dumped = h.last_core_dumped;
    s.last_status.abandoned = h.last_abandoned;
    s.last_backoff = duration(h.last_backoff);
    return s;
}

std::optional<ExitCause> exit_cause(const std::string& name) {
    for (int c = 0; c <= static_cast<int>(ExitCause::memory); ++c)
        if (name == to_string(static_cast<ExitCause>(c))) return static_cast<ExitCause>(c);
    return std::nullopt;
}

// Close-on-exec off on `fds` (they cross the exec), or back on.
void set_inherited(const std::vector<int>& fds, bool inherited) {
    for (int fd : fds) ::fcntl(fd, F_SETFD, inherited ? 0 : FD_CLOEXEC);
}

}  // namespace

/// The new binary, run as a child on a copy of the state: does it read it?
struct UpgradeCheck {
    UpgradeCheck(asio::io_context& io, Executor& exec) : out(io), timer(exec.make_timer()) {}
    std::string binary;
    std::shared_ptr<Reporter> reporter;
    pid_t pid = -1;
    asio::posix::stream_descriptor out;
    std::array<char, 4096> buf{};
    std::string output;
    bool eof = false;
    std::optional<int> status;
    bool timed_out = false;
    std::unique_ptr<Timer> timer;
};

std::string Supervisor::Impl::upgrade_busy() const {
    if (stopping) return "clusterd is shutting down";
    if (reload_in_progress || reload_loading) return "a reload is in progress";
    for (const auto& prog : programs) {
        if (prog->removed) return prog->name + " is being removed by a reload";
        auto running = running_on(*prog);
        if (running && rules::rule(*running, rules::Later::upgrade) == rules::Rule::refused)
            return prog->name + ": a " +
                   (*running == rules::Running::roll_back ? "roll back" : "rolling restart") +
                   " is in progress";
    }
    // A late worker's spare, a memory replacement and the worker either took over from are
    // handed over; what belongs to an operation or another generation is not.
    for (const auto& [id, w] : workers) {
        if (w->waiting || w->on_exit) return label(w.get()) + ": an operation waits for it";
        if (w->spec != w->program->spec)
            return label(w.get()) + " of generation " + std::to_string(w->spec->generation) +
                   " is still stopping";
        if (w->slot >= static_cast<int>(w->program->slots.size()))
            return label(w.get()) + " is leaving (scale down)";
        if (rolling_in(*w)) return label(w.get()) + ": a rolling restart's worker is starting";
    }
    return "";
}

void Supervisor::Impl::upgrade(const std::string& binary, std::shared_ptr<Reporter> reporter) {
    auto refuse = [&](const std::string& why, bool busy = false) {
        json r = reply(false, "upgrade refused: " + why);
        if (busy) r["busy"] = true;
        reporter->finish(r);
    };
    if (upgrade_check || upgrade_timer) return refuse("an upgrade is under way already", true);
    if (std::string busy = upgrade_busy(); !busy.empty()) return refuse(busy, true);
    // Naming the binary is running code as the daemon's user: only that user and root may.
    // (`control_group` members may upgrade to the daemon's own binary.)
    if (!binary.empty()) {
        ucred cred{};
        socklen_t len = sizeof cred;
        int fd = reporter->connection();
        if (fd >= 0 && (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
                        (cred.uid != 0 && cred.uid != ::geteuid())))
            return refuse("only root or the daemon's own user may name the binary (--binary)");
    }
    std::string path = binary.empty() ? self_binary : binary;
    if (path.empty()) return refuse("the daemon's own binary is not known: name one (--binary)");
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return refuse(path + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) return refuse(path + " is not a regular file");
    // The daemon runs it: a file someone else could have written is not run.
    if (st.st_uid != 0 && st.st_uid != ::geteuid())
        return refuse(path + " is owned by uid " + std::to_string(st.st_uid) +
                      ", not root or the daemon's user");
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return refuse(path + " is writable by its group or others");
    if (::access(path.c_str(), X_OK) != 0)
        return refuse(path + " is not executable: " + std::strerror(errno));

    UniqueFd memfd;
    try {
        memfd = UniqueFd(write_handover_memfd(encode_handover(save(-1))));
    } catch (const std::exception& e) {
        return refuse(std::string("cannot save the state: ") + e.what());
    }
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
        return refuse(std::string("pipe2() failed: ") + std::strerror(errno));
    UniqueFd read_end(pipe_fds[0]);
    UniqueFd write_end(pipe_fds[1]);
    ::fcntl(write_end.get(), F_SETFL, 0);  // the child's stdout stays blocking

    SpawnSpec spec;
    spec.path = path;
    spec.argv = {path, "upgrade-check", "--state-fd", "3"};
    for (const auto& e : environment)
        if (!e.starts_with("NOTIFY_SOCKET=")) spec.env.push_back(e);
    spec.pass_fds = {memfd.get()};
    spec.output_fd = write_end.get();
    Started started = exec.spawn(spec, "upgrade check", path);
    if (started.pid < 0)
        return refuse(std::string(started.call) + "() failed: " + std::strerror(started.error));
    write_end.reset();

    auto check = std::make_shared<UpgradeCheck>(io, exec);
    check->binary = path;
    check->reporter = reporter;
    check->pid = started.pid;
    check->out.assign(read_end.release());
    upgrade_check = check;
    upgrade_asked = now();
    spdlog::info("upgrade: checking {} (pid {}) against this daemon's state", path, started.pid);
    reporter->progress("checking " + path);

    auto settle = [this, check] {
        if (upgrade_check != check || !check->status || (!check->eof && !check->timed_out)) return;
        upgrade_check.reset();
        check->timer->cancel();
        boost::system::error_code ignored;
        check->out.close(ignored);
        std::string last;  // the child's last line that is a JSON object
        std::size_t pos = 0;
        while (pos < check->output.size()) {
            auto nl = check->output.find('\n', pos);
            std::string line = check->output.substr(pos, nl == std::string::npos ? nl : nl - pos);
            if (line.starts_with("{")) last = line;
            if (nl == std::string::npos) break;
            pos = nl + 1;
        }
        json answer = json::parse(last, nullptr, false);
        auto fail = [&](const std::string& why) {
            spdlog::error("upgrade to {} refused: {}", check->binary, why);
            check->reporter->finish(reply(false, "upgrade refused: " + why + "; still running " +
                                                     version + " (nothing changed)"));
        };
        if (check->timed_out)
            return fail(check->binary + " did not confirm within " +
                        format_duration(kUpgradeCheckTimeout) +
                        " that it reads the state (killed)");
        ExitStatus st = ExitStatus::from_wait_status(*check->status);
        if (answer.is_object() && answer.value("ok", false) && !st.signaled && st.code == 0) {
            std::string to = answer.value("version", std::string("?"));
            if (std::string busy = upgrade_busy(); !busy.empty())
                return fail("while it was checked: " + busy);
            return exec_upgrade(check->binary, to, check->reporter);
        }
        std::string why =
            answer.is_object() && answer.contains("message") && answer["message"].is_string()
                ? answer["message"].get<std::string>()
                : std::string();
        if (why.empty()) {
            why = check->output.substr(0, std::min<std::size_t>(check->output.find('\n'), 300));
            if (why.empty()) why = "no answer";
        }
        fail(check->binary + " " + st.describe() + " before confirming it reads the state: " + why);
    };
    helpers[started.pid] = [this, check, settle](int status) {
        check->status = status;
        exec.kill(-check->pid, SIGKILL);  // whatever it left holding its pipe
        settle();
    };
    check->timer->arm(now() + kUpgradeCheckTimeout, [this, check, settle] {
        check->timed_out = true;
        if (exec.kill(-check->pid, SIGKILL) != 0) exec.kill(check->pid, SIGKILL);
        settle();  // once it is reaped
    });
    // Read what it says, up to 64 KiB.
    auto read = std::make_shared<std::function<void()>>();
    *read = [check, settle, read] {
        check->out.async_read_some(
            asio::buffer(check->buf),
            [check, settle, read](const boost::system::error_code& ec, std::size_t n) {
                if (ec) {
                    check->eof = true;
                    *read = nullptr;  // no cycle left once the pipe is done
                    return settle();
                }
                if (check->output.size() < 64 * 1024) check->output.append(check->buf.data(), n);
                (*read)();
            });
    };
    (*read)();
}

void Supervisor::Impl::exec_upgrade(const std::string& binary, const std::string& to,
                                    std::shared_ptr<Reporter> reporter) {
    // From here on every signal waits, pending, for whichever image runs next. One the loop
    // received before (its handler has not run yet) would die with this image: two turns of
    // the loop first let every such handler run, and then what they did is looked at again.
    sigset_t all, old;
    ::sigfillset(&all);
    ::sigprocmask(SIG_BLOCK, &all, &old);
    upgrade_timer = exec.make_timer();
    upgrade_timer->arm(now() + Duration{1}, [this, binary, to, reporter, old] {
        // (A timer's callback belongs to the loop, not to the Timer: replacing it here is safe.)
        upgrade_timer = exec.make_timer();
        upgrade_timer->arm(now() + Duration{1}, [this, binary, to, reporter, old] {
            std::string b = binary, t = to;
            auto r = reporter;
            sigset_t mask = old;
            upgrade_timer.reset();
            do_exec(b, t, r, mask);
        });
    });
}

void Supervisor::Impl::do_exec(const std::string& binary, const std::string& to,
                               std::shared_ptr<Reporter> reporter, const sigset_t& old_mask) {
    // Signals back as they were on every way out but the exec.
    struct Unblock {
        const sigset_t& mask;
        ~Unblock() { ::sigprocmask(SIG_SETMASK, &mask, nullptr); }
    } unblock{old_mask};
    auto fail = [&](const std::string& why) {
        spdlog::error("upgrade to {} failed: {}; still running {}", binary, why, version);
        reporter->finish(reply(
            false, "upgrade failed: " + why + "; still running " + version + " (nothing changed)"));
    };
    if (stopping) return fail("clusterd is shutting down");
    if (std::string busy = upgrade_busy(); !busy.empty()) return fail("meanwhile, " + busy);
    HandoverState state = save(reporter->connection());
    UniqueFd memfd;
    try {
        memfd = UniqueFd(write_handover_memfd(encode_handover(state)));
    } catch (const std::exception& e) {
        return fail(std::string("cannot save the state: ") + e.what());
    }
    // The way back, should the new image not get going: this image's binary, by fd (the
    // file at its path may have been replaced already, by a package upgrade).
    UniqueFd self(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
    if (!self) return fail(std::string("open(/proc/self/exe) failed: ") + std::strerror(errno));
    std::vector<int> fds = state.fds();
    fds.push_back(memfd.get());
    fds.push_back(self.get());

    std::size_t pids_handed = pids.size();
    spdlog::info("upgrade: {} -> {}: exec {} with {} workers and {} fds handed over", version, to,
                 binary, pids_handed, fds.size());
    if (systemd_notify)
        clusterd::notify("RELOADING=1\n" + monotonic_usec_field() + "\nSTATUS=upgrading to " + to +
                         "\n");
    drain_log(std::chrono::seconds(1));  // the new image starts with an empty queue

    std::string state_fd = std::to_string(memfd.get());
    std::string rollback = std::to_string(self.get()) + ":" + state_fd;
    std::vector<std::string> args = {binary, "run"};
    args.insert(args.end(), run_args.begin(), run_args.end());
    args.insert(args.end(), {"--resume-state-fd", state_fd, "--rollback", rollback});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    set_inherited(fds, true);
    ::execve(binary.c_str(), argv.data(), environ);
    int error = errno;
    set_inherited(fds, false);
    if (systemd_notify) clusterd::notify("READY=1\nSTATUS=" + last_status + "\n");
    fail("execve(" + binary + ") failed: " + std::strerror(error));
}

HandoverState Supervisor::Impl::save(int requester_fd) const {
    TimePoint t = now();
    HandoverState s;
    s.version = version;
    s.run_args = run_args;
    s.upgrades = upgrades;
    s.config_path = config_path;
    s.config_source = config.source;
    s.config_text = config.text ? *config.text : std::string();
    s.override_control = overrides.control;
    s.override_state_dir = overrides.state_dir;
    auto level = spdlog::level::to_string_view(spdlog::get_level());
    s.log_level = std::string(level.data(), level.size());
    if (s.log_level == "warning") s.log_level = "warn";
    s.started_at = since(started_at, t);
    s.upgrade_started = since(upgrade_asked, t);
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
        p.generation = prog->spec->generation;
        p.runtime_scale = prog->runtime_scale.value_or(0);
        p.stopped = prog->stopped;
        for (const auto& [cause, n] : prog->exits) p.exits[to_string(cause)] = n;
        p.started_at = since(prog->started_at, t);
        p.all_ready_logged = prog->all_ready_logged;
        p.serving = prog->pace.serving;
        p.next_probe = since(prog->pace.next_probe, t);
        p.probe_at = since(prog->pace.probe_at, t);
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
            if (w->capture) {
                hw.capture_fds = w->capture->fds();
                hw.capture_tail = w->capture->tail();
            }
            return hw;
        };
        for (const Worker* w : prog->slots) p.workers.push_back(save_worker(w));
        for (const auto& [id, w] : workers)
            if (w->program == prog.get() &&
                std::find(prog->slots.begin(), prog->slots.end(), w.get()) == prog->slots.end())
                p.others.push_back(save_worker(w.get()));
        s.programs.push_back(std::move(p));
    }
    for (const auto& [pid, a] : abandoned)
        s.abandoned.push_back({pid, a->label, since(a->since, t), since(a->kill_at, t)});
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
    started_at = at(s.started_at, t);
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

    // Each generation's config is read again from the text it was read from.
    std::map<std::string, Config> texts;
    if (config.text) texts.emplace(*config.text, config);
    for (const HandoverProgram& hp : s.programs) {
        auto it = texts.find(hp.config_text);
        if (it == texts.end())
            it = texts.emplace(hp.config_text, load_config_string(hp.config_text, hp.source)).first;
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
        prog.started_at = at(hp.started_at, t);
        prog.all_ready_logged = hp.all_ready_logged;
        prog.pace.serving = hp.serving;
        prog.pace.next_probe = at(hp.next_probe, t);
        prog.refusing = hp.refusing;
        auto take = [&](const HandoverWorker& hw) {
            auto w = std::make_unique<Worker>(exec, hw.id, &prog, hw.slot, prog.spec,
                                              prog.sockets.for_slot(hw.slot));
            Worker* raw = w.get();
            workers.emplace(hw.id, std::move(w));
            raw->sm = load_slot(hw.sm, t);
            raw->retiring = hw.retiring;
            if (hw.replacing >= 0)
                raw->replacing = Replacement{static_cast<Replace>(hw.replacing), hw.replaces};
            raw->status = hw.status;
            raw->fields = hw.fields;
            if (hw.notify_fd >= 0) {
                std::uint64_t id = hw.id;
                raw->notify = std::make_unique<NotifySocket>(
                    io, hw.notify_fd, notify_dir->path() + "/" + std::to_string(id), label(raw),
                    notify_counters,
                    [this, id](pid_t pid, const NotifyMessage& m) { on_notify(id, pid, m); });
                raw->notify->start();
            }
            if (prog.spec->config.output.kind == Output::Kind::capture) {
                raw->capture = std::make_unique<OutputCapture>(io, prog.name, hw.slot);
                for (int fd : hw.capture_fds) raw->capture->adopt(fd, hw.capture_tail);
            }
            if (raw->sm.pid != 0) pids[raw->sm.pid] = raw;
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
        a->since = at(ha.since, t);
        abandoned[ha.pid] = std::move(a);
        arm_abandoned(ha.pid, at(ha.kill_at, t));
    }
    if (s.metrics_fd >= 0) {
        metrics = std::make_unique<MetricsServer>(
            io, s.metrics_fd, [this] { return metrics_text(); }, [this] { return health(); });
        metrics->start();
    }
    // Children that exited while the image changed are reaped here, as exits of their slots.
    exec.start([this](pid_t pid, int status) { on_child_exit(pid, status); },
               [this](int sig) { on_signal(sig); });
    arm_memory_check();
    arm_listener_check();
    if (auto interval = systemd_watchdog_interval(); interval.count() > 0)
        do_systemd_watchdog(interval / 2);
    for (auto& prog : programs) {
        resteer(*prog);
        pace(*prog);
    }
    std::size_t live = pids.size();
    std::string took;
    if (s.upgrade_started != kNoTime)
        took = " in " + format_duration(
                            std::chrono::duration_cast<Duration>(now() - at(s.upgrade_started, t)));
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

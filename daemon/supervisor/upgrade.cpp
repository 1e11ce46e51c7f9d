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
        emit("upgrade", nullptr, nullptr, 0, "upgrade refused: " + why,
             {{"result", "failed"}, {"error", why}});
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
            emit("upgrade", nullptr, nullptr, 0, "upgrade refused: " + why,
                 {{"result", "failed"}, {"error", why}});
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
        emit("upgrade", nullptr, nullptr, 0, "upgrade failed: " + why,
             {{"result", "failed"}, {"error", why}});
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

    end_hooks();
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

}  // namespace clusterd

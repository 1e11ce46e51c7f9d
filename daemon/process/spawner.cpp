#include "daemon/process/spawner.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include "common/limits.hpp"

namespace clusterd {

namespace {

enum SpawnStep : int {
    kSignals,
    kSetpgid,
    kOutput,
    kMoveFds,
    kCloseRange,
    kChdir,
    kAffinity,
    kSetrlimit,
    kSetgroups,
    kSetgid,
    kSetuid,
    kPdeathsig,
    kOrphaned,
    kExecve,
    kStepCount,
};

constexpr const char* kStepNames[kStepCount] = {
    "sigprocmask",
    "setpgid",
    "dup2(output)",
    "dup2(listen fds)",
    "close_range",
    "chdir",
    "sched_setaffinity",
    "setrlimit",
    "setgroups",
    "setgid",
    "setuid",
    "prctl(PR_SET_PDEATHSIG)",
    "getppid (master gone)",
    "execve",
};

[[noreturn]] void child_fail(int pipe_fd, int step, int error) {
    SpawnFailure f{step, error};
    ssize_t ignored = ::write(pipe_fd, &f, sizeof f);
    (void)ignored;
    ::_exit(127);
}

// Everything here runs between fork and execve: async-signal-safe calls only, no malloc.
[[noreturn]] void child(const SpawnSpec& spec, char* const* argv, char* const* envp,
                        char* const* pid_slots, int pipe_fd, pid_t master) {
    sigset_t all;
    sigemptyset(&all);
    for (int sig = 1; sig < NSIG; ++sig) {
        struct sigaction sa {};
        sa.sa_handler = SIG_DFL;
        ::sigaction(sig, &sa, nullptr);  // fails harmlessly for KILL, STOP, and RT gaps
    }
    if (::sigprocmask(SIG_SETMASK, &all, nullptr) < 0) child_fail(pipe_fd, kSignals, errno);
    if (::setpgid(0, 0) < 0) child_fail(pipe_fd, kSetpgid, errno);

    if (spec.output_fd >= 0) {
        if (::dup2(spec.output_fd, 1) < 0 || ::dup2(spec.output_fd, 2) < 0)
            child_fail(pipe_fd, kOutput, errno);
    }

    // Move the passed fds out of the way first, so that placing one at 3+i never clobbers
    // another still to be placed; then put each at 3+i (dup2 clears close-on-exec).
    const int n = static_cast<int>(spec.pass_fds.size());
    int high_pipe = ::fcntl(pipe_fd, F_DUPFD_CLOEXEC, 3 + n);
    if (high_pipe < 0) child_fail(pipe_fd, kMoveFds, errno);
    pipe_fd = high_pipe;
    int moved[limits::kMaxListeners + 1];  // the listeners and a Node IPC channel
    if (n > limits::kMaxListeners + 1) child_fail(pipe_fd, kMoveFds, E2BIG);
    for (int i = 0; i < n; ++i) {
        moved[i] = ::fcntl(spec.pass_fds[i], F_DUPFD_CLOEXEC, 3 + n);
        if (moved[i] < 0) child_fail(pipe_fd, kMoveFds, errno);
    }
    for (int i = 0; i < n; ++i) {
        if (::dup2(moved[i], 3 + i) < 0) child_fail(pipe_fd, kMoveFds, errno);
    }
    // Every other fd closes at execve; the status pipe stays usable until then.
    if (::syscall(SYS_close_range, 3 + n, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        child_fail(pipe_fd, kCloseRange, errno);

    if (spec.cwd && ::chdir(spec.cwd->c_str()) < 0) child_fail(pipe_fd, kChdir, errno);
    if (spec.umask) ::umask(static_cast<mode_t>(*spec.umask));
    if (spec.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(spec.cpu, &set);
        if (::sched_setaffinity(0, sizeof set, &set) < 0) child_fail(pipe_fd, kAffinity, errno);
    }
    for (const RLimit& limit : spec.rlimits) {
        rlimit value{static_cast<rlim_t>(limit.soft), static_cast<rlim_t>(limit.hard)};
        if (::setrlimit(static_cast<__rlimit_resource_t>(limit.resource), &value) < 0)
            child_fail(pipe_fd, kSetrlimit, errno);
    }
    if (spec.gid) {
        if (::setgroups(spec.groups.size(), spec.groups.data()) < 0)
            child_fail(pipe_fd, kSetgroups, errno);
        if (::setgid(*spec.gid) < 0) child_fail(pipe_fd, kSetgid, errno);
    }
    if (spec.uid && ::setuid(*spec.uid) < 0) child_fail(pipe_fd, kSetuid, errno);

    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(pipe_fd, kPdeathsig, errno);
    if (::getppid() != master) child_fail(pipe_fd, kOrphaned, ESRCH);

    char digits[16];
    int len = 0;
    for (pid_t p = ::getpid(); p > 0 && len < 15; p /= 10) digits[len++] = char('0' + p % 10);
    for (char* const* slot = pid_slots; *slot != nullptr; ++slot) {
        for (int i = 0; i < len; ++i) (*slot)[i] = digits[len - 1 - i];
        (*slot)[len] = '\0';
    }
    ::execve(spec.path.c_str(), argv, envp);
    child_fail(pipe_fd, kExecve, errno);
}

}  // namespace

const char* spawn_step_name(int step) {
    return step >= 0 && step < kStepCount ? kStepNames[step] : "unknown step";
}

SpawnResult spawn(const SpawnSpec& spec) {
    SpawnResult result;
    // Everything the child needs is built before fork: it must not allocate.
    std::vector<std::string> env = spec.env;
    std::vector<std::size_t> to_fill;
    for (std::size_t i = 0; i < env.size(); ++i) {
        if (env[i] != "LISTEN_PID=" && env[i] != "WATCHDOG_PID=") continue;
        env[i].resize(env[i].size() + 16, '\0');
        to_fill.push_back(i);
    }
    std::vector<char*> pid_slots;  // where the child writes its pid, after the '='
    for (std::size_t i : to_fill) pid_slots.push_back(env[i].data() + env[i].find('=') + 1);
    pid_slots.push_back(nullptr);
    std::vector<char*> argv;
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) {
        result.error = errno;
        result.call = "pipe2";
        return result;
    }
    UniqueFd read_end(fds[0]);
    UniqueFd write_end(fds[1]);
    pid_t master = ::getpid();
    // Until the child has reset its dispositions it still has the master's handlers (Asio's
    // signal_set writes to the master's self-pipe): a signal in that window would reach
    // the master as its own. Block everything across fork; the child unblocks after reset.
    sigset_t all, saved;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = ::fork();
    if (pid == 0) child(spec, argv.data(), envp.data(), pid_slots.data(), write_end.get(), master);
    int fork_errno = errno;
    if (pid > 0) ::setpgid(pid, pid);  // also here, so a KILL to the group can never miss it
    ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    if (pid < 0) {
        result.error = fork_errno;
        result.call = "fork";
        return result;
    }
    result.pid = pid;
    result.status_pipe = std::move(read_end);
    return result;
}

std::optional<std::string> find_executable(const std::string& name, const std::string& path_env) {
    auto executable = [](const std::string& p) {
        struct stat st {};
        return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
    };
    if (name.empty()) return std::nullopt;
    if (name.find('/') != std::string::npos) {
        if (executable(name)) return name;
        return std::nullopt;
    }
    std::size_t start = 0;
    while (start <= path_env.size()) {
        std::size_t end = path_env.find(':', start);
        if (end == std::string::npos) end = path_env.size();
        std::string dir = path_env.substr(start, end - start);
        std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
        if (executable(candidate)) return candidate;
        start = end + 1;
    }
    return std::nullopt;
}

}  // namespace clusterd

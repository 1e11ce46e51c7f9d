#include "daemon/process/spawner.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <type_traits>

#include "common/exit_codes.hpp"
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

// The child shares the master's memory until execve (CLONE_VM): it calls the kernel
// directly, never a libc wrapper with state of its own. glibc's setuid/setgid/setgroups
// would signal every thread of the *master* (they think they run in it), and a sanitizer's
// interceptors (sigaction, dup2, _exit) would update tables the master owns. The result is
// the system call's, or -errno.
// Nothing that runs in the child is instrumented by a sanitizer: its runtime would see a
// stack it does not know (ASan's no-return handling reports it) and keep its bookkeeping in
// the master's memory.
#define CLUSTERD_CHILD_CODE __attribute__((no_sanitize("address", "thread", "undefined")))

template <typename T>
CLUSTERD_CHILD_CODE long arg(T v) {
    if constexpr (std::is_null_pointer_v<T>)
        return 0;
    else if constexpr (std::is_pointer_v<T>)
        return reinterpret_cast<long>(v);
    else
        return static_cast<long>(v);
}

template <typename... Args>
CLUSTERD_CHILD_CODE long sys(long nr, Args... args) {
    long r = ::syscall(nr, arg(args)...);
    return r < 0 ? -errno : r;
}

// dup2 as libc's (some architectures have only dup3, which refuses old == new).
CLUSTERD_CHILD_CODE long sys_dup2(int from, int to) {
    return from == to ? sys(SYS_fcntl, from, F_GETFD) < 0 ? -EBADF : to
                      : sys(SYS_dup3, from, to, 0);
}

[[noreturn]] CLUSTERD_CHILD_CODE void child_fail(int pipe_fd, int step, long error) {
    SpawnFailure f{step, static_cast<int>(-error)};
    sys(SYS_write, pipe_fd, &f, sizeof f);
    sys(SYS_exit_group, exit_code::worker_exec_failed);
    __builtin_unreachable();
}

// What the child needs, all built by the parent before clone(): the child must not allocate.
struct ChildArgs {
    const SpawnSpec* spec;
    char* const* argv;
    char* const* envp;
    char* const* pid_slots;
    int pipe_fd;
    pid_t master;
};

// Runs between clone and execve on its own stack, in the master's memory while the master's
// thread is suspended (CLONE_VFORK): system calls only, no malloc, nothing written but its
// own stack, the reserved pid slots and errno (the suspended thread's; spawn() does not read
// it after a successful clone).
CLUSTERD_CHILD_CODE int child(void* raw) {
    const ChildArgs& args = *static_cast<const ChildArgs*>(raw);
    const SpawnSpec& spec = *args.spec;
    int pipe_fd = args.pipe_fd;
    long rc = 0;
    // The master's handlers must not run here (they would write to its self-pipe, in its
    // memory): every signal is still blocked; reset them all, then unblock. The kernel's
    // struct sigaction with every field zero is SIG_DFL with no flags and an empty mask.
    const unsigned long dfl[4] = {};
    const unsigned long none = 0;
    for (int sig = 1; sig < NSIG; ++sig)
        sys(SYS_rt_sigaction, sig, dfl, nullptr, sizeof none);  // fails for KILL and STOP
    if ((rc = sys(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof none)) < 0)
        child_fail(pipe_fd, kSignals, rc);
    if ((rc = sys(SYS_setpgid, 0, 0)) < 0) child_fail(pipe_fd, kSetpgid, rc);

    if (spec.output_fd >= 0) {
        if ((rc = sys_dup2(spec.output_fd, 1)) < 0 || (rc = sys_dup2(spec.output_fd, 2)) < 0)
            child_fail(pipe_fd, kOutput, rc);
    }

    // Move the passed fds out of the way first, so that placing one at 3+i never clobbers
    // another still to be placed; then put each at 3+i (dup2 clears close-on-exec).
    const int n = static_cast<int>(spec.pass_fds.size());
    if ((rc = sys(SYS_fcntl, pipe_fd, F_DUPFD_CLOEXEC, 3 + n)) < 0)
        child_fail(pipe_fd, kMoveFds, rc);
    pipe_fd = static_cast<int>(rc);
    // The listeners, a Node IPC channel and the program's scoreboard memfd.
    int moved[limits::kMaxListeners + 2];
    if (n > limits::kMaxListeners + 2) child_fail(pipe_fd, kMoveFds, -E2BIG);
    for (int i = 0; i < n; ++i) {
        if ((rc = sys(SYS_fcntl, spec.pass_fds[i], F_DUPFD_CLOEXEC, 3 + n)) < 0)
            child_fail(pipe_fd, kMoveFds, rc);
        moved[i] = static_cast<int>(rc);
    }
    for (int i = 0; i < n; ++i) {
        if ((rc = sys_dup2(moved[i], 3 + i)) < 0) child_fail(pipe_fd, kMoveFds, rc);
    }
    // Every other fd closes at execve; the status pipe stays usable until then.
    if ((rc = sys(SYS_close_range, 3 + n, ~0U, CLOSE_RANGE_CLOEXEC)) < 0)
        child_fail(pipe_fd, kCloseRange, rc);

    if (spec.cwd && (rc = sys(SYS_chdir, spec.cwd->c_str())) < 0) child_fail(pipe_fd, kChdir, rc);
    if (spec.umask) sys(SYS_umask, *spec.umask);
    if (spec.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(spec.cpu, &set);
        if ((rc = sys(SYS_sched_setaffinity, 0, sizeof set, &set)) < 0)
            child_fail(pipe_fd, kAffinity, rc);
    }
    for (const RLimit& limit : spec.rlimits) {
        rlimit value{static_cast<rlim_t>(limit.soft), static_cast<rlim_t>(limit.hard)};
        if ((rc = sys(SYS_prlimit64, 0, limit.resource, &value, nullptr)) < 0)
            child_fail(pipe_fd, kSetrlimit, rc);
    }
    // The raw calls change this process only (the kernel's are per thread, and the child has
    // one); setgid/setuid as root set the real, effective and saved ids, as these do.
    if (spec.gid) {
        if ((rc = sys(SYS_setgroups, spec.groups.size(), spec.groups.data())) < 0)
            child_fail(pipe_fd, kSetgroups, rc);
        if ((rc = sys(SYS_setresgid, *spec.gid, *spec.gid, *spec.gid)) < 0)
            child_fail(pipe_fd, kSetgid, rc);
    }
    if (spec.uid && (rc = sys(SYS_setresuid, *spec.uid, *spec.uid, *spec.uid)) < 0)
        child_fail(pipe_fd, kSetuid, rc);

    if ((rc = sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) < 0)
        child_fail(pipe_fd, kPdeathsig, rc);
    if (sys(SYS_getppid) != args.master) child_fail(pipe_fd, kOrphaned, -ESRCH);

    const long self = sys(SYS_getpid);
    if (spec.pid_word != nullptr)
        __atomic_store_n(spec.pid_word, static_cast<std::int32_t>(self), __ATOMIC_RELAXED);
    char digits[16];
    int len = 0;
    for (long p = self; p > 0 && len < 15; p /= 10) digits[len++] = char('0' + p % 10);
    for (char* const* slot = args.pid_slots; *slot != nullptr; ++slot) {
        for (int i = 0; i < len; ++i) (*slot)[i] = digits[len - 1 - i];
        (*slot)[len] = '\0';
    }
    rc = sys(SYS_execve, spec.path.c_str(), args.argv, args.envp);
    child_fail(pipe_fd, kExecve, rc);
}

// The child's stack: what child() needs (a few KiB: moved[] is the largest) with a wide
// margin, and a guard page below it so that an overflow faults instead of writing into the
// master's memory.
constexpr std::size_t kChildStack = 64 * 1024;

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
    const long page = ::sysconf(_SC_PAGESIZE);
    const std::size_t map_size = kChildStack + static_cast<std::size_t>(page);
    void* stack = ::mmap(nullptr, map_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        result.error = errno;
        result.call = "mmap";
        return result;
    }
    ::mprotect(stack, static_cast<std::size_t>(page), PROT_NONE);  // the guard page
    ChildArgs args{&spec, argv.data(), envp.data(), pid_slots.data(), write_end.get(), ::getpid()};
    // Until the child has reset its dispositions it still has the master's handlers (Asio's
    // signal_set writes to the master's self-pipe): a signal in that window would reach
    // the master as its own. Block everything across clone; the child unblocks after reset.
    sigset_t all, saved;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved);
    // CLONE_VM: no copy of the master's page tables, no copy-on-write faults on either side
    // afterwards. CLONE_VFORK: this thread waits until the child has called execve (or
    // exited), so the child has its own process group before anyone can signal it, and the
    // stack and everything it reads stay valid while it runs. SIGCHLD: reaped as any child.
    pid_t pid = ::clone(child, static_cast<char*>(stack) + map_size,
                        CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    ::munmap(stack, map_size);
    if (pid < 0) {
        result.error = clone_errno;
        result.call = "clone";
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

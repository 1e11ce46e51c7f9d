// clone + execve of one worker, with the child-side set-up done by raw system calls only.
//
// clone(CLONE_VM | CLONE_VFORK), not fork: the child runs in the master's memory on a stack
// of its own until execve, so the master's page tables are not copied and neither side takes
// copy-on-write faults (posix_spawn does the same, but cannot do every step below). The
// calling thread waits until the child has called execve or exited. The child therefore
// calls the kernel directly (no libc wrapper with state of its own: glibc's setuid and
// setgroups would signal the master's threads), allocates nothing and writes only its own
// stack, its pid into the env copy made for it, and the caller's errno.
//
// Why not Boost.Process: Boost 1.81's launcher crashes in bind_fd, leaks fds into the child
// and can block the loop in its wait (shared/notes/dependencies.md). This file does the
// same job in one function and leaves reaping to the Reaper.
//
// Every signal is blocked in the master across clone (the child would otherwise run the
// master's handlers, in the master's memory). In the child, in this order: default signal
// dispositions and an empty signal mask; its own process group; stdout/stderr redirected if
// asked; the passed fds moved to 3, 4, ... (close-on-exec cleared on exactly those) and every
// other fd marked close-on-exec with close_range; cwd, umask, CPU affinity; resource limits
// (setrlimit, while still privileged, so a hard limit may be raised); groups, gid, uid
// (setgroups, setresgid, setresuid: real, effective and saved ids, as setgid/setuid by root
// set them); PR_SET_PDEATHSIG(SIGKILL) (after the uid change, which clears it) and a check
// that the master is still its parent; the digits of its own pid written into the reserved
// "LISTEN_PID=" and "WATCHDOG_PID=" entries, and its pid into `pid_word` if set; execve. A failure at any step writes
// {step, errno} to an O_CLOEXEC pipe and exits with exit_code::worker_exec_failed; EOF on
// that pipe means execve succeeded.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "common/fd.hpp"

namespace clusterd {

struct SpawnSpec {
    std::string path;               // absolute or relative path to execve (no PATH search)
    std::vector<std::string> argv;  // argv[0] included
    /// "KEY=VALUE" entries. Entries exactly "LISTEN_PID=" and "WATCHDOG_PID=" are completed
    /// with the child's pid.
    std::vector<std::string> env;
    std::vector<int> pass_fds;  // become fds 3, 4, ... in the child
    std::optional<std::string> cwd;
    std::optional<unsigned> umask;
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
    std::vector<gid_t> groups;    // supplementary groups, set when gid is set
    int output_fd = -1;           // when >= 0: the child's stdout and stderr
    int cpu = -1;                 // when >= 0: pin the child to this CPU
    std::vector<RLimit> rlimits;  // setrlimit() each, before the privileges are dropped
    /// When set: the child stores its pid here before execve (its scoreboard record, in memory
    /// it shares with the master until then), so the record names it before it runs.
    std::int32_t* pid_word = nullptr;
};

struct SpawnResult {
    pid_t pid = -1;  // -1: no child; `call` failed with `error`
    int error = 0;
    /// "pipe2" (the status pipe, e.g. out of fds), "mmap" (the child's stack) or "clone"
    const char* call = "";
    /// Read end of the exec-status pipe: EOF = execve succeeded, else a SpawnFailure.
    UniqueFd status_pipe;
};

/// What the child writes to the status pipe when a set-up step fails.
struct SpawnFailure {
    int step;  // index into spawn_step_name()
    int error;
};

/// Human name of the failed child step ("execve", "setuid", ...).
const char* spawn_step_name(int step);

/// Clone and exec. Never throws; blocks until the child has called execve (or failed a step
/// before it), which takes well under a millisecond.
SpawnResult spawn(const SpawnSpec& spec);

/// Find `name` as execvp would: a name with '/' is taken as is, else each PATH entry is
/// tried for an executable regular file. nullopt when none is found.
std::optional<std::string> find_executable(const std::string& name, const std::string& path_env);

}  // namespace clusterd

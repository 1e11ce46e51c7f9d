// What the supervisor does to the world, and the clock it reads: the one seam between the
// master's logic (slots, programs, operations, commands) and the machine.
//
// In production this is the AsioExecutor (asio_executor.hpp): the spawner, the reaper, signal
// delivery, the loop's timers and the steady clock. In tests it is a fake that records every
// action and lets the test deliver "exited", "signal received" and "timer fired" on simulated
// time (tests/unit/daemon/supervisor/fake_executor.hpp), so a rolling restart of 64 slots runs in
// microseconds and every interleaving can be replayed from a seed.
//
// Rules both implementations keep:
// - A timer's callback runs from the loop, never inside arm(); re-arming or cancelling means
//   the earlier callback never runs; destroying the timer cancels it.
// - on_exit runs exactly once per child the executor spawned (and once per orphan inherited),
//   from the loop, never inside spawn().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "daemon/policy/slot.hpp"

namespace clusterd {

struct SpawnSpec;

/// One timer of the loop's.
class Timer {
  public:
    virtual ~Timer() = default;
    /// Run `fn` at `at`, replacing whatever was armed.
    virtual void arm(TimePoint at, std::function<void()> fn) = 0;
    virtual void cancel() = 0;
};

/// A config file read and parsed (off the loop in production).
struct LoadedConfig {
    std::optional<Config> config;
    std::string error;  // why not, when no config
};

/// A process the executor started, or why not.
struct Started {
    pid_t pid = -1;         // -1: no child; `call` failed with `error`
    int error = 0;          // errno
    const char* call = "";  // the system call that failed ("fork", "pipe2", ...)
};

/// Resident memory and CPU time of a live process.
struct ProcessFigures {
    std::uint64_t rss_bytes = 0;
    double cpu_seconds = 0;
};

class Executor {
  public:
    virtual ~Executor() = default;

    virtual TimePoint now() const = 0;
    virtual std::unique_ptr<Timer> make_timer() = 0;

    /// Begin delivering child exits and the master's own signals (after start-up).
    virtual void start(std::function<void(pid_t pid, int wait_status)> on_exit,
                       std::function<void(int sig)> on_signal) = 0;
    /// Stop delivering anything and let the loop return: the master is done.
    virtual void finish() = 0;

    /// fork/exec `spec`; `label` and `path` name it in the log when the exec fails later.
    virtual Started spawn(const SpawnSpec& spec, const std::string& label,
                          const std::string& path) = 0;
    /// kill(2): `target` < 0 is a process group. Returns 0 or the errno.
    virtual int kill(pid_t target, int sig) = 0;
    /// The children of the master that are no worker's (orphans it inherited as a subreaper).
    virtual std::vector<pid_t> children() = 0;
    virtual std::optional<ProcessFigures> figures(pid_t pid) = 0;

    /// Read and parse `path` without blocking the loop; `done` runs on the loop.
    virtual void load_config(const std::string& path, std::function<void(LoadedConfig)> done) = 0;
};

}  // namespace clusterd

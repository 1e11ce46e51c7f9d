// What /proc says about one process: resident memory, CPU time used, and when it started.
//
// Read on demand (each call opens /proc/PID/statm and /proc/PID/stat, a few microseconds); a
// pid that has vanished, or is a zombie already, gives nullopt. No Asio, no allocation beyond
// the read buffer: cheap enough to sample every worker once a second from the master's loop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace clusterd {

/// A sample of one process.
struct ProcStats {
    /// Resident set size in bytes (statm's resident pages x page size).
    std::uint64_t rss_bytes = 0;
    /// CPU time spent in user and kernel mode, in seconds (utime + stime / _SC_CLK_TCK).
    double cpu_seconds = 0;
    /// When the process started, in seconds since boot (stat's starttime / _SC_CLK_TCK).
    double start_time = 0;
    /// One-letter state from /proc/PID/stat: R, S, D, Z, T, ...
    char state = '?';
};

/// Reads /proc/PID/{statm,stat}; nullopt when the process no longer exists (or is a zombie).
std::optional<ProcStats> read_proc_stats(pid_t pid);

/// Parses the text of /proc/PID/stat and /proc/PID/statm (exposed for tests); nullopt when
/// malformed. `page_size` and `clock_ticks` come from sysconf().
std::optional<ProcStats> parse_proc_stats(std::string_view stat, std::string_view statm,
                                          long page_size, long clock_ticks);

/// Seconds since boot now (CLOCK_BOOTTIME), comparable with ProcStats::start_time.
double seconds_since_boot();

/// How many more file descriptors this process may open now: its RLIMIT_NOFILE soft limit
/// less the entries of /proc/self/fd. nullopt when either cannot be read.
std::optional<std::size_t> free_fds();

}  // namespace clusterd

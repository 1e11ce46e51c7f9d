// The master's log: stderr (journald under systemd) or a file reopened on USR1.
//
// The loop never writes to the log itself: it formats a line and queues it, and a writer
// thread (which touches nothing else) does the blocking write(2). The queue holds at most
// kLogQueueBytes; when the reader of the log stalls, further lines are dropped and counted
// (log_lines_dropped(), clusterd_log_lines_dropped_total in /metrics) and the first line that
// gets through after a drop is preceded by one that says how many were lost.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace clusterd {

/// Set up the default spdlog logger. `file` "" = stderr. Throws on a bad level or file (the
/// logger in place is kept then). Called again to reopen the file (USR1) or switch files.
void setup_logging(const std::string& level, const std::string& file);

/// Log to `file` ("" = stderr) from now on, at the current level: USR1 reopens the log file
/// (logrotate), a reload may name another one. Throws when the file cannot be opened (the
/// logger in place is kept then).
void reopen_log(const std::string& file);

/// Most bytes of formatted log lines waiting for the writer thread.
inline constexpr std::size_t kLogQueueBytes = 1024 * 1024;

/// Wait up to `timeout` for every queued line to be written (at exit; it also runs from
/// atexit). False when the log's reader is still stalled.
bool drain_log(std::chrono::milliseconds timeout);

/// Log lines dropped because the queue was full, since the start.
std::uint64_t log_lines_dropped();

/// spdlog level from "trace".."error"; false when unknown.
bool valid_log_level(const std::string& level);

}  // namespace clusterd

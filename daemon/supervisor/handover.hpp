// The master's state as one image hands it to the next (`clusterd upgrade`, SIGUSR2).
//
// The old image writes it into a sealed memfd and execs the new binary in the same pid with
// `run <its own arguments> --resume-state-fd N --rollback FD:N`; the new image reads it, rebuilds
// its tables around the same worker processes (still its children) and the same file descriptors
// (the listening sockets, notify sockets, output pipes, the control socket and the connection of
// the client that asked), and carries on. Before any of that, `upgrade-check --state-fd 3` runs the
// new binary as a child on the same bytes: an image that cannot read them is never exec'd.
//
// The bytes: the line "clusterd-state <format>\n", then one JSON object. Times are
// nanoseconds relative to the moment of saving ("deadline in 1.2 s", "started 3 h ago"), so
// they mean the same to any clock; kNoTime stands for "never set". The fds are the numbers
// in the saving process, left open (close-on-exec cleared) across the exec.
//
// An unknown format is refused by name; a missing or mistyped field fails the whole read
// (decode_handover throws HandoverError) before anything is touched.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/net/listeners.hpp"

namespace clusterd {

/// The format this build writes and reads. A new image refuses any other.
inline constexpr int kHandoverFormat = 1;
/// The most bytes of state read (a state of 4096 workers is about 2 MiB).
inline constexpr std::size_t kMaxHandoverBytes = 64 * 1024 * 1024;
inline constexpr std::int64_t kNoTime = INT64_MIN;

class HandoverError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct HandoverSlot {
    int state = 0;  // SlotState
    bool want_up = false;
    pid_t pid = 0;
    int restarts = 0;
    int failures = 0;
    std::int64_t started_at = kNoTime;
    std::int64_t ready_at = kNoTime;
    std::int64_t last_heartbeat = kNoTime;
    std::int64_t heartbeat_interval = 0;
    bool late = false;
    int ends = 0;
    std::int64_t deadline = kNoTime;
    int stop_reason = 0;  // ExitCause
    int last_cause = 0;
    bool last_signaled = false;
    int last_code = 0;
    bool last_core_dumped = false;
    bool last_abandoned = false;
    std::int64_t last_backoff = 0;
};

struct HandoverWorker {
    std::uint64_t id = 0;
    int slot = 0;
    bool retiring = false;  // replaced: dropped once stopped
    int replacing = -1;     // a replacement under way (Replace), or -1
    std::uint64_t replaces = 0;
    HandoverSlot sm;
    std::string status;
    std::map<std::string, std::string> fields;
    int notify_fd = -1;  // -1: never spawned
    std::vector<int> capture_fds;
    std::vector<std::string> capture_tail;
    /// `ipc: node`: the master's end of the worker's Node channel, and what of its input was
    /// read but not yet a whole line. Optional in the bytes (an image from before Node
    /// channels writes none), so these two are the only fields a read may miss.
    int ipc_fd = -1;
    std::string ipc_input;
    /// Its process's scoreboard record (-1: none) and what it writes there. Optional in the
    /// bytes (an image from before the scoreboard writes none).
    int board_index = -1;
    bool board_beats = false;
    bool board_figures = false;
};

/// A program's SocketTable (daemon/net/listeners.hpp).
using HandoverSockets = SocketTableFds;

struct HandoverProgram {
    std::string name;
    std::string source;       // the config file its generation was read from
    std::string config_text;  // that file's text then
    /// The files it included and the env files it read, as read then (ConfigFiles; only in
    /// the bytes when there are any, so an image without them reads the state as before).
    std::map<std::string, std::string> config_files;
    std::uint64_t generation = 1;
    int runtime_scale = 0;  // 0: none
    bool stopped = false;
    std::map<std::string, int> exits;  // by ExitCause name
    std::int64_t started_at = kNoTime;
    bool all_ready_logged = false;
    bool serving = false;
    std::int64_t next_probe = kNoTime;
    std::int64_t probe_at = kNoTime;
    bool refusing = false;
    HandoverSockets sockets;
    std::vector<HandoverWorker> workers;  // one per slot, in slot order
    /// Workers that hold no slot: a late worker's spare or a memory replacement still
    /// starting, or the worker they took over from, leaving.
    std::vector<HandoverWorker> others;
    /// Its scoreboard memfd (-1: none; optional in the bytes), and the records of processes
    /// given up on (abandoned) that still hold one, by pid.
    int board_fd = -1;
    std::map<std::string, int> board_abandoned;
};

struct HandoverAbandoned {
    pid_t pid = 0;
    std::string label;
    std::int64_t since = kNoTime;
    std::int64_t kill_at = kNoTime;
};

struct HandoverState {
    int format = kHandoverFormat;
    std::string version;                // of the image that wrote it
    std::vector<std::string> run_args;  // what `run` was given (the new image gets them too)
    std::uint64_t upgrades = 0;
    std::string config_path;
    std::string config_source;
    std::string config_text;
    std::map<std::string, std::string> config_files;  // as HandoverProgram's
    std::string override_control;
    std::string override_state_dir;
    std::string log_level;  // the level in force (`log-level` may have changed it)
    std::int64_t started_at = kNoTime;
    std::int64_t upgrade_started = kNoTime;  // when `upgrade` was asked for
    /// The saving image's clock at saving, as nanoseconds since its epoch: with the steady
    /// clock (CLOCK_MONOTONIC, the same in both images), the new image learns how long the
    /// exec took and ages every time by that much (exec_gap, not in the bytes).
    std::int64_t saved_at = kNoTime;
    std::int64_t exec_gap = 0;
    std::uint64_t next_worker_id = 1;
    std::uint64_t config_generation = 1;
    int reloads_ok = 0;
    int reloads_failed = 0;
    std::map<std::string, std::uint64_t> notify_counters;
    std::vector<HandoverProgram> programs;
    std::vector<HandoverAbandoned> abandoned;
    std::map<std::string, std::uint64_t> replacements;  // old worker id -> its replacement's
    std::map<std::string, int> activated;               // systemd's sockets by name
    std::string notify_dir;
    int control_fd = -1;
    int requester_fd = -1;  // the connection `upgrade` came on; -1: SIGUSR2
    int metrics_fd = -1;
    bool systemd_notify = false;
    bool sent_ready = false;

    /// Every fd named above, once each.
    std::vector<int> fds() const;
};

/// The header and JSON.
std::string encode_handover(const HandoverState& state);
/// Throws HandoverError: "state format 2 is not one this clusterd reads (it reads 1)".
HandoverState decode_handover(const std::string& bytes);

/// A sealed memfd holding `bytes` (close-on-exec; the caller clears it). Throws
/// std::system_error.
int write_handover_memfd(const std::string& bytes);
/// Everything in fd `fd` from offset 0 (pread: the offset is shared with the other image).
/// Throws HandoverError.
std::string read_handover_fd(int fd);

/// Checks that each fd the state names is open in this process (an image that lost one
/// cannot resume). Throws HandoverError naming the first that is not.
void check_handover_fds(const HandoverState& state);

}  // namespace clusterd

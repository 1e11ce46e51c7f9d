// The master's end of the sd_notify protocol (common/notify.hpp): one unix datagram socket
// per worker, bound at a filesystem path, read on the master's loop, never blocking.
//
// Who can send: the sockets live in one directory per daemon (NotifyDir, beside the control
// socket, see NotifyDir::for_control), owned by the daemon's uid, mode 0711: nobody else can list
// or create anything there. Each socket file is owned by the uid its worker runs as (the daemon's
// own uid when the program sets no `user`), mode 0600: connecting to it needs write permission on
// it, so no other uid can even reach it. Of what arrives, SO_PASSCRED gives the sender's pid: with
// `notify_access: main` only the worker's own pid counts; with `all` (the default) also its
// descendants, told by relations the kernel keeps (see NotifySender), read from /proc the moment
// the datagram is read: before any fd that came with it is closed, so a sender that waits for
// that (sd_notify_barrier(), which systemd-notify does by default) is still there to be read.
//
// Why one socket per worker: a unix datagram queue holds net.unix.max_dgram_qlen messages
// (10 by default) per receiving socket. With one shared socket, any sender (a worker's
// flood, or just more than 10 workers heartbeating while the master is busy) filled it and
// the others' heartbeats were dropped. Now a sender fills only its own worker's queue.
// Cost: one fd in the master per worker; none in the worker (sd_notify opens one per send).
//
// Warnings a sender causes (oversized datagrams, foreign pids, fields over the caps) go
// through a WarnLimiter per socket: at most kNotifyWarnBurst per kNotifyWarnWindow, then one
// line saying how many were suppressed. Every rejection is counted in NotifyCounters.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/notify.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

inline constexpr int kNotifyWarnBurst = 5;
inline constexpr std::chrono::seconds kNotifyWarnWindow{10};
/// Datagrams one drain() reads from one socket at most (its queue holds about 10).
inline constexpr int kNotifyDrainBatch = 64;

/// At most `burst` warnings per `window`; what is over is counted, and reported once when
/// the next window's first warning is let through. Pure: time is a parameter.
class WarnLimiter {
  public:
    using Clock = std::chrono::steady_clock;

    WarnLimiter(int burst = kNotifyWarnBurst, Clock::duration window = kNotifyWarnWindow)
        : burst_(burst), window_(window) {}

    struct Verdict {
        bool log = false;
        /// Warnings suppressed in the previous window(s), to report before this one.
        std::uint64_t suppressed_before = 0;
    };

    /// Whether a warning at `now` may be logged.
    Verdict allow(Clock::time_point now);
    /// Warnings suppressed since the last report.
    std::uint64_t suppressed() const { return suppressed_; }

  private:
    int burst_;
    Clock::duration window_;
    std::optional<Clock::time_point> start_;
    int used_ = 0;
    std::uint64_t suppressed_ = 0;
};

/// Logs `label: message` at warn within `limiter`, first saying how many `kind` warnings
/// ("notify", "Node channel") it held back before; one held back now is added to `suppressed`.
void warn_limited(WarnLimiter& limiter, const std::string& label, const char* kind,
                  const std::string& message, std::uint64_t& suppressed);

/// What the notify sockets rejected or cut since the master started (for /metrics).
struct NotifyCounters {
    std::uint64_t oversized = 0;         // datagrams over kNotifyMaxDatagram, dropped
    std::uint64_t no_credentials = 0;    // datagrams without a sender pid, dropped
    std::uint64_t foreign_sender = 0;    // not the worker (nor below it, under notify_access: all)
    std::uint64_t fields_dropped = 0;    // X_CLUSTERD_ fields over a size or count cap
    std::uint64_t status_truncated = 0;  // STATUS texts cut at kNotifyMaxStatus
    std::uint64_t warnings_suppressed = 0;
};

/// The directory of a daemon's notify sockets: created at start-up, or, if it exists,
/// checked to be a directory owned by the daemon's uid (else refused) and emptied of a
/// previous run's sockets. Removed (if empty) when destroyed.
class NotifyDir {
  public:
    /// "<control socket path without .sock>.notify"; as root, when some directory above it
    /// is closed to other users, "/run/clusterd/notify-<hash of the control path>".
    static std::string for_control(const std::string& control_path);

    /// Throws std::runtime_error naming the path and the problem. `keep_sockets`: an upgrade's
    /// new image, whose workers' sockets are in it (else what is there is a previous run's).
    explicit NotifyDir(std::string path, bool keep_sockets = false);
    ~NotifyDir();
    NotifyDir(const NotifyDir&) = delete;
    NotifyDir& operator=(const NotifyDir&) = delete;

    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

/// How deep NotifySender::ancestors goes.
inline constexpr int kNotifyAncestors = 16;

/// A datagram's sender, as the kernel tells it when the datagram is read. A process other than
/// the worker belongs to it when it is in the worker's process group (the worker leads its own;
/// a process can join a group of its own session only, and leaves it by setsid() or setpgid()),
/// or when the worker is among its ancestors (a child that made its own group or session, while
/// its parents live: an orphan is re-parented and loses the link).
struct NotifySender {
    pid_t pid = 0;
    /// False when /proc had no entry for it: it exited (and was reaped) before its datagram
    /// was read, so nothing tells whose it was.
    bool known = false;
    pid_t pgid = 0;
    /// Its parent, the parent's parent... up to kNotifyAncestors or pid 1. Read only for a
    /// sender that is not the socket's main pid (see NotifySocket::set_main_pid()).
    std::vector<pid_t> ancestors;
};

/// /proc/<pid>/stat's parent and process group; false if there is no such process.
bool read_proc_parent(pid_t pid, pid_t& ppid, pid_t& pgid);

/// One worker's notify socket: bound at `<dir>/<name>`, unlinked and closed when destroyed.
class NotifySocket {
  public:
    /// A datagram that passed the checks here (size, credentials), parsed.
    using Handler = std::function<void(const NotifySender& sender, const NotifyMessage& message)>;

    /// Bind it, then give the file to `owner` (uid, gid) if set. Throws std::system_error.
    NotifySocket(boost::asio::io_context& io, const NotifyDir& dir, const std::string& name,
                 std::optional<uid_t> owner, std::optional<gid_t> group, std::string label,
                 NotifyCounters& counters, Handler handler);
    /// A socket bound already at `path` (an upgrade's new image takes the old one's fd).
    NotifySocket(boost::asio::io_context& io, int fd, std::string path, std::string label,
                 NotifyCounters& counters, Handler handler);
    ~NotifySocket();
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;

    /// The value for NOTIFY_SOCKET.
    const std::string& path() const;
    int fd() const;
    /// Start reading on the loop.
    void start();
    /// Read, without blocking, what is queued now and hand it to the handler (before a
    /// deadline is judged: the loop may wake from a stall with both due at once).
    void drain();
    /// Log a warning about this worker's messages, within the socket's WarnLimiter.
    void warn(const std::string& message);
    /// The worker's pid now (0: none): its datagrams need no look into /proc.
    void set_main_pid(pid_t pid);

  private:
    struct State;
    std::shared_ptr<State> state_;
};

}  // namespace clusterd

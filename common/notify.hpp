// The sd_notify protocol (see sd_notify(3)) as clusterd speaks it, on both sides.
//
// A message is one datagram of newline-separated KEY=VALUE assignments sent to the unix
// datagram socket named by $NOTIFY_SOCKET; a leading '@' names an abstract-namespace
// socket. The master reads the sender's pid from SCM_CREDENTIALS. Keys clusterd acts on:
// READY=1, WATCHDOG=1, STOPPING=1, RELOADING=1, STATUS=<text>, and X_CLUSTERD_<NAME>=<value>
// for figures a worker reports (loop lag, open connections, ...). Unknown keys are ignored.
//
// What one sender can make the master keep is bounded: a datagram is read up to
// kNotifyMaxDatagram bytes (a longer one is dropped whole), a STATUS text is cut at
// kNotifyMaxStatus bytes, an X_CLUSTERD_ field whose name passes kNotifyMaxKey or whose value
// passes kNotifyMaxValue bytes is dropped, and a worker keeps at most kNotifyMaxFields
// distinct fields (a new name past that is dropped; known names are still updated).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace clusterd {

inline constexpr std::size_t kNotifyMaxDatagram = 4096;
inline constexpr std::size_t kNotifyMaxStatus = 1024;
inline constexpr std::size_t kNotifyMaxKey = 64;
inline constexpr std::size_t kNotifyMaxValue = 256;
inline constexpr std::size_t kNotifyMaxFields = 32;

struct NotifyMessage {
    bool ready = false;
    bool watchdog = false;
    bool stopping = false;
    bool reloading = false;
    std::optional<std::string> status;
    /// X_CLUSTERD_* fields, keyed without the prefix ("LOOP_LAG_US").
    std::map<std::string, std::string> fields;
    /// X_CLUSTERD_* fields dropped for a name or value over its limit, or past
    /// kNotifyMaxFields names in this datagram.
    std::size_t fields_dropped = 0;
    /// STATUS was longer than kNotifyMaxStatus and was cut there.
    bool status_truncated = false;
};

/// Parse one datagram. Lines without '=' are ignored, as systemd does.
NotifyMessage parse_notify(std::string_view datagram);

/// Merge a message's fields into the ones kept for a worker, keeping at most `max` names.
/// Returns how many new names were dropped.
std::size_t merge_notify_fields(std::map<std::string, std::string>& kept,
                                const std::map<std::string, std::string>& fields,
                                std::size_t max = kNotifyMaxFields);

/// How long a state change (READY=1, STOPPING=1) may wait for room in the receiver's queue.
/// A unix datagram queue holds only net.unix.max_dgram_qlen messages (10 by default on many
/// kernels): when hundreds of workers start at once, a non-blocking READY=1 fails with
/// EAGAIN and is lost, and the master would wait for it until start_timeout.
inline constexpr std::chrono::milliseconds notify_state_wait{2000};

/// Send `message` to the socket named by `socket_path` ("/path" or "@abstract").
/// Returns 0 or an errno value; never throws. With `wait` zero it never blocks
/// (MSG_DONTWAIT: a heartbeat that finds the queue full is dropped, the next one follows);
/// otherwise it waits up to `wait` for room in the receiver's queue (EAGAIN after that).
int notify_send(std::string_view socket_path, std::string_view message,
                std::chrono::milliseconds wait = {});

/// notify_send to $NOTIFY_SOCKET; 0 without doing anything when it is unset.
int notify(std::string_view message, std::chrono::milliseconds wait = {});

}  // namespace clusterd

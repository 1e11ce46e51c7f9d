// The sd_notify protocol (see sd_notify(3)) as clusterd speaks it, on both sides.
//
// A message is one datagram of newline-separated KEY=VALUE assignments sent to the unix
// datagram socket named by $NOTIFY_SOCKET; a leading '@' names an abstract-namespace
// socket. The master reads the sender's pid from SCM_CREDENTIALS. Keys clusterd acts on:
// READY=1, WATCHDOG=1, STOPPING=1, RELOADING=1, STATUS=<text>, and X_CLUSTERD_<NAME>=<value>
// for figures a worker reports (loop lag, open connections, ...). Unknown keys are ignored.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace clusterd {

struct NotifyMessage {
    bool ready = false;
    bool watchdog = false;
    bool stopping = false;
    bool reloading = false;
    std::optional<std::string> status;
    /// X_CLUSTERD_* fields, keyed without the prefix ("LOOP_LAG_US").
    std::map<std::string, std::string> fields;
};

/// Parse one datagram. Lines without '=' are ignored, as systemd does.
NotifyMessage parse_notify(std::string_view datagram);

/// Send `message` to the socket named by `socket_path` ("/path" or "@abstract").
/// Returns 0 or an errno value. Never blocks (MSG_DONTWAIT); never throws.
int notify_send(std::string_view socket_path, std::string_view message);

/// notify_send to $NOTIFY_SOCKET; 0 without doing anything when it is unset.
int notify(std::string_view message);

}  // namespace clusterd

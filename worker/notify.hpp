// The worker's side of the sd_notify protocol (described in common/notify.hpp): readiness,
// status text, stopping, heartbeat and clusterd's X_CLUSTERD_* figures, sent to $NOTIFY_SOCKET.
// Every call is a no-op returning 0 when NOTIFY_SOCKET is unset, so a worker run by hand works.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace clusterd::worker {

/// A clusterd figure: name without the X_CLUSTERD_ prefix ("LOOP_LAG_US") and its value.
using NotifyField = std::pair<std::string_view, std::int64_t>;

/// "READY=1", with a STATUS= line when `status` is not empty, and X_CLUSTERD_HEARTBEAT_USEC
/// when `heartbeat` is set (how often WATCHDOG=1 will follow: the master then knows from the
/// start when a heartbeat is late). Returns 0 or an errno value.
int notify_ready(std::string_view status = {},
                 std::chrono::microseconds heartbeat = std::chrono::microseconds(0));
/// "STATUS=<text>" (newlines become spaces). Returns 0 or an errno value.
int notify_status(std::string_view text);
/// "STOPPING=1". Returns 0 or an errno value.
int notify_stopping();
/// "WATCHDOG=1" plus X_CLUSTERD_<name>=<value> lines. Returns 0 or an errno value.
int notify_watchdog(const std::vector<NotifyField>& fields = {});
/// X_CLUSTERD_<name>=<value> lines only. Returns 0 or an errno value.
int notify_fields(const std::vector<NotifyField>& fields);

/// The datagram notify_watchdog() sends (exposed for tests).
std::string format_watchdog(const std::vector<NotifyField>& fields);

/// The watchdog variables as found in the environment; nullptr means unset.
struct WatchdogEnv {
    const char* usec = nullptr;
    const char* pid = nullptr;
};

/// The watchdog timeout for process `self`: WATCHDOG_USEC when it is a positive number and
/// WATCHDOG_PID is unset or equals `self`; nullopt otherwise (as sd_watchdog_enabled(3)).
std::optional<std::chrono::microseconds> parse_watchdog_env(const WatchdogEnv& env, pid_t self);

/// parse_watchdog_env() on this process's environment. Heartbeats go every half of it.
std::optional<std::chrono::microseconds> watchdog_timeout();

}  // namespace clusterd::worker

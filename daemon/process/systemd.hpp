// The master's side of being a systemd service (no libsystemd: the protocols are small).
//
// - Socket activation (sd_listen_fds(3)): LISTEN_PID must be our pid; fds 3 .. 3+LISTEN_FDS-1
//   are ours, named by LISTEN_FDNAMES (':'-separated, "unknown" when absent). The variables
//   are removed from the environment once read, as sd_listen_fds(1) does.
// - Readiness and watchdog (sd_notify(3)): READY=1, RELOADING=1 with MONOTONIC_USEC,
//   STOPPING=1, STATUS=, and WATCHDOG=1 every half WATCHDOG_USEC when WATCHDOG_PID is unset
//   or ours. Sent through common/notify.hpp (abstract sockets included).
#pragma once

#include <chrono>
#include <map>
#include <string>

namespace clusterd {

/// Sockets systemd passed to this process, by name (the first fd of a repeated name).
std::map<std::string, int> take_activated_sockets();

/// The watchdog interval systemd asks for (0 = none).
std::chrono::microseconds systemd_watchdog_interval();

/// "MONOTONIC_USEC=<now>", for RELOADING=1.
std::string monotonic_usec_field();

}  // namespace clusterd

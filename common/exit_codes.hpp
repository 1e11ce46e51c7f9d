// Exit codes with a meaning to clusterd.
//
// Workers: exit 0 after the stop signal is a requested stop. kWorkerBadConfig (78, the
// sysexits EX_CONFIG) means "my configuration is wrong, restarting me will not help":
// the master does not respawn that slot and marks it failed. kWorkerExecFailed is what the
// spawner's child exits with when execve() fails (the master logs the errno it reports).
//
// Master (`clusterd`): 0 clean stop, 2 usage error, 3 invalid config, 4 system error
// (a socket could not be bound, fork failed at start-up, ...).
#pragma once

namespace clusterd::exit_code {

inline constexpr int ok = 0;
inline constexpr int usage = 2;
inline constexpr int invalid_config = 3;
inline constexpr int system_error = 4;

inline constexpr int worker_bad_config = 78;
inline constexpr int worker_exec_failed = 127;

}  // namespace clusterd::exit_code

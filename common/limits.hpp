// The limits that input (config file, control requests, signals, the state file) can reach,
// in one place, so that the loader, the CLI, the control protocol, SIGTTIN and the spawner
// agree. Each is documented in docs/man/clusterd.yaml.5.md and etc/clusterd.yaml.
#pragma once

#include <chrono>
#include <cstddef>

namespace clusterd::limits {

/// Workers of one program: `cores`, `max_surge`, `clusterd scale`, SIGTTIN, the state file.
inline constexpr int kMaxWorkers = 4096;

/// `listen:` entries of one program: the spawner places them at fds 3.. in a fixed table.
inline constexpr int kMaxListeners = 256;

/// Size of a config file. Anything larger is refused before it is read.
inline constexpr std::size_t kMaxConfigBytes = std::size_t{4} << 20;

/// Files `include:` may add to a config (all patterns together).
inline constexpr std::size_t kMaxIncludedFiles = 256;

/// Size of an `env_file:` file, and the variables one may set.
inline constexpr std::size_t kMaxEnvFileBytes = std::size_t{1} << 20;
inline constexpr std::size_t kMaxEnvFileVars = 4096;

/// `hooks:` of one program, and the longest a hook may run (`timeout`).
inline constexpr std::size_t kMaxHooks = 16;
inline constexpr std::chrono::milliseconds kMaxHookTimeout = std::chrono::hours(1);

/// How deeply a config file may nest maps and sequences (the deepest valid value,
/// programs.NAME.hooks[I].command[J], is at level 6).
inline constexpr int kMaxConfigDepth = 32;

/// YAML nodes in a config file, an alias counting as many nodes as it names each time.
inline constexpr std::size_t kMaxConfigNodes = 100000;

/// Every duration in the config: at most 7 days, far from where a time point plus the
/// duration would overflow the clock (about 292 years of nanoseconds).
inline constexpr std::chrono::milliseconds kMaxDuration = std::chrono::hours(24 * 7);

/// The shortest `backoff.max`: failing runs of one slot restart at most 10 times a second,
/// whatever the config says (only the first retry may come at once, with `initial: 0s`).
inline constexpr std::chrono::milliseconds kMinBackoffMax{100};

/// The smallest `rlimits.nofile`: stdio, the listeners and a few files of the worker's own.
inline constexpr unsigned long long kMinNofile = 16;

/// Fds a worker needs beyond stdio and its listening sockets (fds 3..): `rlimits.nofile` is
/// at least 3 + listen entries + this, and never below kMinNofile.
inline constexpr unsigned long long kNofileSpare = 8;

}  // namespace clusterd::limits

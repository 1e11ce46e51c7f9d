// The configuration model of clusterd and its YAML loader.
//
// A Config is immutable once loaded: the daemon builds a new one on reload and swaps it.
// Every error found while loading names the file, the 1-based line and column, and what
// was expected; the loader collects all errors of a file before it throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/paths.hpp"

namespace clusterd {

using Duration = std::chrono::milliseconds;

/// Every file a config was read from besides the main one (files `include:` matched, env
/// files), by path, as read: an upgrade hands them to the new image with the main text, so
/// it reads the config exactly as this image did, whatever the disk holds by then.
using ConfigFiles = std::map<std::string, std::string>;

/// One problem found in a config file, with its position (1-based; 0 = unknown).
struct Diagnostic {
    std::string file;
    int line = 0;
    int column = 0;
    std::string message;

    /// "file:line:column: message".
    std::string to_string() const;
};

/// Thrown by the loader; carries every diagnostic of the file.
class ConfigError : public std::runtime_error {
  public:
    explicit ConfigError(std::vector<Diagnostic> diagnostics);
    const std::vector<Diagnostic>& diagnostics() const { return diagnostics_; }

  private:
    std::vector<Diagnostic> diagnostics_;
};

/// When a started worker counts as ready: its READY=1 (or Node's `process.send('ready')`), a
/// time up, or (`ipc: node` only) the Node cluster worker's report that it listens.
enum class ReadyMode { notify, started, listening };
/// Who may send a worker's notify messages: its main pid, or any process that can reach its
/// socket (its descendants). As systemd's NotifyAccess=main / all.
enum class NotifyAccess { main, all };
enum class RestartMode { always, on_failure, never };
/// The channel a worker gets beside NOTIFY_SOCKET: none, or Node's IPC channel
/// (NODE_CHANNEL_FD), on which clusterd plays the Node cluster primary
/// (daemon/net/node_channel.hpp).
enum class IpcMode { none, node };

/// One listening socket of a program ("listen:" entry).
struct ListenConfig {
    std::string name;  // passed to the worker in LISTEN_FDNAMES
    std::string host;  // numeric IPv4 or IPv6 address
    std::uint16_t port = 0;
    bool reuseport = true;  // one SO_REUSEPORT socket per worker slot
    int backlog = 4096;

    /// "host:port", with brackets around an IPv6 host.
    std::string address() const;
};

/// Restart delays after failing runs (see SlotPolicy::min_uptime for what a failing run is).
/// The cap is 5 s: a slot whose runs keep failing retries at least every 5 s, so the whole
/// worker count is back within seconds once the cause goes away, while a crash loop costs one
/// start per 5 s per slot (and one per second per program while nothing serves).
struct BackoffConfig {
    Duration initial{0};
    Duration max{std::chrono::seconds(5)};
};

/// A resource limit for the workers (`rlimits:` entry), applied with setrlimit(2) in the child.
struct RLimit {
    /// "nofile", "core", ... as written in the config.
    std::string name;
    /// RLIMIT_NOFILE, RLIMIT_CORE, ...
    int resource = 0;
    /// Values in the resource's unit (bytes, count, seconds); kUnlimited = RLIM_INFINITY.
    std::uint64_t soft = 0;
    std::uint64_t hard = 0;

    static constexpr std::uint64_t kUnlimited = ~std::uint64_t{0};
    bool operator==(const RLimit&) const = default;
};

/// Where a worker's stdout and stderr go: `output:` as written in the config.
struct Output {
    enum class Kind { capture, inherit, file };
    Kind kind = Kind::capture;
    std::string path;  // Kind::file: appended to

    Output() = default;
    /// "capture", "inherit", or else a file path (the config reader accepts absolute ones).
    Output(std::string_view text)  // NOLINT(google-explicit-constructor): a config value
        : kind(text == "capture"   ? Kind::capture
               : text == "inherit" ? Kind::inherit
                                   : Kind::file),
          path(kind == Kind::file ? std::string(text) : std::string()) {}
    Output(const char* text) : Output(std::string_view(text)) {}         // NOLINT
    Output(const std::string& text) : Output(std::string_view(text)) {}  // NOLINT
    bool is_file() const { return kind == Kind::file; }
    bool operator==(const Output&) const = default;
};

/// The names of the events clusterd reports (`clusterd events`, `hooks:`), in the order
/// `clusterd.yaml(5)` lists them. A hook's `on:` takes any of these.
inline constexpr const char* kEventNames[] = {
    "started",    // a worker process was started (its slot's first)
    "restarted",  // a worker process was started in a slot whose previous one exited
    "ready",      // a worker became ready
    "exited",     // a worker process exited (cause, exit code or signal)
    "backoff",    // a slot waits before its next start (failing runs)
    "recycled",   // a worker is replaced on purpose (memory_limit, max_age)
    "hung",       // a worker missed its heartbeat (late) or its watchdog
    "scaled",     // a program's worker count changed
    "reload",     // a reload was applied, or failed (result)
    "upgrade",    // an upgrade was handed over, or failed (result)
};

/// `hooks:` entry: a command run (argv, no shell) when one of the events `on` names happens
/// to the program. The event is in its environment (CLUSTERD_EVENT, CLUSTERD_PROGRAM, ...).
struct HookConfig {
    std::vector<std::string> on;       // event names, from kEventNames
    std::vector<std::string> command;  // argv; command[0] an absolute path or found in PATH
    Duration timeout{std::chrono::seconds(10)};
    bool operator==(const HookConfig&) const = default;
};

/// `env_file:` entry, as systemd's EnvironmentFile=: a leading `-` makes a missing file fine.
struct EnvFileRef {
    std::string path;  // absolute (a relative one is resolved against the config file's folder)
    bool optional = false;
    bool operator==(const EnvFileRef&) const = default;
};

struct ProgramConfig {
    std::string name;
    /// The file this program was read from (the main config, or one `include:` matched).
    std::string source_file;
    /// The text of the config file this program was read from (shared by its programs): an
    /// upgrade hands it to the new image, which reads the program exactly as this one did.
    std::shared_ptr<const std::string> source_text;
    /// The other files of that config (see ConfigFiles), handed over with source_text.
    std::shared_ptr<const ConfigFiles> source_files;
    /// argv; empty = the built-in clusterd-worker found beside the clusterd binary.
    std::vector<std::string> command;
    /// `cores: auto` resolved at load time (see cpus.hpp), or the configured number.
    int workers = 1;
    bool cores_auto = true;
    std::vector<ListenConfig> listen;
    /// `env:` merged over the variables of `env_file:` (files in order, later ones win).
    std::map<std::string, std::string> env;
    /// `env_file:` as written (resolved paths), read at every load into `env`.
    std::vector<EnvFileRef> env_files;
    bool inherit_env = false;
    std::optional<std::string> user;
    std::optional<std::string> group;
    std::optional<std::string> cwd;
    std::optional<unsigned> umask;
    /// Resource limits, in file order, at most one per resource.
    std::vector<RLimit> rlimits;
    /// Not set: `listening` with `ipc: node`, else `notify`.
    ReadyMode ready = ReadyMode::notify;
    NotifyAccess notify_access = NotifyAccess::all;
    /// Not set: `node` when command[0] is `node` or `nodejs` (by its base name), else `none`.
    IpcMode ipc = IpcMode::none;
    /// `ipc: node`: stopping sends the message 'shutdown' on the channel instead of
    /// stop_signal (PM2's shutdown_with_message); SIGKILL still follows stop_timeout.
    bool shutdown_message = false;
    Duration start_time{std::chrono::seconds(1)};
    Duration start_timeout{std::chrono::seconds(30)};
    Duration watchdog{0};  // 0 = off
    RestartMode restart = RestartMode::always;
    BackoffConfig backoff;
    /// A run is healthy when the worker became ready and stayed up this long: its end is
    /// restarted at once and the failure count starts afresh. Anything shorter is a failing run.
    Duration min_uptime{std::chrono::seconds(1)};
    /// After the watchdog's SIGABRT (or start_timeout's stop signal), how long the abandoned
    /// process may take to dump core and exit before it is killed. Its replacement does not wait.
    Duration abort_timeout{std::chrono::seconds(2)};
    int stop_signal = 15;  // SIGTERM
    Duration stop_timeout{std::chrono::seconds(10)};
    bool cpu_affinity = false;
    /// "capture" (lines go to the daemon's log, the last ones are kept for `status`),
    /// "inherit" or a file path the worker's stdout and stderr are appended to. Capture is the
    /// default: a failing worker's last words belong in `status`, and it costs the master
    /// about 5% of a core at 10,000 lines/s (tests/bench/capture_cost.py).
    Output output;
    /// Rolling restart: how many slots may run a new worker beside the old one at once.
    int max_surge = 1;
    /// Recycle a worker whose RSS passes this many bytes (new worker first); 0 = no limit.
    std::uint64_t memory_limit = 0;
    /// Recycle a worker once it is this old (new worker first, one slot at a time); 0 = never.
    Duration max_age{0};
    /// Slot i of n recycles at max_age - max_age_jitter * i / n, so slots never come due
    /// together (must be less than max_age).
    Duration max_age_jitter{0};
    /// Programs (by name) with at least one ready worker before this one starts; stopping
    /// goes in reverse order.
    std::vector<std::string> depends_on;
    std::vector<HookConfig> hooks;
};

struct DaemonConfig {
    std::string control = default_paths().control;  // see common/paths.hpp
    std::string control_group;  // "" = only root and the daemon's own user may connect
    std::string state_dir = default_paths().state_dir;  // runtime scale overrides survive restarts
    std::string log_level = "info";                     // trace debug info warn error
    std::string log_file;                               // "" = stderr
    std::string metrics;                                // "" = disabled
    Duration shutdown_timeout{std::chrono::seconds(30)};
};

/// `clusterd run --control/--state-dir`: they win over the config file, at start and at every
/// reload. Empty = not given.
struct DaemonOverrides {
    std::string control;
    std::string state_dir;
    void apply(DaemonConfig& d) const {
        if (!control.empty()) d.control = control;
        if (!state_dir.empty()) d.state_dir = state_dir;
    }
};

/// Where a value stands in its file (1-based); `file` "" = the main config file.
struct Position {
    int line = 0;
    int column = 0;
    std::string file;
};

struct Config {
    std::string source;                       // file path, or "<built-in>"
    std::shared_ptr<const std::string> text;  // what was read (see ProgramConfig::source_text)
    /// The other files read (see ConfigFiles); never null after loading.
    std::shared_ptr<const ConfigFiles> files = std::make_shared<const ConfigFiles>();
    /// `include:` patterns as written (relative ones resolved against the file's folder).
    std::vector<std::string> include;
    DaemonConfig daemon;
    std::vector<ProgramConfig> programs;  // in file order: the main file's, then each include's
    /// Position of each value by dotted path ("programs.web.user", "programs.web.command[0]"),
    /// for checks made after loading (users, executables, paths) to point into the file.
    std::map<std::string, Position> positions;

    /// A diagnostic "path: message" at the position of `path`, or of its nearest enclosing
    /// value that has one ("programs.web" for a missing "programs.web.command").
    Diagnostic diagnostic(const std::string& path, const std::string& message) const;
};

/// Where `clusterd run` and the CLI look for the config when -c is not given.
inline constexpr const char* kDefaultConfigPath = "/etc/clusterd/clusterd.yaml";

/// A program's `cores` as written: "auto" or the number (what a runtime scale overrode).
inline std::string cores_text(const ProgramConfig& p) {
    return p.cores_auto ? "auto" : std::to_string(p.workers);
}

/// Variables clusterd sets for every worker (LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*, CLUSTERD_*):
/// not allowed in `env`, never taken from the master's environment.
bool is_reserved_env(std::string_view name);

/// The text of a config file: a regular file only (a FIFO, a directory or a device is refused
/// without blocking) of at most limits::kMaxConfigBytes. Throws ConfigError.
std::string read_config_file(const std::string& path);

/// Parse and validate a config file (read_config_file + load_config_string). Throws
/// ConfigError. Pure: no globals, no logging, safe to call on any thread.
Config load_config_file(const std::string& path);

/// Parse and validate YAML text; `source` names it in diagnostics. Throws ConfigError.
/// Refuses more than limits::kMaxConfigBytes, a NUL byte, invalid UTF-8 and nesting deeper
/// than limits::kMaxConfigDepth. `files`: where included and env files are read from (an
/// upgrade's snapshot, see ConfigFiles); null = from the disk. Pure, like load_config_file.
Config load_config_string(const std::string& text, const std::string& source,
                          const ConfigFiles* files = nullptr);

/// The embedded default: the built-in worker on 127.0.0.1:8080 with `cores: auto`.
Config default_config();

/// Text of the embedded default config (valid YAML for load_config_string).
const char* default_config_text();

}  // namespace clusterd

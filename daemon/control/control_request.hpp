// The control socket's request decoder: one line of bytes in, a typed request or an error
// out. The wire format (see control_server.hpp) is one JSON object per line:
//
//   {"cmd":"version"}
//   {"cmd":"status"}                         {"cmd":"status","program":"web"}
//   {"cmd":"reload"}
//   {"cmd":"restart","program":"web"}        {"cmd":"restart","program":"web","rolling":true}
//   {"cmd":"scale","program":"web","workers":4}        (1..4096)
//   {"cmd":"stop","program":"web"}           {"cmd":"start","program":"web"}
//   {"cmd":"signal","program":"web","signal":"HUP"}
//   {"cmd":"log-level","level":"debug"}      (trace, debug, info, warn, error)
//   {"cmd":"events","lines":20,"follow":true}          (optional "program"; lines 0..10000)
//   {"cmd":"logs","program":"web","lines":50,"follow":true}   (lines 0..10000)
//
// `events` and `logs` with "follow" never send a final reply: after the lines asked for, one
// {"following":"..."} line, then a line per event or output line until the client leaves.
//
// Every field is checked here, before the supervisor sees the request: a wrong type, a
// missing or unknown key, or a value out of range is an error that names the key and what
// was expected; malformed JSON names the byte where it broke. Pure (no Asio, no I/O), so
// that a fuzzer can call it.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace clusterd {

/// The commands of the control socket.
enum class ControlCommand {
    version,
    status,
    reload,
    restart,
    scale,
    stop,
    start,
    signal,
    log_level,
    upgrade,
    events,
    logs
};

/// "log-level" for ControlCommand::log_level; the wire name of each command.
std::string_view to_string(ControlCommand c);
/// The command of that wire name, if any.
std::optional<ControlCommand> control_command(std::string_view name);

/// One decoded request; fields a command does not take stay empty.
struct ControlRequest {
    ControlCommand cmd = ControlCommand::version;
    /// status (optional), restart, scale, stop, start, signal.
    std::string program;
    /// restart: one slot at a time.
    bool rolling = false;
    /// scale: 1..4096.
    int workers = 0;
    /// signal: the name as sent ("HUP", "SIGUSR1", "15"); the supervisor resolves it.
    std::string signal;
    /// log-level.
    std::string level;
    /// upgrade: the binary to exec ("" = the one the daemon was started from).
    std::string binary;
    /// events, logs: how many of the latest to send first (0..kMaxFeedLines).
    int lines = 0;
    /// events, logs: then keep sending new ones until the client leaves.
    bool follow = false;

    /// The request on the wire, as the CLI sends it (only the fields its command takes).
    nlohmann::json to_json() const;
};

/// Why a line is not a request: {"ok":false,"message":message} goes back to the client.
struct ControlDecodeError {
    std::string message;
};

/// The most `lines` an `events` or `logs` request may ask for.
inline constexpr int kMaxFeedLines = 10000;

/// Longest request line, without its newline.
inline constexpr std::size_t kMaxControlRequestBytes = 64 * 1024;

/// Decodes one request line (without its trailing newline; a trailing '\r' is allowed).
std::variant<ControlRequest, ControlDecodeError> decode_control_request(std::string_view line);

}  // namespace clusterd

#include "daemon/control/control_request.hpp"

#include <array>
#include <cstdint>

#include "common/limits.hpp"

namespace clusterd {

using nlohmann::json;

namespace {

struct Spec {
    ControlCommand cmd;
    std::string_view name;
    bool needs_program;
    bool takes_program;
    std::string_view option;  // the command's other keys, if any
    std::string_view option2;
};

constexpr std::array<Spec, 12> kCommands = {{
    {ControlCommand::version, "version", false, false, "", ""},
    {ControlCommand::status, "status", false, true, "", ""},
    {ControlCommand::reload, "reload", false, false, "", ""},
    {ControlCommand::restart, "restart", true, true, "rolling", ""},
    {ControlCommand::scale, "scale", true, true, "workers", ""},
    {ControlCommand::stop, "stop", true, true, "", ""},
    {ControlCommand::start, "start", true, true, "", ""},
    {ControlCommand::signal, "signal", true, true, "signal", ""},
    {ControlCommand::log_level, "log-level", false, false, "level", ""},
    {ControlCommand::upgrade, "upgrade", false, false, "binary", ""},
    {ControlCommand::events, "events", false, true, "lines", "follow"},
    {ControlCommand::logs, "logs", false, true, "lines", "follow"},
}};

std::string known_commands() {
    std::string out;
    for (const Spec& s : kCommands) out += (out.empty() ? "" : ", ") + std::string(s.name);
    return out;
}

// Control characters and non-UTF-8 bytes cannot travel back in an error message unescaped:
// quote a client's text for a message, shortened.
std::string quote_text(std::string_view text) {
    constexpr std::size_t kShown = 64;
    std::string shown(text.substr(0, kShown));
    std::string out = json(shown).dump(-1, ' ', true, json::error_handler_t::replace);
    if (text.size() > kShown) out += "...";
    return out;
}

// "an array", "a string": the type of a value, for a message.
std::string a_type(const json& value) {
    std::string name = value.type_name();
    return (name == "array" || name == "object" ? "an " : "a ") + name;
}

// A scalar as the client wrote it; a structure by its type (never dumped: it may be deep).
std::string describe(const json& value) {
    if (value.is_structured()) return a_type(value);
    return quote_text(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

ControlDecodeError error(std::string message) {
    return ControlDecodeError{std::move(message)};
}

}  // namespace

std::string_view to_string(ControlCommand c) {
    for (const Spec& s : kCommands)
        if (s.cmd == c) return s.name;
    return "?";
}

std::optional<ControlCommand> control_command(std::string_view name) {
    for (const Spec& s : kCommands)
        if (s.name == name) return s.cmd;
    return std::nullopt;
}

json ControlRequest::to_json() const {
    json j = {{"cmd", std::string(clusterd::to_string(cmd))}};
    if (!program.empty()) j["program"] = program;
    if (cmd == ControlCommand::restart) j["rolling"] = rolling;
    if (cmd == ControlCommand::scale) j["workers"] = workers;
    if (cmd == ControlCommand::signal) j["signal"] = signal;
    if (cmd == ControlCommand::log_level) j["level"] = level;
    if (cmd == ControlCommand::upgrade && !binary.empty()) j["binary"] = binary;
    if (cmd == ControlCommand::events || cmd == ControlCommand::logs) {
        j["lines"] = lines;
        j["follow"] = follow;
    }
    return j;
}

std::variant<ControlRequest, ControlDecodeError> decode_control_request(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > kMaxControlRequestBytes)
        return error("request of " + std::to_string(line.size()) + " bytes: at most " +
                     std::to_string(kMaxControlRequestBytes) + " per line");
    json j;
    try {
        j = json::parse(line);
    } catch (const json::parse_error& e) {
        return error("request is not JSON (byte " + std::to_string(e.byte) +
                     "): expected one JSON object per line");
    } catch (const json::exception&) {
        // A number beyond a double (1E999) is out_of_range, not a parse error.
        return error("request holds a number out of range: expected one JSON object per line");
    }
    if (!j.is_object())
        return error("request is " + a_type(j) + ": expected one JSON object per line");
    if (!j.contains("cmd"))
        return error("request has no \"cmd\" (known: " + known_commands() + ")");
    if (!j["cmd"].is_string())
        return error("\"cmd\" is " + a_type(j["cmd"]) + ": expected a string");
    const std::string& name = j["cmd"].get_ref<const std::string&>();
    const Spec* spec = nullptr;
    for (const Spec& s : kCommands)
        if (s.name == name) spec = &s;
    if (spec == nullptr)
        return error("unknown command " + quote_text(name) + " (known: " + known_commands() + ")");

    ControlRequest r;
    r.cmd = spec->cmd;
    auto allowed = [&](const std::string& key) {
        return key == "cmd" || (key == "program" && spec->takes_program) ||
               (!spec->option.empty() && key == spec->option) ||
               (!spec->option2.empty() && key == spec->option2);
    };
    for (const auto& [key, value] : j.items())
        if (!allowed(key))
            return error(std::string(spec->name) + ": unknown key " + quote_text(key));

    auto text = [&](const char* key, std::string& out) -> std::optional<ControlDecodeError> {
        if (!j.contains(key)) return std::nullopt;
        if (!j[key].is_string())
            return error(std::string(spec->name) + ": \"" + key + "\" is " + a_type(j[key]) +
                         ": expected a string");
        out = j[key].get<std::string>();
        return std::nullopt;
    };
    if (auto e = text("program", r.program)) return *e;
    if (spec->needs_program && r.program.empty())
        return error(std::string(spec->name) + ": \"program\" is required");
    switch (r.cmd) {
        case ControlCommand::restart:
            if (j.contains("rolling")) {
                if (!j["rolling"].is_boolean())
                    return error("restart: \"rolling\" is " + a_type(j["rolling"]) +
                                 ": expected true or false");
                r.rolling = j["rolling"].get<bool>();
            }
            break;
        case ControlCommand::scale: {
            // Never a copy of the client's value: copying a deeply nested array recurses
            // once per level (a 64 KiB line nests 32,000 deep) and could end the master.
            static const json absent;
            const json& w = j.contains("workers") ? j["workers"] : absent;
            if (!w.is_number_integer() || w.get<std::int64_t>() < 1 ||
                w.get<std::int64_t>() > limits::kMaxWorkers ||
                (w.is_number_unsigned() && w.get<std::uint64_t>() > limits::kMaxWorkers))
                return error("scale: \"workers\" must be an integer from 1 to " +
                             std::to_string(limits::kMaxWorkers) +
                             (w.is_null() ? std::string() : ", not " + describe(w)));
            r.workers = w.get<int>();
            break;
        }
        case ControlCommand::signal:
            if (auto e = text("signal", r.signal)) return *e;
            if (r.signal.empty()) return error("signal: \"signal\" is required, e.g. HUP or USR1");
            break;
        case ControlCommand::log_level:
            if (auto e = text("level", r.level)) return *e;
            if (r.level != "trace" && r.level != "debug" && r.level != "info" &&
                r.level != "warn" && r.level != "error")
                return error("log-level: \"level\" must be one of trace, debug, info, warn, error" +
                             (r.level.empty() ? std::string() : ", not " + quote_text(r.level)));
            break;
        case ControlCommand::upgrade:
            if (auto e = text("binary", r.binary)) return *e;
            if (!r.binary.empty() && !r.binary.starts_with("/"))
                return error("upgrade: \"binary\" must be an absolute path, not " +
                             quote_text(r.binary));
            if (r.binary.size() > 4096)
                return error("upgrade: \"binary\" is longer than 4096 bytes");
            break;
        case ControlCommand::events:
        case ControlCommand::logs: {
            static const json absent;
            const json& n = j.contains("lines") ? j["lines"] : absent;
            if (!n.is_null()) {
                if (!n.is_number_integer() || n.get<std::int64_t>() < 0 ||
                    n.get<std::int64_t>() > kMaxFeedLines ||
                    (n.is_number_unsigned() && n.get<std::uint64_t>() > kMaxFeedLines))
                    return error(std::string(spec->name) +
                                 ": \"lines\" must be an integer from 0 to " +
                                 std::to_string(kMaxFeedLines) + ", not " + describe(n));
                r.lines = n.get<int>();
            }
            if (j.contains("follow")) {
                if (!j["follow"].is_boolean())
                    return error(std::string(spec->name) + ": \"follow\" is " +
                                 a_type(j["follow"]) + ": expected true or false");
                r.follow = j["follow"].get<bool>();
            }
            break;
        }
        default:
            break;
    }
    return r;
}

}  // namespace clusterd

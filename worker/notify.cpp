#include "worker/notify.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "common/notify.hpp"

namespace clusterd::worker {

namespace {

void append_fields(std::string& out, const std::vector<NotifyField>& fields) {
    for (const auto& [name, value] : fields) {
        out += "X_CLUSTERD_";
        out += name;
        out += '=';
        out += std::to_string(value);
        out += '\n';
    }
}

void append_status(std::string& out, std::string_view text) {
    out += "STATUS=";
    for (char c : text) out += c == '\n' ? ' ' : c;
    out += '\n';
}

template <class Int>
bool parse_int(std::string_view text, Int& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

}  // namespace

int notify_ready(std::string_view status) {
    std::string msg = "READY=1\n";
    if (!status.empty()) append_status(msg, status);
    return notify(msg, notify_state_wait);
}

int notify_status(std::string_view text) {
    std::string msg;
    append_status(msg, text);
    return notify(msg);
}

int notify_stopping() {
    return notify("STOPPING=1\n", notify_state_wait);
}

std::string format_watchdog(const std::vector<NotifyField>& fields) {
    std::string msg = "WATCHDOG=1\n";
    append_fields(msg, fields);
    return msg;
}

int notify_watchdog(const std::vector<NotifyField>& fields) {
    return notify(format_watchdog(fields));
}

int notify_fields(const std::vector<NotifyField>& fields) {
    if (fields.empty()) return 0;
    std::string msg;
    append_fields(msg, fields);
    return notify(msg);
}

std::optional<std::chrono::microseconds> parse_watchdog_env(const WatchdogEnv& env, pid_t self) {
    if (env.usec == nullptr) return std::nullopt;
    std::int64_t usec = 0;
    if (!parse_int(env.usec, usec) || usec <= 0) return std::nullopt;
    if (env.pid != nullptr) {
        pid_t pid = 0;
        if (!parse_int(env.pid, pid) || pid != self) return std::nullopt;
    }
    return std::chrono::microseconds(usec);
}

std::optional<std::chrono::microseconds> watchdog_timeout() {
    return parse_watchdog_env({std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID")},
                              ::getpid());
}

}  // namespace clusterd::worker

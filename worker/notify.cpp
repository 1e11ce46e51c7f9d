#include "worker/notify.hpp"

#include <unistd.h>

#include <cstdlib>

#include "common/notify.hpp"
#include "worker/sdk.hpp"

namespace clusterd::worker {

namespace {

// The message formats live in the SDK (worker/sdk.hpp), which third-party workers use too.
void append_fields(std::string& out, const std::vector<NotifyField>& fields) {
    out += sdk::format_watchdog(fields).substr(std::string_view("WATCHDOG=1\n").size());
}

void append_status(std::string& out, std::string_view text) {
    out += sdk::format_status(text);
}

}  // namespace

int notify_ready(std::string_view status, std::chrono::microseconds heartbeat) {
    std::string msg = "READY=1\n";
    if (!status.empty()) append_status(msg, status);
    if (heartbeat.count() > 0)
        append_fields(msg, {{"HEARTBEAT_USEC", static_cast<std::int64_t>(heartbeat.count())}});
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
    return sdk::parse_watchdog(env.usec, env.pid, self);
}

std::optional<std::chrono::microseconds> watchdog_timeout() {
    return parse_watchdog_env({std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID")},
                              ::getpid());
}

}  // namespace clusterd::worker

#include "daemon/supervisor/feed.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace clusterd {

std::int64_t wall_time_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string format_wall_time(std::int64_t ms) {
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[40];
    std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
    return buf;
}

EventEntry::EventEntry(nlohmann::json v)
    : value(std::move(v)),
      size(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size() + 16) {}

nlohmann::json EventEntry::to_json(std::uint64_t seq, const std::string&) const {
    nlohmann::json j = value;
    j["seq"] = seq;
    return j;
}

nlohmann::json LineEntry::to_json(std::uint64_t seq, const std::string& program) const {
    return {{"seq", seq},
            {"time", format_wall_time(time_ms)},
            {"program", program},
            {"slot", slot},
            {"line", text}};
}

}  // namespace clusterd

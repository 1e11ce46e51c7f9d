#include "worker/logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

namespace clusterd::worker {

std::string log_prefix(const char* program, const char* worker_id, std::string_view fallback) {
    if (worker_id == nullptr || *worker_id == '\0') return '[' + std::string(fallback) + ']';
    std::string name = program != nullptr && *program != '\0' ? program : "worker";
    return '[' + name + ':' + worker_id + ']';
}

void init_logging(std::string_view fallback) {
    const char* id = std::getenv("CLUSTERD_WORKER_ID");
    std::string prefix;
    for (char c : log_prefix(std::getenv("CLUSTERD_PROGRAM"), id, fallback)) {
        if (c == '%') prefix += '%';  // literal in an spdlog pattern
        prefix += c;
    }
    auto logger = spdlog::stderr_color_st("worker");
    // Under clusterd the master (or journald) adds the time; by hand, it is useful.
    bool supervised = id != nullptr && *id != '\0';
    logger->set_pattern((supervised ? "" : "%Y-%m-%d %H:%M:%S.%e ") + prefix + " %^%l%$: %v");
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(std::move(logger));
}

}  // namespace clusterd::worker

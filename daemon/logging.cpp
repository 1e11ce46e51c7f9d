#include "daemon/logging.hpp"

#include <unistd.h>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <cstdlib>
#include <stdexcept>

namespace clusterd {

bool valid_log_level(const std::string& level) {
    return level == "trace" || level == "debug" || level == "info" || level == "warn" ||
           level == "error";
}

void setup_logging(const std::string& level, const std::string& file) {
    if (!valid_log_level(level)) throw std::invalid_argument("unknown log level \"" + level + "\"");
    std::shared_ptr<spdlog::logger> logger;
    if (file.empty()) {
        logger = ::isatty(STDERR_FILENO)
                     ? spdlog::stderr_color_st("clusterd")
                     : std::make_shared<spdlog::logger>(
                           "clusterd", std::make_shared<spdlog::sinks::stderr_sink_st>());
    } else {
        logger = spdlog::basic_logger_st("clusterd", file);
    }
    // journald stamps each line itself; elsewhere the timestamp is ours.
    if (std::getenv("JOURNAL_STREAM") != nullptr && file.empty()) {
        logger->set_pattern("%^%l%$ %v");
    } else {
        logger->set_pattern("%Y-%m-%d %H:%M:%S.%f %^%l%$ %v");
    }
    logger->set_level(spdlog::level::from_str(level));
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
}

}  // namespace clusterd

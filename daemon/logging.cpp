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

namespace {

std::shared_ptr<spdlog::logger> make_logger(const std::string& file) {
    std::shared_ptr<spdlog::logger> logger;
    if (file.empty()) {
        logger = ::isatty(STDERR_FILENO)
                     ? std::make_shared<spdlog::logger>(
                           "clusterd", std::make_shared<spdlog::sinks::stderr_color_sink_st>())
                     : std::make_shared<spdlog::logger>(
                           "clusterd", std::make_shared<spdlog::sinks::stderr_sink_st>());
    } else {
        // Not registered by name: USR1 and a reload make a new one over the same name.
        logger = std::make_shared<spdlog::logger>(
            "clusterd", std::make_shared<spdlog::sinks::basic_file_sink_st>(file));
    }
    // journald stamps each line itself; elsewhere the timestamp is ours.
    if (std::getenv("JOURNAL_STREAM") != nullptr && file.empty()) {
        logger->set_pattern("%^%l%$ %v");
    } else {
        logger->set_pattern("%Y-%m-%d %H:%M:%S.%f %^%l%$ %v");
    }
    logger->flush_on(spdlog::level::trace);
    return logger;
}

}  // namespace

void setup_logging(const std::string& level, const std::string& file) {
    if (!valid_log_level(level)) throw std::invalid_argument("unknown log level \"" + level + "\"");
    auto logger = make_logger(file);
    logger->set_level(spdlog::level::from_str(level));
    spdlog::set_default_logger(logger);
}

void reopen_log(const std::string& file) {
    auto level = spdlog::default_logger()->level();
    auto logger = make_logger(file);
    logger->set_level(level);
    spdlog::set_default_logger(logger);
}

}  // namespace clusterd

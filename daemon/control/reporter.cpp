#include "daemon/control/reporter.hpp"

#include <spdlog/spdlog.h>

namespace clusterd {

nlohmann::json reply(bool ok, const std::string& message) {
    return {{"ok", ok}, {"message", message}};
}

namespace {

class LogReporter : public Reporter {
  public:
    explicit LogReporter(std::string what) : what_(std::move(what)) {}
    void progress(const std::string& line) override { spdlog::info("{}: {}", what_, line); }
    void finish(const nlohmann::json& r) override {
        std::string message = r.value("message", "");
        if (r.value("ok", false)) {
            spdlog::info("{}: done{}{}", what_, message.empty() ? "" : ": ", message);
        } else {
            spdlog::error("{}: failed: {}", what_, message);
        }
    }

  private:
    std::string what_;
};

}  // namespace

std::shared_ptr<Reporter> log_reporter(std::string what) {
    return std::make_shared<LogReporter>(std::move(what));
}

}  // namespace clusterd

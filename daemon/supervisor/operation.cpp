#include "daemon/supervisor/operation.hpp"

#include <spdlog/spdlog.h>

namespace clusterd {

Part Operation::part(std::string unfinished) {
    ++open_;
    return Part(shared_from_this(), std::move(unfinished));
}

void Operation::end_part(bool ok, const std::string& line) {
    if (!line.empty()) {
        results_.push_back(line);
        ok ? spdlog::info("{}", line) : spdlog::error("{}", line);
    }
    if (!ok) ok_ = false;
    if (--open_ > 0) return;
    if (on_end) on_end(ok_);
    std::string text;
    for (const auto& l : results_) text += (text.empty() ? "" : "\n") + l;
    if (reporter_) reporter_->finish(reply(ok_, text));
}

}  // namespace clusterd

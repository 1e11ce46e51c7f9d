#include "daemon/supervisor/operation.hpp"

#include <spdlog/spdlog.h>

namespace clusterd {

std::string join_lines(const std::vector<std::string>& lines, const char* sep) {
    std::string s;
    for (const auto& l : lines)
        if (!l.empty()) s += (s.empty() ? "" : sep) + l;
    return s;
}

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
    if (reporter_) reporter_->finish(reply(ok_, join_lines(results_, "\n")));
}

}  // namespace clusterd

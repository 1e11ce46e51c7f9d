#include "common/placeholders.hpp"

namespace clusterd {

namespace {

constexpr std::string_view kOpen = "{listen.";
constexpr std::string_view kFd = ".fd}";

std::string listener_names(const std::vector<ListenConfig>& listen) {
    if (listen.empty()) return "the program has no listen entries";
    std::string names = "listeners: ";
    for (std::size_t i = 0; i < listen.size(); ++i) names += (i ? ", " : "") + listen[i].name;
    return names;
}

}  // namespace

std::optional<std::string> expand_placeholders(std::string_view arg,
                                               const std::vector<ListenConfig>& listen,
                                               std::string& problem) {
    std::string out;
    for (;;) {
        auto start = arg.find(kOpen);
        if (start == std::string_view::npos) break;
        out += arg.substr(0, start);
        arg.remove_prefix(start);
        auto close = arg.find('}');
        std::string_view placeholder =
            arg.substr(0, close == std::string_view::npos ? arg.size() : close + 1);
        if (close == std::string_view::npos || !placeholder.ends_with(kFd) ||
            placeholder.size() <= kOpen.size() + kFd.size() - 1) {
            problem = "malformed placeholder \"" + std::string(placeholder) +
                      "\": expected {listen.NAME.fd}";
            return std::nullopt;
        }
        std::string_view name =
            placeholder.substr(kOpen.size(), placeholder.size() - kOpen.size() - kFd.size());
        std::size_t index = 0;
        while (index < listen.size() && listen[index].name != name) ++index;
        if (index == listen.size()) {
            problem = "unknown listener \"" + std::string(name) + "\" in " +
                      std::string(placeholder) + " (" + listener_names(listen) + ")";
            return std::nullopt;
        }
        out += std::to_string(3 + index);
        arg.remove_prefix(placeholder.size());
    }
    out += arg;
    return out;
}

}  // namespace clusterd

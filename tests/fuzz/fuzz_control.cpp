// Fuzz target: one control request line, as any client allowed on the control socket sends it
// (daemon/control/control_request.cpp).
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include "daemon/control/control_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view line(reinterpret_cast<const char*>(data), size);
    auto decoded = clusterd::decode_control_request(line);
    if (auto* r = std::get_if<clusterd::ControlRequest>(&decoded)) {
        // A request that decodes is within its documented ranges and re-encodes to a line
        // that decodes to the same request.
        if (r->cmd == clusterd::ControlCommand::scale && (r->workers < 1 || r->workers > 4096))
            __builtin_trap();
        auto again = clusterd::decode_control_request(r->to_json().dump());
        auto* r2 = std::get_if<clusterd::ControlRequest>(&again);
        if (r2 == nullptr || r2->cmd != r->cmd || r2->program != r->program ||
            r2->workers != r->workers || r2->rolling != r->rolling || r2->signal != r->signal ||
            r2->level != r->level)
            __builtin_trap();
    } else {
        const auto& e = std::get<clusterd::ControlDecodeError>(decoded);
        // The message goes back on one line: no raw newline, and bounded whatever the input.
        if (e.message.empty() || e.message.find('\n') != std::string::npos ||
            e.message.size() > 1024)
            __builtin_trap();
    }
    return 0;
}

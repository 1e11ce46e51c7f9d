// Fuzz target: one notify datagram, as any process that can reach a notify socket sends it,
// merged into a worker's kept fields the way the master does.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/notify.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view datagram(reinterpret_cast<const char*>(data), size);
    clusterd::NotifyMessage m = clusterd::parse_notify(datagram);
    // Every kept field came from the datagram and is within the caps.
    if (m.fields.size() > clusterd::kNotifyMaxFields) __builtin_trap();
    for (const auto& [key, value] : m.fields) {
        if (key.size() + value.size() > size) __builtin_trap();
        if (key.empty() || key.size() > clusterd::kNotifyMaxKey) __builtin_trap();
        if (value.size() > clusterd::kNotifyMaxValue) __builtin_trap();
    }
    if (m.status && (m.status->size() > size || m.status->size() > clusterd::kNotifyMaxStatus))
        __builtin_trap();
    if (m.status_truncated && !m.status) __builtin_trap();
    // A worker that already keeps the cap's worth of names gains none from this datagram.
    static std::map<std::string, std::string> kept;
    std::size_t before = kept.size();
    std::size_t dropped = clusterd::merge_notify_fields(kept, m.fields);
    if (kept.size() > clusterd::kNotifyMaxFields) __builtin_trap();
    if (kept.size() - before + dropped > m.fields.size()) __builtin_trap();
    return 0;
}

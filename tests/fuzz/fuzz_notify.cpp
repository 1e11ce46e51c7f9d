// Fuzz target: one notify datagram, as any process that can reach a notify socket sends it.
#include "common/notify.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view datagram(reinterpret_cast<const char*>(data), size);
    clusterd::NotifyMessage m = clusterd::parse_notify(datagram);
    // Every kept field came from the datagram: its key and value fit in it.
    for (const auto& [key, value] : m.fields) {
        if (key.size() + value.size() > size) __builtin_trap();
    }
    if (m.status && m.status->size() > size) __builtin_trap();
    return 0;
}

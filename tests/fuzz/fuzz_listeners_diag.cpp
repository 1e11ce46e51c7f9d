// Fuzz target: one buffer of a sock_diag reply (daemon/net/listeners_diag.cpp), as the master
// parses it when it looks for foreign sockets in a reuseport group. The first byte picks the
// family of the address looked for (127.0.0.1:8080 or [::1]:8080); the rest is the reply.
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/net/listeners_diag.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const bool v6 = (data[0] & 1) != 0;
    in_addr a4{};
    a4.s_addr = htonl(INADDR_LOOPBACK);
    in6_addr a6 = in6addr_loopback;
    // The reply arrives in a netlink-aligned buffer.
    std::vector<std::uint32_t> buffer((size - 1 + 3) / 4 + 1);
    std::memcpy(buffer.data(), data + 1, size - 1);
    std::vector<std::uint64_t> inodes;
    std::string error;
    auto step =
        clusterd::parse_diag_reply(buffer.data(), size - 1, v6 ? AF_INET6 : AF_INET,
                                   v6 ? static_cast<const void*>(&a6) : &a4, 8080, inodes, error);
    if (inodes.size() > clusterd::kMaxDiagSockets) __builtin_trap();
    if (inodes.size() * 16 > size) __builtin_trap();  // each came from a message in the buffer
    if (step == clusterd::DiagStep::done && !std::is_sorted(inodes.begin(), inodes.end()))
        __builtin_trap();
    if (step == clusterd::DiagStep::failed && error.empty()) __builtin_trap();
    return 0;
}

// How full the accept queues are: the figure that says a program needs more workers (or a
// bigger backlog) before clients see timeouts.
//
// For a TCP socket in the LISTEN state, Linux reports in TCP_INFO the current accept queue
// length as tcpi_unacked and the backlog it was given (capped by net.core.somaxconn) as
// tcpi_sacked. Connections that found the queue full are counted host-wide only, in
// /proc/net/netstat (TcpExt: ListenOverflows, ListenDrops; drops include the overflows).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace clusterd {

/// One listening socket's accept queue.
struct ListenQueue {
    /// Connections completed by the kernel, waiting for accept().
    std::uint32_t queued = 0;
    /// The most the queue holds.
    std::uint32_t backlog = 0;
};

/// The accept queue of `fd`; nullopt unless it is a TCP socket in the LISTEN state (for
/// example a unix socket, or getsockopt failed).
std::optional<ListenQueue> listen_queue(int fd);

/// Host-wide counters of connections lost at listening sockets.
struct ListenDrops {
    /// TcpExt ListenOverflows: the accept queue was full.
    std::uint64_t overflows = 0;
    /// TcpExt ListenDrops: dropped for any reason, overflows included.
    std::uint64_t drops = 0;
};

/// Parses the text of /proc/net/netstat (a header line of names and a line of values per
/// protocol); nullopt when the TcpExt lines or either field are missing.
std::optional<ListenDrops> parse_listen_drops(std::string_view netstat);

/// Reads `path` (default /proc/net/netstat) and parses it; nullopt when unreadable.
std::optional<ListenDrops> read_listen_drops(const std::string& path = "/proc/net/netstat");

}  // namespace clusterd

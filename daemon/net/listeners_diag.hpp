// Who else listens on our addresses.
//
// A SO_REUSEPORT group can hold sockets that are not the master's: a killed master's
// workers may have left detached descendants (their own session, inherited fds kept open)
// that still hold the old listening sockets, and a new master's sockets then join the same
// group after them. The kernel spreads connections over all of them, and what lands on a
// socket nobody accepts from is lost to us.
//
// The listening TCP sockets of an address come from a sock_diag dump (NETLINK_SOCK_DIAG,
// inet_diag_req_v2 for TCP LISTEN sockets of the port, filtered on the address here); a
// socket is ours when its inode is the inode of one of our fds (fstat). The processes that
// hold a foreign socket are found by its inode in /proc/*/fd (socket:[inode]).
//
// Both walks are bounded (kMaxDiagSockets, kMaxProcFds) because they run on the master's
// loop; a dump of a port's listeners on loopback takes well under a millisecond.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config.hpp"

namespace clusterd {

/// The most listening sockets of one address a check looks at; more are not counted.
inline constexpr std::size_t kMaxDiagSockets = 65536;
/// The most /proc/PID/fd entries one search for holders reads.
inline constexpr std::size_t kMaxProcFds = 200000;

/// The inode of a socket fd (0 if fstat fails).
std::uint64_t socket_inode(int fd);

/// Inodes of the TCP sockets in the LISTEN state bound to exactly `listen`'s host and port
/// (sorted). nullopt, with `error` set, when the dump fails.
std::optional<std::vector<std::uint64_t>> listening_inodes(const ListenConfig& listen,
                                                           std::string& error);

/// What one buffer of a sock_diag reply said.
enum class DiagStep { more, done, failed };

/// Parses one buffer (netlink messages, 4-byte aligned) of the reply to a dump of TCP LISTEN
/// sockets: appends to `inodes` those of the sockets of `family` bound to `address` (4 or
/// 16 bytes, network order) and `port`, at most kMaxDiagSockets, and sorts them once the
/// dump is done. `error` says why when it failed.
DiagStep parse_diag_reply(const void* data, std::size_t len, int family, const void* address,
                          std::uint16_t port, std::vector<std::uint64_t>& inodes,
                          std::string& error);

/// The processes that hold each of `inodes` (sorted).
struct SocketHolders {
    std::map<std::uint64_t, std::vector<pid_t>> pids;
    /// kMaxProcFds was reached before every process was looked at.
    bool truncated = false;
};

/// Scans `proc` (/proc)/PID/fd for socket:[inode] links, reading at most `max_fds` entries.
SocketHolders socket_holders(const std::vector<std::uint64_t>& inodes,
                             std::size_t max_fds = kMaxProcFds, const std::string& proc = "/proc");

}  // namespace clusterd

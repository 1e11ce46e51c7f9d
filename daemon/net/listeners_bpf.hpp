// Steering a SO_REUSEPORT group by socket identity.
//
// A classic BPF program (SO_ATTACH_REUSEPORT_CBPF) picks a socket by its index in the
// kernel's group array, which is only right while every socket of the group is ours. When
// some are not (sockets a killed master's detached descendants still hold), the group
// starts with them, and an index counted from 0 lands on them.
//
// An eBPF program of type BPF_PROG_TYPE_SK_REUSEPORT picks a socket out of a
// BPF_MAP_TYPE_REUSEPORT_SOCKARRAY map instead: the map holds our sockets, each under a
// key that the group model hands out (the ReuseGroup in listeners.hpp) and keeps while the
// socket lives, so steering cannot reach a socket we did not put there. The program:
//
//     key = route[hash % n];  bpf_sk_select_reuseport(ctx, sockets, &key, 0);  return SK_PASS
//
// where `route` is a small array map made for each steering (n = number of target
// sockets). A lookup or selection that fails (a target socket closed since) returns
// SK_PASS without a choice: the kernel then picks by hash over the whole group.
//
// Everything goes through raw bpf(2) calls (no libbpf). Loading needs CAP_BPF (or
// CAP_SYS_ADMIN); where that or the kernel support is missing, identity_steering() says
// so and the caller falls back to the classic program.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/fd.hpp"

namespace clusterd {

/// The most sockets of one address that identity steering tracks (keys of the sockarray).
inline constexpr std::uint32_t kMaxSteeredSockets = 4096;

/// "" when this process can steer by identity (checked once: a sockarray map and an
/// SK_REUSEPORT program can be created), else why not. CLUSTERD_STEERING=classic in the
/// environment turns it off.
std::string identity_steering_unavailable();
/// Steer by index only from now on (`on`), or by identity again where possible: for tests.
void force_classic_steering(bool on);

/// A new, empty sockarray map with kMaxSteeredSockets keys. Throws std::system_error.
UniqueFd make_sockarray();

/// Puts `fd` (a listening SO_REUSEPORT TCP socket) under `key` of `sockarray`, unless it
/// is there already. Returns "" or what failed.
std::string place_socket(int sockarray, std::uint32_t key, int fd);

/// Attaches to the group of `attach_fd` a program that spreads new connections by hash over
/// the sockets under `keys` of `sockarray`. Returns "" or what failed.
std::string attach_identity_steering(int sockarray, const std::vector<std::uint32_t>& keys,
                                     int attach_fd);

/// Removes any steering program from the group of `fd` (SO_DETACH_REUSEPORT_BPF); the kernel
/// then picks a socket by hash. Returns "" (also when none was attached) or what failed.
std::string detach_steering(int fd);

}  // namespace clusterd

// Listening sockets opened and owned by the master.
//
// With `reuseport: true` every worker slot has its own SO_REUSEPORT socket, so the kernel
// spreads connections over the slots and a slot's queue survives its worker's restart. With
// `reuseport: false` one socket is shared by every worker. Sockets are opened close-on-exec
// and left blocking (O_NONBLOCK belongs to the open file description the worker inherits;
// the worker chooses).
#pragma once

#include <string>
#include <vector>

#include "common/config.hpp"
#include "common/fd.hpp"

namespace clusterd {

/// socket + SO_REUSEADDR (+ SO_REUSEPORT) + bind + listen. Throws std::system_error whose
/// message names the call and the address: `bind(127.0.0.1:80) failed: Permission denied`.
UniqueFd open_listener(const ListenConfig& listen);

/// The sockets of one program: sockets[slot][entry] (one row shared by all slots when every
/// entry is `reuseport: false`; a shared entry appears in every row as the same fd).
class ProgramListeners {
  public:
    /// Open everything for `slots` worker slots. Throws std::system_error.
    ProgramListeners(const ProgramConfig& program, int slots);

    /// The fds slot `slot` receives, in `listen:` order.
    std::vector<int> fds_for(int slot) const;
    /// "name1:name2", for LISTEN_FDNAMES.
    const std::string& names() const { return names_; }

  private:
    std::vector<UniqueFd> shared_;                 // per entry, when not reuseport
    std::vector<std::vector<UniqueFd>> per_slot_;  // [slot][entry], when reuseport
    std::vector<bool> reuseport_;
    std::string names_;
};

}  // namespace clusterd

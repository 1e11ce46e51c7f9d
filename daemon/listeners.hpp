// Listening sockets opened and owned by the master.
//
// With `reuseport: true` every worker slot has its own SO_REUSEPORT socket, so the kernel
// spreads connections over the slots and a slot's queue survives its worker's restart. With
// `reuseport: false` one socket is shared by every worker. Sockets are opened close-on-exec
// and left blocking (O_NONBLOCK belongs to the open file description the worker inherits;
// the worker chooses).
//
// Each socket is reference counted: the program's table holds the current ones, and every
// worker holds the ones it was started with, so a socket stays open while any worker may
// still accept on it (an old generation during a rolling restart, a slot being scaled away)
// and closes with the last holder.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/config.hpp"
#include "common/fd.hpp"

namespace clusterd {

using SocketRef = std::shared_ptr<const UniqueFd>;

/// Our copy of the kernel's socket array of one SO_REUSEPORT group: a socket joins at the
/// end when it starts listening; when one closes, the last moves into its place. A BPF
/// program on the group picks a socket by this index.
struct ReuseGroup {
    std::vector<int> fds;
    int index_of(int fd) const;
};

/// socket + SO_REUSEADDR (+ SO_REUSEPORT) + bind + listen. Throws std::system_error whose
/// message names the call and the address: `bind(127.0.0.1:80) failed: Permission denied`.
UniqueFd open_listener(const ListenConfig& listen);

/// The sockets of one program's `listen:` list for a number of slots.
class SocketTable {
  public:
    SocketTable() = default;
    /// Open everything for `slots` slots, reusing the sockets of `previous` (if any) whose
    /// entry has the same address and mode, so their queues carry over. An entry whose
    /// name is in `activated` (sockets systemd passed) uses that socket, shared by every
    /// slot, instead of binding. Throws std::system_error (nothing of `previous` is
    /// changed then).
    SocketTable(const std::vector<ListenConfig>& entries, int slots,
                const SocketTable* previous = nullptr,
                const std::map<std::string, SocketRef>* activated = nullptr);

    /// Grow or shrink to `slots` slots (new reuseport sockets join the end of each group;
    /// sockets of removed slots are released here, and close with their last holder).
    void resize(int slots);
    /// Steer new connections of every reuseport group to the sockets of `slots` only (a
    /// classic BPF program on the group): leaving slots can then be drained, and a slot
    /// whose worker is down gets no new connections while it waits for its replacement.
    /// An empty list steers to every slot. Returns "" or a description of what failed.
    std::string steer(const std::vector<int>& slots) const;

    /// Close the door: shutdown(SHUT_RD) every socket of the table (systemd's excepted), so
    /// a client gets "connection refused" at once instead of waiting for a worker that is not
    /// coming. What was queued is reset. The sockets stay bound; open() listens again. A
    /// reuseport socket leaves its kernel group when shut and joins at the end when it listens
    /// again: steer anew after either.
    void shut();
    void open();
    bool is_shut() const { return shut_; }
    /// Every socket of the table is listening (a copy of a table made before shut() may
    /// hold shut sockets without knowing).
    bool all_listening() const;
    /// Reset what is queued on slot `slot`'s own sockets (shutdown, then listen again): for a
    /// slot whose worker will not be back soon. Its sockets join the end of their groups.
    /// Returns the number of connections that were queued.
    int refuse_queued(int slot);

    int slots() const { return slots_; }
    /// The sockets slot `slot` receives, in `listen:` order.
    std::vector<SocketRef> for_slot(int slot) const;
    /// The sockets only slot `slot` uses (its reuseport sockets).
    std::vector<SocketRef> own_sockets(int slot) const;
    /// "name1:name2", for LISTEN_FDNAMES.
    const std::string& names() const { return names_; }
    bool empty() const { return entries_.empty(); }
    /// The entries as served (an entry using a socket from systemd counts as shared).
    const std::vector<ListenConfig>& entries() const { return entries_; }

  private:
    /// Every socket this table may shut: (entry, socket), systemd's left out.
    std::vector<std::pair<std::size_t, SocketRef>> own() const;
    void leave(std::size_t entry, const SocketRef& sock);
    void rejoin(std::size_t entry, const SocketRef& sock);

    std::vector<ListenConfig> entries_;
    std::vector<SocketRef> shared_;                    // per entry; null for reuseport entries
    std::vector<std::vector<SocketRef>> per_slot_;     // [slot][entry]; null for shared entries
    std::vector<std::shared_ptr<ReuseGroup>> groups_;  // per entry; null for shared entries
    std::vector<bool> activated_;                      // per entry: the socket is systemd's
    int slots_ = 0;
    bool shut_ = false;
    std::string names_;
};

}  // namespace clusterd

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
//
// New connections are steered to the sockets of ready slots: by socket identity (an eBPF
// program, daemon/net/listeners_bpf.hpp) where this process may load one, else by the socket's
// index in the kernel's group (a classic BPF program). The index is only right while every
// socket of the group is ours; while check_foreign() has found listening sockets on the
// address that are not ours (daemon/net/listeners_diag.hpp), the classic program is detached
// instead and the kernel spreads connections over every socket of the group by hash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
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

    /// Identity steering: the sockarray map (made on first use) and the fd under each of its
    /// keys (-1 = free). A socket keeps its key until it closes.
    UniqueFd sockarray;
    std::vector<int> keys;
    /// The key of `fd`, given one if it has none; nullopt when kMaxSteeredSockets are taken.
    std::optional<std::uint32_t> key_of(int fd);
    void forget(int fd);

    /// Listening sockets on the address that are not ours (inodes, sorted), as of the last
    /// check_foreign(), and why that check failed ("" if it did not).
    std::vector<std::uint64_t> foreign;
    std::string check_error;
    /// How new connections are steered: "identity", "index", "none" (kernel hash), or "".
    std::string steering;
};

/// What SocketTable::check_foreign() found on one reuseport address.
struct ForeignCheck {
    std::string listener;                 // the entry's name
    std::string address;                  // host:port
    std::vector<std::uint64_t> inodes;    // sockets that are not ours
    std::vector<std::uint64_t> previous;  // as of the check before
    bool changed = false;                 // inodes or error differ from the check before
    std::string error;                    // the check failed (inodes are the previous ones)
    /// The last foreign socket left and steering is by index: our sockets were put back in a
    /// known order (see SocketTable::check_foreign), which reset this many queued connections.
    int regrouped_reset = -1;
};

/// A SocketTable as fd numbers, for handing it to a new image of the master (an upgrade):
/// entry `e` is shared (shared[e] >= 0) or one socket per slot (per_slot[slot][e]);
/// group_order[e] is our copy of the kernel's array of its reuseport group.
struct SocketTableFds {
    std::vector<int> shared;
    std::vector<std::vector<int>> per_slot;
    std::vector<std::vector<int>> group_order;
    /// Identity steering of entry `e`: its sockarray map (-1: none) and the socket under each
    /// key. A socket sits in one sockarray only, so the map itself is handed over.
    std::vector<int> sockarray;
    std::vector<std::vector<int>> keys;
    std::vector<bool> activated;
    bool shut = false;
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

    /// The table as fd numbers (every socket stays open and owned here).
    SocketTableFds fds() const;
    /// A table of sockets that are open already (an upgrade's new image takes over the old
    /// one's): `entries` as served, each fd owned from now on. Activated entries take the
    /// socket from `activated` by name.
    static SocketTable adopt(const std::vector<ListenConfig>& entries, const SocketTableFds& fds,
                             const std::map<std::string, SocketRef>& activated);

    /// Grow or shrink to `slots` slots (new reuseport sockets join the end of each group;
    /// sockets of removed slots are released here, and close with their last holder).
    void resize(int slots);
    /// Steer new connections of every reuseport group to the sockets of `slots` only (a
    /// classic BPF program on the group): leaving slots can then be drained, and a slot
    /// whose worker is down gets no new connections while it waits for its replacement.
    /// An empty list steers to every slot. Returns "" or a description of what failed.
    std::string steer(const std::vector<int>& slots) const;

    /// Looks, for every reuseport entry, for listening sockets on its address that are not
    /// ours, and remembers them for steer() (call steer() again when one `changed`).
    ///
    /// When the last foreign socket has gone and steering is by index, the kernel's order of
    /// our sockets is unknown (each socket that left moved the last one into its place):
    /// every socket of ours but the first leaves the group and joins again, in slot order,
    /// so that the order is known again. That resets what was queued on them at that moment.
    std::vector<ForeignCheck> check_foreign();
    /// Foreign sockets on entry `e`'s address as of the last check (0 for a shared entry).
    std::size_t foreign_sockets(std::size_t e) const;
    /// How entry `e`'s new connections are steered ("" for a shared entry).
    std::string steering(std::size_t e) const;

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
    /// See check_foreign(); returns the connections reset.
    int regroup(std::size_t entry);

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

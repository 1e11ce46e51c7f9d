#include "daemon/net/listeners.hpp"

#include "daemon/net/listen_queue.hpp"
#include "daemon/net/listeners_bpf.hpp"
#include "daemon/net/listeners_diag.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <map>
#include <system_error>
#include <vector>

namespace clusterd {

namespace {

[[noreturn]] void fail(const char* call, const ListenConfig& listen) {
    throw std::system_error(errno, std::system_category(),
                            std::string(call) + "(" + listen.address() + ") failed");
}

bool same_socket(const ListenConfig& a, const ListenConfig& b) {
    return a.host == b.host && a.port == b.port && a.reuseport == b.reuseport;
}

SocketRef share(UniqueFd fd) {
    return std::make_shared<const UniqueFd>(std::move(fd));
}

// The model of the kernel group an address's reuseport sockets join. Programs can share a
// group for a while (a reload that moves an address from one program to another while the
// old workers drain), so the model is found by address, not owned by one table.
std::shared_ptr<ReuseGroup> group_for(const ListenConfig& entry) {
    static std::map<std::string, std::weak_ptr<ReuseGroup>> groups;
    auto& slot = groups[entry.address()];
    auto group = slot.lock();
    if (!group) {
        group = std::make_shared<ReuseGroup>();
        slot = group;
    }
    return group;
}

// A reuseport socket that keeps its group's model right when it closes.
SocketRef join(const std::shared_ptr<ReuseGroup>& group, UniqueFd fd) {
    group->fds.push_back(fd.get());
    return SocketRef(new UniqueFd(std::move(fd)), [group](const UniqueFd* sock) {
        int i = group->index_of(sock->get());
        if (i >= 0) {
            group->fds[static_cast<std::size_t>(i)] = group->fds.back();
            group->fds.pop_back();
        }
        group->forget(sock->get());
        delete sock;
    });
}

}  // namespace

UniqueFd open_listener(const ListenConfig& listen) {
    sockaddr_storage storage{};
    socklen_t len = 0;
    int family = AF_INET;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    if (::inet_pton(AF_INET, listen.host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(listen.port);
        len = sizeof(sockaddr_in);
    } else if (::inet_pton(AF_INET6, listen.host.c_str(), &v6->sin6_addr) == 1) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(listen.port);
        len = sizeof(sockaddr_in6);
    } else {
        errno = EINVAL;
        fail("inet_pton", listen);
    }

    UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) fail("socket", listen);
    int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        fail("setsockopt(SO_REUSEADDR)", listen);
    if (listen.reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        fail("setsockopt(SO_REUSEPORT)", listen);
    if (family == AF_INET6 &&
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        fail("setsockopt(IPV6_V6ONLY)", listen);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), len) < 0) fail("bind", listen);
    if (::listen(fd.get(), listen.backlog) < 0) fail("listen", listen);
    return fd;
}

int ReuseGroup::index_of(int fd) const {
    for (std::size_t i = 0; i < fds.size(); ++i)
        if (fds[i] == fd) return static_cast<int>(i);
    return -1;
}

std::optional<std::uint32_t> ReuseGroup::key_of(int fd) {
    auto it = std::find(keys.begin(), keys.end(), fd);
    if (it == keys.end()) it = std::find(keys.begin(), keys.end(), -1);
    if (it != keys.end()) {
        *it = fd;
        return static_cast<std::uint32_t>(it - keys.begin());
    }
    if (keys.size() >= kMaxSteeredSockets) return std::nullopt;
    keys.push_back(fd);
    return static_cast<std::uint32_t>(keys.size() - 1);
}

void ReuseGroup::forget(int fd) {
    for (int& k : keys)
        if (k == fd) k = -1;  // the kernel empties the map's entry when the socket closes
}

SocketTable::SocketTable(const std::vector<ListenConfig>& entries, int slots,
                         const SocketTable* previous,
                         const std::map<std::string, SocketRef>* activated)
    : entries_(entries) {
    for (const auto& entry : entries_) {
        if (!names_.empty()) names_ += ':';
        names_ += entry.name;
    }
    shared_.resize(entries_.size());
    groups_.resize(entries_.size());
    activated_.assign(entries_.size(), false);
    per_slot_.assign(static_cast<std::size_t>(slots), std::vector<SocketRef>(entries_.size()));
    slots_ = slots;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
        if (activated) {
            auto it = activated->find(entries_[e].name);
            if (it != activated->end()) {
                entries_[e].reuseport = false;  // one socket from systemd, shared by all slots
                shared_[e] = it->second;
                activated_[e] = true;
                continue;
            }
        }
        const ListenConfig& entry = entries_[e];
        std::size_t old = previous ? previous->entries_.size() : 0;
        for (std::size_t j = 0; j < old; ++j) {
            if (!same_socket(previous->entries_[j], entry)) continue;
            if (entry.reuseport) {
                groups_[e] = previous->groups_[j];
                for (int s = 0; s < slots && s < previous->slots_; ++s)
                    per_slot_[s][e] = previous->per_slot_[s][j];
            } else {
                shared_[e] = previous->shared_[j];
                ::listen(shared_[e]->get(), entry.backlog);
            }
            break;
        }
    }
    // Open what could not be reused; a backlog change applies to reused sockets too.
    for (std::size_t e = 0; e < entries_.size(); ++e) {
        const ListenConfig& entry = entries_[e];
        if (!entry.reuseport) {
            if (!shared_[e]) {
                shared_[e] = share(open_listener(entry));
                ::listen(shared_[e]->get(), entry.backlog);
            }
            continue;
        }
        if (!groups_[e]) groups_[e] = group_for(entry);
        for (int s = 0; s < slots; ++s) {
            if (!per_slot_[s][e]) {
                per_slot_[s][e] = join(groups_[e], open_listener(entry));
            } else {
                rejoin(e, per_slot_[s][e]);  // a shut one (see shut()) joins the group again
            }
        }
    }
}

SocketTableFds SocketTable::fds() const {
    SocketTableFds out;
    out.shut = shut_;
    out.activated = activated_;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
        out.shared.push_back(shared_[e] ? shared_[e]->get() : -1);
        out.group_order.push_back(groups_[e] ? groups_[e]->fds : std::vector<int>{});
        out.sockarray.push_back(groups_[e] && groups_[e]->sockarray ? groups_[e]->sockarray.get()
                                                                    : -1);
        out.keys.push_back(groups_[e] ? groups_[e]->keys : std::vector<int>{});
    }
    for (const auto& row : per_slot_) {
        std::vector<int> fds;
        for (const auto& sock : row) fds.push_back(sock ? sock->get() : -1);
        out.per_slot.push_back(std::move(fds));
    }
    return out;
}

SocketTable SocketTable::adopt(const std::vector<ListenConfig>& entries, const SocketTableFds& fds,
                               const std::map<std::string, SocketRef>& activated) {
    SocketTable t;
    t.entries_ = entries;
    for (const auto& entry : t.entries_) {
        if (!t.names_.empty()) t.names_ += ':';
        t.names_ += entry.name;
    }
    std::size_t n = entries.size();
    t.shared_.resize(n);
    t.groups_.resize(n);
    t.activated_ = fds.activated;
    t.activated_.resize(n, false);
    t.slots_ = static_cast<int>(fds.per_slot.size());
    t.per_slot_.assign(fds.per_slot.size(), std::vector<SocketRef>(n));
    t.shut_ = fds.shut;
    for (std::size_t e = 0; e < n; ++e) {
        if (t.activated_[e]) {
            t.entries_[e].reuseport = false;
            auto it = activated.find(t.entries_[e].name);
            if (it != activated.end()) t.shared_[e] = it->second;
            continue;
        }
        if (!t.entries_[e].reuseport) {
            if (e < fds.shared.size() && fds.shared[e] >= 0)
                t.shared_[e] = share(UniqueFd(fds.shared[e]));
            continue;
        }
        t.groups_[e] = group_for(t.entries_[e]);
        for (std::size_t s = 0; s < fds.per_slot.size(); ++s) {
            int fd = e < fds.per_slot[s].size() ? fds.per_slot[s][e] : -1;
            if (fd < 0) continue;
            t.per_slot_[s][e] = join(t.groups_[e], UniqueFd(fd));
        }
        // The kernel's order, as the old image knew it (join() appended in slot order).
        if (e < fds.group_order.size()) t.groups_[e]->fds = fds.group_order[e];
        if (e < fds.sockarray.size() && fds.sockarray[e] >= 0 && !t.groups_[e]->sockarray) {
            ::fcntl(fds.sockarray[e], F_SETFD, FD_CLOEXEC);
            t.groups_[e]->sockarray = UniqueFd(fds.sockarray[e]);
            if (e < fds.keys.size()) t.groups_[e]->keys = fds.keys[e];
        }
    }
    return t;
}

void SocketTable::resize(int slots) {
    if (slots < slots_) {
        per_slot_.resize(static_cast<std::size_t>(slots));
        slots_ = slots;
        return;
    }
    std::vector<std::vector<SocketRef>> added;
    for (int s = slots_; s < slots; ++s) {
        std::vector<SocketRef> row(entries_.size());
        for (std::size_t e = 0; e < entries_.size(); ++e)
            if (entries_[e].reuseport) row[e] = join(groups_[e], open_listener(entries_[e]));
        added.push_back(std::move(row));
    }
    for (auto& row : added) per_slot_.push_back(std::move(row));
    int first_new = slots_;
    slots_ = slots;
    if (!shut_) return;
    for (int k = first_new; k < slots_; ++k)
        for (std::size_t e = 0; e < entries_.size(); ++e)
            if (entries_[e].reuseport) leave(e, per_slot_[static_cast<std::size_t>(k)][e]);
}

// shutdown(SHUT_RD) takes a listening socket out of its reuseport group (the last socket
// moves into its index) and resets its queue.
void SocketTable::leave(std::size_t e, const SocketRef& sock) {
    if (!sock) return;
    ::shutdown(sock->get(), SHUT_RD);
    if (!groups_[e]) return;
    auto& fds = groups_[e]->fds;
    int i = groups_[e]->index_of(sock->get());
    if (i < 0) return;
    fds[static_cast<std::size_t>(i)] = fds.back();
    fds.pop_back();
}

void SocketTable::rejoin(std::size_t e, const SocketRef& sock) {
    if (!sock) return;
    if (::listen(sock->get(), entries_[e].backlog) < 0) return;
    if (groups_[e] && groups_[e]->index_of(sock->get()) < 0) groups_[e]->fds.push_back(sock->get());
}

std::vector<std::pair<std::size_t, SocketRef>> SocketTable::own() const {
    std::vector<std::pair<std::size_t, SocketRef>> out;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
        if (activated_[e]) continue;
        if (!entries_[e].reuseport) {
            if (shared_[e]) out.emplace_back(e, shared_[e]);
            continue;
        }
        for (const auto& row : per_slot_)
            if (row[e]) out.emplace_back(e, row[e]);
    }
    return out;
}

bool SocketTable::all_listening() const {
    auto socks = own();
    return std::all_of(socks.begin(), socks.end(),
                       [](const auto& es) { return listen_queue(es.second->get()).has_value(); });
}

void SocketTable::shut() {
    if (shut_) return;
    shut_ = true;
    for (const auto& [e, sock] : own()) leave(e, sock);
}

void SocketTable::open() {
    shut_ = false;
    for (const auto& [e, sock] : own()) rejoin(e, sock);
}

int SocketTable::refuse_queued(int slot) {
    int queued = 0;
    if (shut_) return 0;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
        if (!entries_[e].reuseport) continue;
        const SocketRef& sock = per_slot_.at(static_cast<std::size_t>(slot))[e];
        auto q = listen_queue(sock->get());
        if (!q || q->queued == 0) continue;
        queued += static_cast<int>(q->queued);
        leave(e, sock);
        rejoin(e, sock);
    }
    return queued;
}

namespace {

// Our sockets of `targets`, each under its key in the group's sockarray, then a program
// that picks among those keys.
std::string steer_by_identity(ReuseGroup& group, const std::vector<int>& targets, int attach) {
    if (!group.sockarray) {
        try {
            group.sockarray = make_sockarray();
        } catch (const std::system_error& e) {
            return e.what();
        }
    }
    std::vector<std::uint32_t> keys;
    for (int fd : targets) {
        auto key = group.key_of(fd);
        if (!key) return "more than " + std::to_string(kMaxSteeredSockets) + " sockets";
        if (std::string why = place_socket(group.sockarray.get(), *key, fd); !why.empty())
            return why;
        keys.push_back(*key);
    }
    return attach_identity_steering(group.sockarray.get(), keys, attach);
}

// A = skb hash % n; then map A to the group index of the n-th chosen socket.
std::string steer_by_index(const ReuseGroup& group, const std::vector<int>& targets, int attach) {
    std::vector<int> indexes;
    for (int fd : targets) indexes.push_back(group.index_of(fd));
    const auto n = static_cast<__u32>(indexes.size());
    std::vector<sock_filter> code;
    code.push_back(
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, static_cast<__u32>(SKF_AD_OFF + SKF_AD_RXHASH)});
    code.push_back({BPF_ALU | BPF_MOD | BPF_K, 0, 0, n});
    for (__u32 i = 0; i + 1 < n; ++i) {
        code.push_back({BPF_JMP | BPF_JEQ | BPF_K, 0, 1, i});
        code.push_back({BPF_RET | BPF_K, 0, 0, static_cast<__u32>(indexes[i])});
    }
    code.push_back({BPF_RET | BPF_K, 0, 0, static_cast<__u32>(indexes[n - 1])});
    if (code.size() > BPF_MAXINSNS) return "too many slots to steer";
    sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
    if (::setsockopt(attach, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) < 0)
        return std::string("setsockopt(SO_ATTACH_REUSEPORT_CBPF) failed: ") + std::strerror(errno);
    return "";
}

}  // namespace

std::string SocketTable::steer(const std::vector<int>& live) const {
    std::vector<int> slots = live;
    if (slots.empty())
        for (int k = 0; k < slots_; ++k) slots.push_back(k);
    std::string problems;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
        if (!entries_[e].reuseport || slots.empty()) continue;
        ReuseGroup& group = *groups_[e];
        std::vector<int> targets;
        for (int k : slots) targets.push_back(per_slot_.at(k)[e]->get());
        const int attach = targets.front();
        const std::string where = " on " + entries_[e].address();
        if (identity_steering_unavailable().empty()) {
            std::string why = steer_by_identity(group, targets, attach);
            if (why.empty()) {
                group.steering = "identity";
                continue;
            }
            problems += "steering by socket" + where + ": " + why + "; ";
        }
        if (!group.foreign.empty()) {
            // Indexes counted from 0 would land on the foreign sockets, which sit first.
            std::string why = detach_steering(attach);
            group.steering = "none";
            if (!why.empty()) problems += why + where + "; ";
            continue;
        }
        std::string why = steer_by_index(group, targets, attach);
        group.steering = why.empty() ? "index" : "none";
        if (!why.empty()) problems += why + where + "; ";
    }
    return problems;
}

std::vector<ForeignCheck> SocketTable::check_foreign() {
    std::vector<ForeignCheck> out;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
        if (!entries_[e].reuseport) continue;
        ReuseGroup& group = *groups_[e];
        ForeignCheck check{
            entries_[e].name, entries_[e].address(), group.foreign, group.foreign, false, ""};
        auto listening = listening_inodes(entries_[e], check.error);
        if (listening) {
            std::vector<std::uint64_t> ours;
            for (int fd : group.fds) ours.push_back(socket_inode(fd));
            std::sort(ours.begin(), ours.end());
            check.inodes.clear();
            std::set_difference(listening->begin(), listening->end(), ours.begin(), ours.end(),
                                std::back_inserter(check.inodes));
        }
        check.changed = check.inodes != group.foreign || check.error != group.check_error;
        const bool gone = !group.foreign.empty() && check.inodes.empty() && check.error.empty();
        group.foreign = check.inodes;
        group.check_error = check.error;
        if (gone && !identity_steering_unavailable().empty() && !shut_)
            check.regrouped_reset = regroup(e);
        out.push_back(std::move(check));
    }
    return out;
}

int SocketTable::regroup(std::size_t e) {
    int reset = 0;
    bool first = true;
    for (const auto& row : per_slot_) {
        const SocketRef& sock = row[e];
        if (!sock) continue;
        if (first) {  // stays, and holds the group together meanwhile
            first = false;
            continue;
        }
        if (auto q = listen_queue(sock->get())) reset += static_cast<int>(q->queued);
        leave(e, sock);
    }
    first = true;
    for (const auto& row : per_slot_) {
        if (!row[e]) continue;
        if (!first) rejoin(e, row[e]);
        first = false;
    }
    return reset;
}

std::size_t SocketTable::foreign_sockets(std::size_t e) const {
    return e < groups_.size() && groups_[e] ? groups_[e]->foreign.size() : 0;
}

std::string SocketTable::steering(std::size_t e) const {
    return e < groups_.size() && groups_[e] ? groups_[e]->steering : "";
}

std::vector<SocketRef> SocketTable::for_slot(int slot) const {
    std::vector<SocketRef> out;
    for (std::size_t e = 0; e < entries_.size(); ++e)
        out.push_back(entries_[e].reuseport ? per_slot_.at(static_cast<std::size_t>(slot))[e]
                                            : shared_[e]);
    return out;
}

std::vector<SocketRef> SocketTable::own_sockets(int slot) const {
    std::vector<SocketRef> out;
    for (std::size_t e = 0; e < entries_.size(); ++e)
        if (entries_[e].reuseport) out.push_back(per_slot_.at(static_cast<std::size_t>(slot))[e]);
    return out;
}

}  // namespace clusterd

// `ipc: node`: each worker process gets a Node IPC channel (daemon/net/node_channel.hpp), and
// clusterd answers on it as the Node cluster primary would: a worker's `server.listen(port)`
// gets the master's listening socket for that port, in its slot.
//
// Which socket: `listen({fd: N})` takes the worker's fd N (3 is the first `listen:` entry);
// anything else is matched by port among the program's `listen:` entries, and where two entries
// share a port, by address. The address in the app's listen() does not choose where clusterd
// binds: the config does. A port no entry has, a pipe path, or an address that two entries could
// both be, is refused with EADDRNOTAVAIL: the app's listen() fails with it, and the log says
// which addresses the program has.

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>
#include <cerrno>

#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

namespace {

/// libuv's errno for "address not available" (negative errno on Linux).
constexpr int kUvEaddrnotavail = -EADDRNOTAVAIL;

bool node_same_host(const std::string& a, const std::string& b) {
    unsigned char x[16], y[16];
    for (int family : {AF_INET, AF_INET6})
        if (::inet_pton(family, a.c_str(), x) == 1 && ::inet_pton(family, b.c_str(), y) == 1)
            return std::memcmp(x, y, family == AF_INET ? 4 : 16) == 0;
    return a == b;
}

/// The `listen:` entry that `q` asks for, or why none.
std::optional<std::size_t> node_match_entry(const std::vector<ListenConfig>& entries,
                                            const NodeServerQuery& q, std::string& why) {
    if (q.fd) {
        auto e = static_cast<std::size_t>(*q.fd - 3);
        if (*q.fd >= 3 && e < entries.size()) return e;
        why = "fd " + std::to_string(*q.fd) + " is not one of its listening sockets (fds 3 to " +
              std::to_string(2 + entries.size()) + ")";
        return std::nullopt;
    }
    if (q.address_type == -1) {
        why = "clusterd listens on TCP addresses only";
        return std::nullopt;
    }
    std::vector<std::size_t> by_port;
    for (std::size_t e = 0; e < entries.size(); ++e)
        if (entries[e].port == q.port) by_port.push_back(e);
    if (q.address)
        for (std::size_t e : by_port)
            if (node_same_host(entries[e].host, *q.address)) return e;
    if (by_port.size() == 1) return by_port[0];
    why = by_port.empty() ? "no listen entry has port " + std::to_string(q.port)
                          : "several listen entries have port " + std::to_string(q.port) +
                                ": listen on one of their addresses";
    return std::nullopt;
}

std::string node_addresses(const std::vector<ListenConfig>& entries) {
    std::string s;
    for (const auto& e : entries) s += (s.empty() ? "" : ", ") + e.address();
    return s.empty() ? "none" : s;
}

}  // namespace

NodeChannel::Handlers Supervisor::Impl::node_handlers(std::uint64_t id) {
    NodeChannel::Handlers h;
    h.notify = [this, id](const NotifyMessage& m) {
        auto it = workers.find(id);
        if (it != workers.end() && it->second->sm.pid != 0)
            apply_notify(it->second.get(), it->second->sm.pid, m);
    };
    h.query_server = [this, id](const NodeServerQuery& q) { on_node_query(id, q); };
    h.listening = [this, id](const NodeServerQuery& q) { on_node_listening(id, q); };
    return h;
}

UniqueFd Supervisor::Impl::open_ipc(Worker* w) {
    auto [channel, theirs] = NodeChannel::open(io, label(w), node_counters, node_handlers(w->id));
    w->ipc = std::move(channel);
    w->ipc->start();
    return std::move(theirs);
}

void Supervisor::Impl::on_node_query(std::uint64_t id, const NodeServerQuery& q) {
    auto it = workers.find(id);
    if (it == workers.end() || !it->second->ipc) return;
    Worker* w = it->second.get();
    const auto& entries = w->spec->config.listen;
    std::string why;
    auto e = node_match_entry(entries, q, why);
    if (!e || *e >= w->sockets.size()) {
        w->ipc->warn("the Node worker's listen(" + q.describe() + ") refused with EADDRNOTAVAIL: " +
                     why + " (the program listens on " + node_addresses(entries) + ")");
        w->ipc->refuse_server(q, kUvEaddrnotavail);
        return;
    }
    spdlog::debug("{}: the Node worker's listen({}) gets {}", label(w), q.describe(),
                  entries[*e].address());
    // Node 18 (Debian 12's, on libuv 1.44) takes a received listening socket as it comes, and
    // blocks its loop in accept() on a blocking one; Node 20 sets O_NONBLOCK itself. The flag
    // is the socket's, shared by every holder: the master and this program's Node workers.
    int fd = w->sockets[*e]->get();
    if (int flags = ::fcntl(fd, F_GETFL); flags >= 0 && (flags & O_NONBLOCK) == 0)
        ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    w->ipc->give_server(q, fd);
}

void Supervisor::Impl::on_node_listening(std::uint64_t id, const NodeServerQuery& q) {
    auto it = workers.find(id);
    if (it == workers.end()) return;
    Worker* w = it->second.get();
    const auto& entries = w->spec->config.listen;
    std::string why;
    auto e = node_match_entry(entries, q, why);
    // Node's listen() on the socket it was given set the socket's backlog to its own (511 by
    // default): the configured one is set again.
    if (e && *e < w->sockets.size() && !w->program->sockets.is_shut())
        ::listen(w->sockets[*e]->get(), entries[*e].backlog);
    if (w->spec->config.ready == ReadyMode::listening && w->sm.state == SlotState::starting)
        dispatch(w, event::Ready{});
}

}  // namespace clusterd

// Reuseport groups that hold sockets which are not the table's: detection (sock_diag, inodes,
// /proc holders) and steering around them, against sockets and connections the test makes.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <memory>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "daemon/net/listen_queue.hpp"
#include "daemon/net/listeners.hpp"
#include "daemon/net/listeners_bpf.hpp"
#include "daemon/net/listeners_diag.hpp"

using namespace clusterd;

namespace {

std::uint16_t free_port() {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    return ntohs(addr.sin_port);
}

ListenConfig entry(std::uint16_t port, const std::string& host = "127.0.0.1") {
    ListenConfig l;
    l.name = "http";
    l.host = host;
    l.port = port;
    return l;
}

// Opens `n` connections to 127.0.0.1:port; the kernel completes them into some listener's
// accept queue (nobody accepts here). Kept open so that they stay queued.
std::vector<UniqueFd> connect_n(std::uint16_t port, int n) {
    std::vector<UniqueFd> out;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < n; ++i) {
        UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(::connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        out.push_back(std::move(c));
    }
    return out;
}

std::uint32_t queued(int fd) {
    auto q = listen_queue(fd);
    return q ? q->queued : 0;
}

std::uint32_t queued_in(const SocketTable& table) {
    std::uint32_t sum = 0;
    for (int k = 0; k < table.slots(); ++k)
        for (const auto& s : table.own_sockets(k)) sum += queued(s->get());
    return sum;
}

// Each check: look at the table's group, then steer to every slot.
void check_and_steer(SocketTable& table) {
    table.check_foreign();
    CHECK(table.steer({}) == "");
}

struct ClassicOnly {
    ClassicOnly() { force_classic_steering(true); }
    ~ClassicOnly() { force_classic_steering(false); }
};

}  // namespace

TEST_CASE("listening_inodes: exactly the listening sockets of one address and port") {
    const std::uint16_t port = free_port();
    UniqueFd a = open_listener(entry(port));
    UniqueFd b = open_listener(entry(port));
    UniqueFd elsewhere = open_listener(entry(port, "127.0.0.2"));  // another group
    std::string error;
    auto inodes = listening_inodes(entry(port), error);
    REQUIRE_MESSAGE(inodes, error);
    std::vector<std::uint64_t> want{socket_inode(a.get()), socket_inode(b.get())};
    std::sort(want.begin(), want.end());
    CHECK(*inodes == want);

    // A shut socket is not listening (and has left the group).
    REQUIRE(::shutdown(b.get(), SHUT_RD) == 0);
    inodes = listening_inodes(entry(port), error);
    REQUIRE(inodes);
    CHECK(*inodes == std::vector<std::uint64_t>{socket_inode(a.get())});

    inodes = listening_inodes(entry(free_port()), error);
    REQUIRE(inodes);
    CHECK(inodes->empty());
    CHECK_FALSE(listening_inodes(entry(port, "not-an-address"), error));
    CHECK(error.find("not-an-address") != std::string::npos);
}

TEST_CASE("socket_holders: the processes that hold a socket, within a bound") {
    const std::uint16_t port = free_port();
    UniqueFd s = open_listener(entry(port));
    std::vector<std::uint64_t> inodes{socket_inode(s.get())};
    auto start = std::chrono::steady_clock::now();
    SocketHolders holders = socket_holders(inodes);
    MESSAGE("scan of /proc/*/fd: "
            << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                   .count()
            << " ms");
    CHECK_FALSE(holders.truncated);
    REQUIRE(holders.pids.count(inodes[0]) == 1);
    CHECK(holders.pids[inodes[0]] == std::vector<pid_t>{::getpid()});

    SocketHolders cut = socket_holders(inodes, 0);
    CHECK(cut.truncated);
    CHECK(cut.pids.empty());
}

TEST_CASE("check_foreign: a socket the table did not open, found and forgotten once per change") {
    const std::uint16_t port = free_port();
    SocketTable table({entry(port)}, 2);
    auto checks = table.check_foreign();
    REQUIRE(checks.size() == 1);
    CHECK(checks[0].error == "");
    CHECK(checks[0].inodes.empty());
    CHECK_FALSE(checks[0].changed);
    CHECK(checks[0].address == "127.0.0.1:" + std::to_string(port));

    for (int round = 0; round < 3; ++round) {
        UniqueFd stranger = open_listener(entry(port));
        checks = table.check_foreign();
        REQUIRE(checks.size() == 1);
        CHECK(checks[0].changed);
        CHECK(checks[0].inodes == std::vector<std::uint64_t>{socket_inode(stranger.get())});
        CHECK(table.foreign_sockets(0) == 1);
        CHECK_FALSE(table.check_foreign()[0].changed);  // nothing new: said once

        // Growing the table adds our sockets, not foreign ones.
        table.resize(4);
        CHECK_FALSE(table.check_foreign()[0].changed);
        table.resize(2);

        stranger.reset();
        checks = table.check_foreign();
        CHECK(checks[0].changed);
        CHECK(checks[0].inodes.empty());
        CHECK(table.foreign_sockets(0) == 0);
    }
}

TEST_CASE("steering by index alone sends connections to foreign sockets at the head of the group") {
    ClassicOnly classic;
    const std::uint16_t port = free_port();
    UniqueFd stranger = open_listener(entry(port));  // index 0, like a dead master's socket
    SocketTable table({entry(port)}, 2);
    CHECK(table.steer({}) == "");  // no check: indexes 0 and 1 are the stranger and slot 0
    CHECK(table.steering(0) == "index");
    auto conns = connect_n(port, 40);
    CHECK(queued(stranger.get()) > 0);
    CHECK(queued_in(table) + queued(stranger.get()) == 40);
    CHECK(queued(table.own_sockets(1)[0]->get()) == 0);
}

TEST_CASE("steering by socket identity: no connection reaches a foreign socket") {
    if (!identity_steering_unavailable().empty()) {
        MESSAGE("skipped: " << identity_steering_unavailable());
        return;
    }
    const std::uint16_t port = free_port();
    for (int round = 0; round < 5; ++round) {
        std::vector<UniqueFd> strangers;
        for (int i = 0; i < 2; ++i) strangers.push_back(open_listener(entry(port)));
        SocketTable table({entry(port)}, 3);
        check_and_steer(table);
        CHECK(table.foreign_sockets(0) == 2);
        CHECK(table.steering(0) == "identity");
        auto conns = connect_n(port, 40);
        for (const auto& s : strangers) CHECK(queued(s.get()) == 0);
        CHECK(queued_in(table) == 40);

        // Only slot 2 (a scale-down drains 0 and 1): everything new goes there.
        CHECK(table.steer({2}) == "");
        auto more = connect_n(port, 20);
        CHECK(queued(table.own_sockets(2)[0]->get()) >= 20);
        for (const auto& s : strangers) CHECK(queued(s.get()) == 0);

        // Sockets close and reopen (a refused queue rejoins the group): steer again.
        table.resize(2);
        table.resize(3);
        CHECK(table.steer({}) == "");
        CHECK(table.refuse_queued(0) >= 0);
        CHECK(table.steer({}) == "");
        auto last = connect_n(port, 30);
        for (const auto& s : strangers) CHECK(queued(s.get()) == 0);
    }
}

TEST_CASE("without identity steering, foreign sockets turn steering off until they are gone") {
    ClassicOnly classic;
    const std::uint16_t port = free_port();
    auto stranger = std::make_unique<UniqueFd>(open_listener(entry(port)));
    SocketTable table({entry(port)}, 2);
    check_and_steer(table);
    CHECK(table.steering(0) == "none");
    {
        // The kernel's hash over three sockets: some land on the stranger, some on ours.
        auto conns = connect_n(port, 60);
        CHECK(queued(stranger->get()) > 0);
        CHECK(queued_in(table) > 0);
    }
    stranger.reset();
    auto checks = table.check_foreign();
    CHECK(checks[0].changed);
    CHECK(table.steer({1}) == "");
    CHECK(table.steering(0) == "index");
    auto conns = connect_n(port, 40);
    CHECK(queued(table.own_sockets(1)[0]->get()) == 40);
}

TEST_CASE("listening_inodes: a dump of a crowded port is quick enough for the master's loop") {
    const std::uint16_t port = free_port();
    std::vector<UniqueFd> socks;
    for (int i = 0; i < 256; ++i) socks.push_back(open_listener(entry(port)));
    std::string error;
    double worst_ms = 0;
    for (int round = 0; round < 20; ++round) {
        auto start = std::chrono::steady_clock::now();
        auto inodes = listening_inodes(entry(port), error);
        auto ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        worst_ms = std::max(worst_ms, ms);
        REQUIRE(inodes);
        CHECK(inodes->size() == socks.size());
    }
    MESSAGE("sock_diag dump of 256 listeners: worst " << worst_ms << " ms of 20");
    CHECK(worst_ms < 100);
}

TEST_CASE("parse_diag_reply: an error from the kernel, whole or cut short, says so") {
    in_addr lo{};
    lo.s_addr = htonl(INADDR_LOOPBACK);
    std::vector<std::uint64_t> inodes;
    std::string error;
    alignas(nlmsghdr) unsigned char buffer[64] = {};
    auto* h = reinterpret_cast<nlmsghdr*>(buffer);
    h->nlmsg_type = NLMSG_ERROR;
    h->nlmsg_len = NLMSG_LENGTH(sizeof(nlmsgerr));
    reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error = -EPERM;
    CHECK(parse_diag_reply(buffer, h->nlmsg_len, AF_INET, &lo, 80, inodes, error) ==
          DiagStep::failed);
    CHECK(error == "sock_diag dump failed: Operation not permitted");

    for (int bad : {INT_MIN, 0, 5}) {  // not -errno
        reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error = bad;
        CHECK(parse_diag_reply(buffer, h->nlmsg_len, AF_INET, &lo, 80, inodes, error) ==
              DiagStep::failed);
        CHECK(error == "sock_diag dump failed: Protocol error");
    }

    h->nlmsg_len = NLMSG_LENGTH(0);  // no room for the error code
    CHECK(parse_diag_reply(buffer, h->nlmsg_len, AF_INET, &lo, 80, inodes, error) ==
          DiagStep::failed);
    CHECK(error == "sock_diag dump failed: Protocol error");

    h->nlmsg_len = 200;  // longer than the buffer: not a message
    CHECK(parse_diag_reply(buffer, sizeof buffer, AF_INET, &lo, 80, inodes, error) ==
          DiagStep::more);
    CHECK(inodes.empty());
}

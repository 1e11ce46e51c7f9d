// Accept queue length and backlog of a real listening socket; the netstat parser.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <vector>

#include "common/fd.hpp"
#include "daemon/net/listen_queue.hpp"

using namespace clusterd;

namespace {

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

}  // namespace

TEST_CASE("listen_queue: queued connections and the backlog of a listening socket") {
    UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listener);
    sockaddr_in addr = loopback(0);
    REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);

    // Not listening yet: no queue to report.
    CHECK_FALSE(listen_queue(listener.get()));
    REQUIRE(::listen(listener.get(), 16) == 0);

    auto empty = listen_queue(listener.get());
    REQUIRE(empty);
    CHECK(empty->queued == 0);
    CHECK(empty->backlog == 16);

    std::vector<UniqueFd> clients;
    for (int i = 0; i < 3; ++i) {
        clients.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(::connect(clients.back().get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) ==
                0);
    }
    auto three = listen_queue(listener.get());
    REQUIRE(three);
    CHECK(three->queued == 3);
    CHECK(three->backlog == 16);

    UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(accepted);
    CHECK(listen_queue(listener.get())->queued == 2);
    // A connected socket is not a listener.
    CHECK_FALSE(listen_queue(accepted.get()));
}

TEST_CASE("listen_queue: nothing for a unix socket or a closed fd") {
    UniqueFd unix_sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(unix_sock);
    CHECK_FALSE(listen_queue(unix_sock.get()));
    CHECK_FALSE(listen_queue(-1));
}

TEST_CASE("parse_listen_drops: the TcpExt values by name") {
    const char* text =
        "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\n"
        "TcpExt: 0 12 15 7\n"
        "IpExt: InNoRoutes ListenOverflows\n"
        "IpExt: 1 99\n";
    auto drops = parse_listen_drops(text);
    REQUIRE(drops);
    CHECK(drops->overflows == 12);
    CHECK(drops->drops == 15);
    CHECK_FALSE(parse_listen_drops("TcpExt: ListenOverflows\nTcpExt: 3\n"));
    CHECK_FALSE(parse_listen_drops("TcpExt: ListenOverflows ListenDrops\nTcpExt: 3\n"));
    CHECK_FALSE(parse_listen_drops(""));
    // This host's counters are readable.
    CHECK(read_listen_drops());
    CHECK_FALSE(read_listen_drops("/nonexistent/netstat"));
}

// The header-only worker SDK (worker/sdk.hpp, worker/sdk_asio.hpp) against real sockets,
// timers and signals.
#include "worker/sdk.hpp"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

#include "worker/sdk_asio.hpp"

namespace sdk = clusterd::sdk;
using std::chrono::microseconds;

namespace {

/// An abstract datagram socket standing in for the master's notify socket.
struct FakeMaster {
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    std::string name = "@clusterd-sdk-test-" + std::to_string(::getpid());
    FakeMaster() {
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path + 1, name.data() + 1, name.size() - 1);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr),
                       static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size())) == 0);
        ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
    }
    ~FakeMaster() {
        ::unsetenv("NOTIFY_SOCKET");
        ::close(fd);
    }
    /// The next datagram, or "" after 2 s.
    std::string receive() {
        timeval tv{2, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[512];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
    }
};

}  // namespace

TEST_CASE("sdk: parse_listen_fds follows sd_listen_fds(3)") {
    CHECK(sdk::parse_listen_fds(nullptr, "1", nullptr, 7).empty());
    CHECK(sdk::parse_listen_fds("8", "1", nullptr, 7).empty());  // for another process
    auto fds = sdk::parse_listen_fds("7", "2", "http:admin", 7);
    REQUIRE(fds.size() == 2);
    CHECK(fds[0].fd == 3);
    CHECK(fds[0].name == "http");
    CHECK(fds[1].fd == 4);
    CHECK(fds[1].name == "admin");
    CHECK(sdk::parse_listen_fds("7", "1", nullptr, 7)[0].name == "unknown");
    CHECK_THROWS_AS(sdk::parse_listen_fds("7", "x", nullptr, 7), std::invalid_argument);
    CHECK_THROWS_AS(sdk::parse_listen_fds("7", "2", "one", 7), std::invalid_argument);
}

TEST_CASE("sdk: watchdog_timeout and watchdog_interval read WATCHDOG_USEC for this pid") {
    ::unsetenv("WATCHDOG_PID");
    ::unsetenv("WATCHDOG_USEC");
    CHECK_FALSE(sdk::watchdog_timeout());
    CHECK(sdk::watchdog_interval() == microseconds(0));
    ::setenv("WATCHDOG_USEC", "3000000", 1);
    CHECK(sdk::watchdog_timeout() == microseconds(3000000));
    CHECK(sdk::watchdog_interval() == microseconds(1500000));
    ::setenv("WATCHDOG_PID", "1", 1);  // someone else's
    CHECK_FALSE(sdk::watchdog_timeout());
    ::unsetenv("WATCHDOG_PID");
    ::unsetenv("WATCHDOG_USEC");
}

TEST_CASE("sdk: notify_* datagrams reach NOTIFY_SOCKET, no-op without it") {
    CHECK(sdk::notify_ready() == 0);  // unset: nothing to do
    FakeMaster master;
    CHECK(sdk::notify_ready("up") == 0);
    CHECK(master.receive() == "READY=1\nSTATUS=up\n");
    CHECK(sdk::notify_status("a\nb") == 0);
    CHECK(master.receive() == "STATUS=a b\n");
    CHECK(sdk::notify_watchdog({{"LOOP_LAG_US", 12}}) == 0);
    CHECK(master.receive() == "WATCHDOG=1\nX_CLUSTERD_LOOP_LAG_US=12\n");
    CHECK(sdk::notify_stopping() == 0);
    CHECK(master.receive() == "STOPPING=1\n");
    CHECK(sdk::notify_to("relative", "x") == EAFNOSUPPORT);
}

TEST_CASE("sdk: tcp_listeners wraps an inherited TCP socket, rejects a datagram socket") {
    int tcp = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(tcp, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(tcp, 8) == 0);
    sdk::net::io_context io;
    auto listeners = sdk::tcp_listeners(io, {{tcp, "http"}});
    REQUIRE(listeners.size() == 1);
    CHECK(listeners[0].name == "http");
    CHECK(listeners[0].acceptor.local_endpoint().address().to_string() == "127.0.0.1");
    int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK_THROWS_AS(sdk::tcp_listeners(io, {{udp, "dns"}}), std::invalid_argument);
    ::close(udp);
}

TEST_CASE("sdk: Heartbeat sends WATCHDOG=1 with loop lag from the loop, stop() lets run() end") {
    FakeMaster master;
    sdk::net::io_context io;
    sdk::Heartbeat heartbeat(io, microseconds(20000));
    heartbeat.start();
    CHECK(master.receive() == "WATCHDOG=1\nX_CLUSTERD_LOOP_LAG_US=0\n");
    io.run_for(std::chrono::milliseconds(70));
    std::string beat = master.receive();
    CHECK(beat.starts_with("WATCHDOG=1\nX_CLUSTERD_LOOP_LAG_US="));
    heartbeat.stop();
    io.restart();
    auto before = std::chrono::steady_clock::now();
    io.run_for(std::chrono::seconds(2));  // returns at once: no work left
    CHECK(std::chrono::steady_clock::now() - before < std::chrono::seconds(1));
    sdk::Heartbeat off(io, microseconds(0));
    off.start();  // no watchdog: nothing is scheduled
    io.restart();
    CHECK(io.poll() == 0);
}

TEST_CASE("sdk: GracefulStop turns SIGTERM into STOPPING=1 and one call on the loop") {
    FakeMaster master;
    sdk::net::io_context io;
    int calls = 0, signal_seen = 0;
    sdk::GracefulStop stop(io, [&](int sig) {
        ++calls;
        signal_seen = sig;
    });
    ::raise(SIGTERM);
    ::raise(SIGTERM);  // caught, ignored
    io.run_for(std::chrono::milliseconds(200));
    CHECK(calls == 1);
    CHECK(signal_seen == SIGTERM);
    CHECK(stop.stopping());
    CHECK(master.receive() == "STOPPING=1\n");
}

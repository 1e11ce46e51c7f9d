#include "worker/runtime.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

using namespace clusterd::worker;
using namespace std::chrono_literals;

namespace {

// A listening socket on 127.0.0.1 handed over as fd 3 with the socket-activation variables,
// and a notify socket collecting what the runtime sends, as the master would.
class FakeMaster {
  public:
    FakeMaster() {
        saved_fd3_ = ::fcntl(3, F_DUPFD_CLOEXEC, 200);
        int sock = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(sock, 16) == 0);
        socklen_t len = sizeof addr;
        ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
        port_ = ntohs(addr.sin_port);
        if (sock != 3) {  // fd 3 may have been free, and socket() took it
            REQUIRE(::dup2(sock, 3) == 3);
            ::close(sock);
        }
        ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
        ::setenv("LISTEN_FDS", "1", 1);
        ::setenv("LISTEN_FDNAMES", "http", 1);

        notify_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        std::string name = "@clusterd-test-runtime-" + std::to_string(::getpid());
        sockaddr_un un{};
        un.sun_family = AF_UNIX;
        std::copy(name.begin() + 1, name.end(), un.sun_path + 1);
        len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
        REQUIRE(::bind(notify_, reinterpret_cast<sockaddr*>(&un), len) == 0);
        ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
    }
    ~FakeMaster() {
        ::unsetenv("NOTIFY_SOCKET");
        ::unsetenv("WATCHDOG_USEC");
        ::close(notify_);
        ::close(3);  // the runtime closed its copy; this only matters if it failed early
        if (saved_fd3_ >= 0) {
            ::dup2(saved_fd3_, 3);
            ::close(saved_fd3_);
        }
    }

    /// Connects a client to the listener (blocking).
    int connect_client() const {
        int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(port_);
        CHECK(::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        return c;
    }

    /// Every datagram received so far.
    std::vector<std::string> datagrams() {
        char buf[512];
        ssize_t n;
        while ((n = ::recv(notify_, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
            received_.emplace_back(buf, static_cast<std::size_t>(n));
        }
        return received_;
    }

    int count_prefix(const std::string& prefix) {
        int n = 0;
        for (const auto& d : datagrams()) n += d.starts_with(prefix);
        return n;
    }

  private:
    int saved_fd3_ = -1;
    int notify_ = -1;
    std::uint16_t port_ = 0;
    std::vector<std::string> received_;
};

RuntimeOptions no_signals() {
    RuntimeOptions o;
    o.handle_signals = false;
    return o;
}

}  // namespace

TEST_CASE("Runtime: adopts fd 3, reports ready, hands over connections, drains on stop") {
    FakeMaster master;
    Runtime runtime(no_signals());
    CHECK(runtime.describe_listeners() == std::vector<std::string>{"http (fd 3)"});
    CHECK(runtime.heartbeat_interval() == 0us);

    std::vector<AcceptedSocket> open;
    bool drained = false;
    runtime.on_accept([&](AcceptedSocket s) {
        CHECK(s.fd);
        CHECK(s.family == AF_INET);
        CHECK((::fcntl(s.fd.get(), F_GETFL) & O_NONBLOCK) != 0);
        CHECK((::fcntl(s.fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
        open.push_back(std::move(s));
        CHECK(runtime.connections() == 1);
        runtime.stop();
    });
    runtime.on_drain([&] {
        drained = true;
        CHECK(runtime.stopping());
        CHECK(runtime.connections() == 1);
        open.clear();  // the last connection closing ends run()
    });
    std::thread client([&] { ::close(master.connect_client()); });
    CHECK(runtime.run() == 0);
    client.join();
    CHECK(drained);
    CHECK(runtime.connections() == 0);
    auto got = master.datagrams();
    REQUIRE(got.size() == 2);
    CHECK(got[0] == "READY=1\nSTATUS=accepting on http (fd 3)\n");
    CHECK(got[1] == "STOPPING=1\n");
}

TEST_CASE("Runtime: heartbeats from the loop every half WATCHDOG_USEC") {
    FakeMaster master;
    ::setenv("WATCHDOG_USEC", "20000", 1);
    Runtime runtime(no_signals());
    CHECK(runtime.heartbeat_interval() == 10000us);
    runtime.on_accept([&](AcceptedSocket) { runtime.stop(); });
    std::thread client([&] {
        std::this_thread::sleep_for(150ms);
        ::close(master.connect_client());
    });
    CHECK(runtime.run() == 0);
    client.join();
    int beats = master.count_prefix("WATCHDOG=1\n");
    CHECK(beats >= 5);
    CHECK(beats <= 20);
    bool has_fields = false;
    for (const auto& d : master.datagrams()) {
        has_fields |= d.find("X_CLUSTERD_LOOP_LAG_US=") != std::string::npos &&
                      d.find("X_CLUSTERD_CONNECTIONS=") != std::string::npos;
    }
    CHECK(has_fields);
}

TEST_CASE("Runtime: the drain timeout ends a stop that connections would hold up") {
    FakeMaster master;
    RuntimeOptions opts = no_signals();
    opts.drain_timeout = 50ms;
    Runtime runtime(opts);
    std::vector<AcceptedSocket> open;
    runtime.on_accept([&](AcceptedSocket s) {
        open.push_back(std::move(s));
        runtime.stop();
    });
    std::thread client([&] { ::close(master.connect_client()); });
    auto start = std::chrono::steady_clock::now();
    CHECK(runtime.run() == 0);
    client.join();
    CHECK(std::chrono::steady_clock::now() - start >= 50ms);
    CHECK(runtime.connections() == 1);
}

TEST_CASE("Runtime: SIGUSR1 and SIGHUP are not fatal, SIGTERM stops with 0") {
    FakeMaster master;
    Runtime runtime(RuntimeOptions{});
    runtime.on_accept([](AcceptedSocket) {});
    std::thread sender([] {
        std::this_thread::sleep_for(50ms);
        ::kill(::getpid(), SIGUSR1);
        ::kill(::getpid(), SIGHUP);
        std::this_thread::sleep_for(50ms);
        ::kill(::getpid(), SIGTERM);
    });
    CHECK(runtime.run() == 0);
    sender.join();
    CHECK(master.count_prefix("STOPPING=1") == 1);
}

TEST_CASE("Runtime: a malformed --listen address is refused") {
    ::unsetenv("LISTEN_PID");
    RuntimeOptions opts = no_signals();
    opts.listen = "no-port";
    CHECK_THROWS_AS(Runtime{opts}, std::invalid_argument);
}

#include "worker/notify.hpp"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "common/notify.hpp"

using namespace clusterd::worker;
using std::chrono::microseconds;

TEST_CASE("parse_watchdog_env: WATCHDOG_USEC for this process only") {
    CHECK_FALSE(parse_watchdog_env({}, 10));
    CHECK(parse_watchdog_env({"200000", nullptr}, 10) == microseconds(200000));
    CHECK(parse_watchdog_env({"200000", "10"}, 10) == microseconds(200000));
    CHECK_FALSE(parse_watchdog_env({"200000", "11"}, 10));
    CHECK_FALSE(parse_watchdog_env({"0", nullptr}, 10));
    CHECK_FALSE(parse_watchdog_env({"-5", nullptr}, 10));
    CHECK_FALSE(parse_watchdog_env({"1s", nullptr}, 10));
    CHECK_FALSE(parse_watchdog_env({"", nullptr}, 10));
    CHECK_FALSE(parse_watchdog_env({"200000", "pid"}, 10));
}

TEST_CASE("format_watchdog: WATCHDOG=1 then the clusterd figures, as the master parses them") {
    std::string msg = format_watchdog({{"LOOP_LAG_US", 42}, {"CONNECTIONS", 7}});
    CHECK(msg == "WATCHDOG=1\nX_CLUSTERD_LOOP_LAG_US=42\nX_CLUSTERD_CONNECTIONS=7\n");
    auto parsed = clusterd::parse_notify(msg);
    CHECK(parsed.watchdog);
    CHECK(parsed.fields.at("LOOP_LAG_US") == "42");
    CHECK(parsed.fields.at("CONNECTIONS") == "7");
}

TEST_CASE("notify helpers: datagrams reach $NOTIFY_SOCKET, nothing happens without it") {
    ::unsetenv("NOTIFY_SOCKET");
    CHECK(notify_ready() == 0);

    int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(sock >= 0);
    std::string name = "@clusterd-test-notify-" + std::to_string(::getpid());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::copy(name.begin() + 1, name.end(), addr.sun_path + 1);  // abstract: leading NUL
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    REQUIRE(::bind(sock, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);

    auto receive = [&] {
        char buf[512];
        ssize_t n = ::recv(sock, buf, sizeof buf, MSG_DONTWAIT);
        return n < 0 ? std::string("<nothing>") : std::string(buf, static_cast<std::size_t>(n));
    };
    CHECK(notify_ready("accepting on http") == 0);
    CHECK(receive() == "READY=1\nSTATUS=accepting on http\n");
    CHECK(notify_status("two\nlines") == 0);
    CHECK(receive() == "STATUS=two lines\n");
    CHECK(notify_stopping() == 0);
    CHECK(receive() == "STOPPING=1\n");
    CHECK(notify_watchdog() == 0);
    CHECK(receive() == "WATCHDOG=1\n");
    CHECK(notify_fields({{"CONNECTIONS", 3}}) == 0);
    CHECK(receive() == "X_CLUSTERD_CONNECTIONS=3\n");

    ::unsetenv("NOTIFY_SOCKET");
    ::close(sock);
}

TEST_CASE("notify_ready waits for room in a full queue; a heartbeat does not") {
    int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(sock >= 0);
    std::string name = "@clusterd-test-notify-full-" + std::to_string(::getpid());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::copy(name.begin() + 1, name.end(), addr.sun_path + 1);
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    REQUIRE(::bind(sock, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);

    // Fill the receiver's queue (net.unix.max_dgram_qlen datagrams) until sends fail.
    int queued = 0;
    while (clusterd::notify_send(name, "X_CLUSTERD_FILL=1\n") == 0 && queued < 100000) ++queued;
    REQUIRE(queued < 100000);
    CHECK(notify_watchdog() == EAGAIN);

    std::thread reader([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        char buf[64];
        CHECK(::recv(sock, buf, sizeof buf, 0) > 0);
    });
    CHECK(notify_ready() == 0);
    reader.join();

    ::unsetenv("NOTIFY_SOCKET");
    ::close(sock);
}

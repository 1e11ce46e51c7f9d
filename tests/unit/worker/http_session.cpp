// HttpSession's timeouts on simulated time: the server's sweep is called with a chosen "now"
// while a real socket pair carries the bytes, so no test waits for a timeout to pass.
#include "worker/http_session.hpp"

#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <string>
#include <string_view>

#include "worker/http_server.hpp"

using namespace clusterd;
using namespace clusterd::worker;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Fixture {
    boost::asio::io_context io{1};
    HttpServer server{io, options()};
    int client = -1;

    static HttpOptions options() {
        HttpOptions o;
        o.header_timeout = 10s;
        o.request_timeout = 30s;
        o.idle_timeout = 60s;
        return o;
    }

    Fixture() {
        int fds[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
        client = fds[0];
        server.accept(AcceptedSocket{.fd = UniqueFd(fds[1]), .family = AF_UNIX, .token = {}});
        io.poll();
    }
    ~Fixture() {
        if (client >= 0) ::close(client);
        io.poll();
    }

    void send(std::string_view data) {
        REQUIRE(::send(client, data.data(), data.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(data.size()));
        io.poll();
    }

    // What the server sent so far, and whether it closed its side.
    std::string received(bool& closed) {
        io.poll();
        std::string out;
        char buf[4096];
        closed = false;
        for (;;) {
            ssize_t n = ::recv(client, buf, sizeof buf, 0);
            if (n > 0) {
                out.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            closed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
            return out;
        }
    }

    void sweep(Clock::time_point now) {
        server.sweep(now);
        io.poll();
    }
};

}  // namespace

TEST_CASE("http session: a head not complete within the header timeout gets 408 and a close") {
    Fixture f;
    auto t0 = Clock::now();
    f.send("GET / HTTP/1.1\r\nHost: x\r\n");
    f.sweep(t0);  // the sweep notices the first bytes: the head has 10 s from here
    bool closed = false;
    for (auto t : {t0 + 1s, t0 + 5s, t0 + 9s}) {
        f.send("X-Slow: 1\r\n");
        f.sweep(t);
        CHECK(f.received(closed).empty());
        CHECK_FALSE(closed);
    }
    f.sweep(t0 + 10s);
    std::string out = f.received(closed);
    CHECK(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    CHECK(out.find("\r\nConnection: close\r\n") != std::string::npos);
    CHECK(closed);  // the write side is shut: the client sees the end after the answer
    CHECK(f.server.timeouts() == 1);
    // More of the head after the 408 is never answered.
    f.send("\r\n");
    CHECK(f.received(closed).empty());
}

TEST_CASE("http session: a body not complete within the request timeout gets 408") {
    Fixture f;
    auto t0 = Clock::now();
    f.send("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab");
    f.sweep(t0);
    bool closed = false;
    f.sweep(t0 + 15s);  // past the header timeout: the head is complete, so nothing happens
    CHECK(f.received(closed).empty());
    CHECK_FALSE(closed);
    f.sweep(t0 + 31s);
    CHECK(f.received(closed).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    CHECK(closed);
}

TEST_CASE("http session: an idle keep-alive connection is closed without an answer") {
    Fixture f;
    auto t0 = Clock::now();
    f.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    bool closed = false;
    CHECK(f.received(closed).starts_with("HTTP/1.1 200 OK\r\n"));
    f.sweep(t0 + 20s);  // idle, past the header timeout: still open
    CHECK_FALSE(closed);
    f.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(f.received(closed).starts_with("HTTP/1.1 200 OK\r\n"));
    f.sweep(t0 + 61s);
    CHECK(f.received(closed).empty());
    CHECK(closed);
    CHECK(f.server.timeouts() == 0);
}

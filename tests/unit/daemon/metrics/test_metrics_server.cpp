// The metrics endpoint over real sockets, with the io_context run on this thread.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "daemon/metrics/metrics_server.hpp"

using namespace clusterd;

namespace {

UniqueFd connect_to(std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    return fd;
}

void send_all(int fd, const std::string& data) {
    REQUIRE(::send(fd, data.data(), data.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(data.size()));
}

// Runs the loop until the peer closes `fd`; returns what it sent.
std::string read_all(boost::asio::io_context& io, int fd) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
        io.poll();
        io.restart();
        char buf[4096];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) return out;
        if (n > 0) {
            out.append(buf, static_cast<std::size_t>(n));
        } else if (errno == ECONNRESET) {
            return out;
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    FAIL("no close within 5s; got: " << out);
    return out;
}

std::string request(boost::asio::io_context& io, std::uint16_t port, const std::string& text) {
    UniqueFd fd = connect_to(port);
    send_all(fd.get(), text);
    return read_all(io, fd.get());
}

std::string get(boost::asio::io_context& io, std::uint16_t port, const std::string& path,
                const std::string& method = "GET") {
    return request(io, port, method + " " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
}

}  // namespace

TEST_CASE("metrics server: /metrics, /healthz, 404, 405, HEAD") {
    boost::asio::io_context io;
    Health health;
    int scrapes = 0;
    MetricsServer server(
        io, "127.0.0.1:0",
        [&] {
            ++scrapes;
            return std::string("# HELP x y\n# TYPE x gauge\nx 1\n");
        },
        [&] { return health; });
    server.start();
    REQUIRE(server.port() != 0);
    CHECK(server.address() == "127.0.0.1:" + std::to_string(server.port()));

    std::string r = get(io, server.port(), "/metrics");
    CHECK(r.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") !=
          std::string::npos);
    CHECK(r.find("Connection: close\r\n") != std::string::npos);
    CHECK(r.ends_with("\r\n\r\n# HELP x y\n# TYPE x gauge\nx 1\n"));
    CHECK(scrapes == 1);

    r = get(io, server.port(), "/healthz");
    CHECK(r.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(r.ends_with("\r\n\r\nok\n"));
    health = {false, "web: 0 of 4 workers ready"};
    r = get(io, server.port(), "/healthz?verbose=1");
    CHECK(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    CHECK(r.ends_with("\r\n\r\nweb: 0 of 4 workers ready\n"));

    r = get(io, server.port(), "/metrics", "HEAD");
    CHECK(r.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(r.find("Content-Length: 30\r\n") != std::string::npos);
    CHECK(r.ends_with("\r\n\r\n"));

    CHECK(get(io, server.port(), "/").starts_with("HTTP/1.1 404 "));
    r = get(io, server.port(), "/metrics", "POST");
    CHECK(r.starts_with("HTTP/1.1 405 "));
    CHECK(r.find("Allow: GET, HEAD\r\n") != std::string::npos);
    CHECK(server.requests() == 6);
    io.poll();
    CHECK(server.connections() == 0);
}

TEST_CASE("metrics server: bad and oversized requests, a throwing callback") {
    boost::asio::io_context io;
    MetricsServerOptions opts;
    opts.max_request_bytes = 512;
    MetricsServer server(
        io, "127.0.0.1:0", []() -> std::string { throw std::runtime_error("boom"); },
        [] { return Health{}; }, opts);
    server.start();
    CHECK(request(io, server.port(), "NOT HTTP\r\n\r\n").starts_with("HTTP/1.1 400 "));
    std::string big = "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n";
    CHECK(request(io, server.port(), big).starts_with("HTTP/1.1 431 "));
    std::string r = get(io, server.port(), "/metrics");
    CHECK(r.starts_with("HTTP/1.1 500 "));
    CHECK(r.ends_with("internal error: boom\n"));
}

TEST_CASE("metrics server: silent clients are closed at the timeout; the limit holds") {
    boost::asio::io_context io;
    MetricsServerOptions opts;
    opts.timeout = std::chrono::milliseconds(100);
    opts.max_connections = 2;
    MetricsServer server(
        io, "127.0.0.1:0", [] { return std::string("x 1\n"); }, [] { return Health{}; }, opts);
    server.start();
    UniqueFd a = connect_to(server.port());
    UniqueFd b = connect_to(server.port());
    for (int i = 0; i < 20; ++i) {
        io.poll();
        io.restart();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(server.connections() == 2);
    // At the limit a new connection sheds the oldest silent one (a) and is served.
    UniqueFd c = connect_to(server.port());
    send_all(c.get(), "GET /metrics HTTP/1.1\r\n\r\n");
    CHECK(read_all(io, c.get()).ends_with("\r\n\r\nx 1\n"));
    CHECK(server.stats().shed == 1);
    CHECK(read_all(io, a.get()).empty());
    auto start = std::chrono::steady_clock::now();
    CHECK(read_all(io, b.get()).empty());  // b at its timeout
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
    CHECK(server.stats().header_timeouts == 1);
    io.poll();
    CHECK(server.connections() == 0);
}

TEST_CASE("metrics server: address errors") {
    boost::asio::io_context io;
    auto make = [&](const char* address) {
        MetricsServer s(
            io, address, [] { return std::string(); }, [] { return Health{}; });
    };
    CHECK_THROWS_AS(make("nonsense"), std::invalid_argument);
    CHECK_THROWS_AS(make("localhost:9464"), std::invalid_argument);
    CHECK_THROWS_AS(make("127.0.0.1:99999"), std::invalid_argument);
    CHECK_NOTHROW(make("[::1]:0"));
    MetricsServer first(
        io, "127.0.0.1:0", [] { return std::string(); }, [] { return Health{}; });
    std::string taken = "127.0.0.1:" + std::to_string(first.port());
    CHECK_THROWS_WITH_AS(make(taken.c_str()),
                         doctest::Contains(("bind(" + taken + ") failed").c_str()),
                         std::system_error);
}

TEST_CASE("metrics server: slowloris connections are shed and /healthz stays prompt") {
    boost::asio::io_context io;
    MetricsServerOptions opts;
    opts.max_connections = 8;
    opts.header_timeout = std::chrono::milliseconds(1000);
    MetricsServer server(
        io, "127.0.0.1:0", [] { return std::string("x 1\n"); }, [] { return Health{}; }, opts);
    server.start();
    // 40 clients that each send one byte of a request head every 50 ms or so, reconnecting
    // when closed, and a probe between their rounds that must be answered within 500 ms.
    std::vector<UniqueFd> slow;
    for (int i = 0; i < 40; ++i) slow.push_back(connect_to(server.port()));
    std::chrono::steady_clock::duration worst{};
    for (int probe = 0; probe < 30; ++probe) {
        for (auto& fd : slow) {
            if (::send(fd.get(), "G", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
                fd = connect_to(server.port());
        }
        auto t0 = std::chrono::steady_clock::now();
        std::string r = get(io, server.port(), "/healthz");
        auto took = std::chrono::steady_clock::now() - t0;
        worst = std::max(worst, took);
        CHECK(r.ends_with("\r\n\r\nok\n"));
        for (int i = 0; i < 50; ++i) {
            io.poll();
            io.restart();
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        CHECK(server.connections() <= opts.max_connections);
    }
    CHECK(worst < std::chrono::milliseconds(500));
    CHECK(server.stats().shed > 0);
}

TEST_CASE("metrics server: a request head not complete within header_timeout is closed") {
    boost::asio::io_context io;
    MetricsServerOptions opts;
    opts.header_timeout = std::chrono::milliseconds(100);
    MetricsServer server(
        io, "127.0.0.1:0", [] { return std::string("x 1\n"); }, [] { return Health{}; }, opts);
    server.start();
    for (int i = 0; i < 5; ++i) {
        UniqueFd fd = connect_to(server.port());
        send_all(fd.get(), "GET /healthz HTTP/1.1\r\n");
        auto t0 = std::chrono::steady_clock::now();
        CHECK(read_all(io, fd.get()).empty());
        CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(90));
    }
    CHECK(server.stats().header_timeouts == 5);
}

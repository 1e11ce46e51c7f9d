#include "worker/address.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <system_error>

using namespace clusterd::worker;

TEST_CASE("parse_host_port: accepted forms") {
    auto v4 = parse_host_port("127.0.0.1:8080");
    REQUIRE(v4);
    CHECK(v4->host == "127.0.0.1");
    CHECK(v4->port == 8080);
    auto v6 = parse_host_port("[::1]:443");
    REQUIRE(v6);
    CHECK(v6->host == "::1");
    CHECK(v6->port == 443);
    auto name = parse_host_port("localhost:65535");
    REQUIRE(name);
    CHECK(name->host == "localhost");
}

TEST_CASE("parse_host_port: rejected forms") {
    for (const char* bad : {"", "8080", ":8080", "host:", "host:0", "host:65536", "host:80x",
                            "::1:80", "[::1]80", "[::1]:", "[]:80", "host:-1"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_host_port(bad));
    }
}

TEST_CASE("bind_listener: a listening, non-blocking, close-on-exec socket") {
    auto fd = bind_listener({"127.0.0.1", 0}, 16);  // port 0: any free port
    REQUIRE(fd);
    int listening = 0;
    socklen_t len = sizeof listening;
    REQUIRE(::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0);
    CHECK(listening == 1);
    CHECK((::fcntl(fd.get(), F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("bind_listener: the error names the call and the address") {
    try {
        bind_listener({"203.0.113.1", 8080}, 16);  // TEST-NET-3: not a local address
        FAIL("bound a foreign address");
    } catch (const std::system_error& e) {
        CHECK(std::string(e.what()).find("bind()") != std::string::npos);
        CHECK(std::string(e.what()).find("203.0.113.1:8080") != std::string::npos);
    }
}

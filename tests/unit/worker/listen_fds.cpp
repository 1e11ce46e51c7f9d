#include "worker/listen_fds.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

using namespace clusterd::worker;

TEST_CASE("parse_listen_env: absent or addressed to another process means no sockets") {
    CHECK(parse_listen_env({}, 100).empty());
    CHECK(parse_listen_env({"100", nullptr, nullptr}, 100).empty());
    CHECK(parse_listen_env({"101", "2", "a:b"}, 100).empty());
    CHECK(parse_listen_env({"100", "0", nullptr}, 100).empty());
}

TEST_CASE("parse_listen_env: fds from 3 with their names") {
    auto fds = parse_listen_env({"100", "3", "http:admin:metrics"}, 100);
    REQUIRE(fds.size() == 3);
    CHECK(fds[0].fd == 3);
    CHECK(fds[0].name == "http");
    CHECK(fds[1].fd == 4);
    CHECK(fds[1].name == "admin");
    CHECK(fds[2].fd == 5);
    CHECK(fds[2].name == "metrics");
}

TEST_CASE("parse_listen_env: without LISTEN_FDNAMES every fd is \"unknown\"") {
    auto fds = parse_listen_env({"100", "2", nullptr}, 100);
    REQUIRE(fds.size() == 2);
    CHECK(fds[0].name == "unknown");
    CHECK(fds[1].name == "unknown");
}

TEST_CASE("parse_listen_env: empty names are kept") {
    auto fds = parse_listen_env({"100", "2", ":b"}, 100);
    REQUIRE(fds.size() == 2);
    CHECK(fds[0].name.empty());
    CHECK(fds[1].name == "b");
}

TEST_CASE("parse_listen_env: malformed values are errors") {
    CHECK_THROWS_AS(parse_listen_env({"x", "1", nullptr}, 100), std::invalid_argument);
    CHECK_THROWS_AS(parse_listen_env({"-5", "1", nullptr}, 100), std::invalid_argument);
    CHECK_THROWS_AS(parse_listen_env({"100", "two", nullptr}, 100), std::invalid_argument);
    CHECK_THROWS_AS(parse_listen_env({"100", "-1", nullptr}, 100), std::invalid_argument);
    CHECK_THROWS_AS(parse_listen_env({"100", "1 ", nullptr}, 100), std::invalid_argument);
    CHECK_THROWS_AS(parse_listen_env({"100", "2", "only-one"}, 100), std::invalid_argument);
    CHECK_THROWS_AS(parse_listen_env({"100", "1", "a:b"}, 100), std::invalid_argument);
}

TEST_CASE("listen_fds: takes fd 3, marks it close-on-exec and clears the environment") {
    // Park whatever the test runner has on fd 3 and put a real socket there.
    int saved = ::fcntl(3, F_DUPFD_CLOEXEC, 200);
    int sock = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(sock >= 0);
    if (sock != 3) {
        REQUIRE(::dup2(sock, 3) == 3);  // dup2 leaves FD_CLOEXEC clear
        ::close(sock);
    }
    REQUIRE((::fcntl(3, F_GETFD) & FD_CLOEXEC) == 0);

    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("LISTEN_FDNAMES", "http", 1);
    auto fds = listen_fds();
    REQUIRE(fds.size() == 1);
    CHECK(fds[0].fd == 3);
    CHECK(fds[0].name == "http");
    CHECK((::fcntl(3, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(std::getenv("LISTEN_PID") == nullptr);
    CHECK(std::getenv("LISTEN_FDS") == nullptr);
    CHECK(std::getenv("LISTEN_FDNAMES") == nullptr);
    CHECK(listen_fds().empty());  // a second call finds nothing

    ::close(3);
    if (saved >= 0) {
        ::dup2(saved, 3);
        ::close(saved);
    }
}

TEST_CASE("listen_fds: a descriptor that is not open is an error, and the env is still cleared") {
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    int saved = ::fcntl(3, F_DUPFD_CLOEXEC, 200);
    ::close(3);
    CHECK_THROWS_AS(listen_fds(), std::invalid_argument);
    CHECK(std::getenv("LISTEN_PID") == nullptr);
    if (saved >= 0) {
        ::dup2(saved, 3);
        ::close(saved);
    }
}

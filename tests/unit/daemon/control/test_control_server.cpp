// The control server over a real unix socket, with the io_context run on this thread: its
// connection limit, timeouts, request size, one reply at a time, and accept() at the
// descriptor limit.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "daemon/control/control_server.hpp"

using namespace clusterd;
using namespace std::chrono_literals;

namespace control_server_test {

struct Fixture {
    Fixture(ControlServerOptions options = {}, std::string reply_text = "") {
        char tmpl[] = "/tmp/clusterd-control-test-XXXXXX";
        dir = ::mkdtemp(tmpl);
        path = dir + "/control.sock";
        server = std::make_unique<ControlServer>(
            io, path, "",
            [this, reply_text](const ControlRequest& req, std::shared_ptr<Reporter> r) {
                ++handled;
                if (hold) return held.push_back(std::move(r));
                nlohmann::json reply = {{"ok", true}, {"message", reply_text}};
                reply["cmd"] = std::string(to_string(req.cmd));
                r->finish(reply);
            },
            options);
        server->start();
    }
    ~Fixture() {
        held.clear();
        server->close();
        std::filesystem::remove_all(dir);
    }

    UniqueFd connect() {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, path.c_str());
        REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        return fd;
    }

    void run_for(std::chrono::milliseconds d) {
        auto end = std::chrono::steady_clock::now() + d;
        while (std::chrono::steady_clock::now() < end) {
            io.restart();
            io.run_for(2ms);
        }
    }

    // Runs the loop until the peer closes `fd` (or 5 s); returns what it sent.
    std::string read_to_close(int fd) {
        std::string out;
        auto deadline = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < deadline) {
            io.restart();
            io.poll();
            char buf[65536];
            ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) return out;
            if (n > 0) {
                out.append(buf, static_cast<std::size_t>(n));
            } else {
                std::this_thread::sleep_for(1ms);
            }
        }
        FAIL("no close within 5s; got: " << out);
        return out;
    }

    // Runs the loop until `fd` has `lines` complete lines (or 20 s); returns them.
    std::string read_lines(int fd, std::size_t lines) {
        std::string out;
        std::size_t seen = 0;
        auto deadline = std::chrono::steady_clock::now() + 20s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (seen >= lines) return out;
            io.restart();
            std::size_t ran = io.poll();
            char buf[65536];
            ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                seen += static_cast<std::size_t>(std::count(buf, buf + n, '\n'));
                out.append(buf, static_cast<std::size_t>(n));
            } else if (n == 0) {
                break;
            } else if (ran == 0) {
                std::this_thread::sleep_for(1ms);
            }
        }
        FAIL("wanted " << lines << " lines; got: " << out.substr(0, 500));
        return out;
    }

    static void send_all(int fd, const std::string& data) {
        REQUIRE(::send(fd, data.data(), data.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(data.size()));
    }

    boost::asio::io_context io;
    std::string dir;
    std::string path;
    std::unique_ptr<ControlServer> server;
    int handled = 0;
    bool hold = false;
    std::vector<std::shared_ptr<Reporter>> held;
};

}  // namespace control_server_test

using control_server_test::Fixture;

TEST_CASE("control server: a request, a bad line, a long line") {
    Fixture f;
    UniqueFd c = f.connect();
    f.send_all(c.get(), "{\"cmd\":\"version\"}\n\n{\"cmd\":\"nope\"}\n");
    std::string r = f.read_lines(c.get(), 2);
    CHECK(r.starts_with(R"({"cmd":"version","message":"","ok":true})"
                        "\n"));
    CHECK(r.find(R"({"message":"unknown command \"nope\" (known: )") != std::string::npos);
    // The connection survives a bad line.
    f.send_all(c.get(), "{\"cmd\":\"status\"}\n");
    CHECK(f.read_lines(c.get(), 1).starts_with(R"({"cmd":"status")"));
    CHECK(f.handled == 2);
    CHECK(f.server->stats().bad_requests == 1);

    UniqueFd big = f.connect();
    std::string line(70 * 1024, 'x');
    f.send_all(big.get(), line);
    CHECK(f.read_to_close(big.get()) ==
          R"({"message":"request line longer than 65536 bytes","ok":false})"
          "\n");
    CHECK(f.server->stats().oversized == 1);
    CHECK(f.handled == 2);
}

TEST_CASE("control server: pipelined requests never read hold one reply, in order afterwards") {
    // Replies of 32 KiB: a few fill the socket buffer; the rest must wait unread in the kernel,
    // not in the master.
    Fixture f({}, std::string(32 * 1024, 'r'));
    UniqueFd c = f.connect();
    std::string batch;
    for (int i = 0; i < 200; ++i) batch += "{\"cmd\":\"status\"}\n";
    ::send(c.get(), batch.data(), batch.size(), MSG_NOSIGNAL);
    f.run_for(300ms);
    int handled_while_unread = f.handled;
    CHECK(handled_while_unread >= 1);
    CHECK(handled_while_unread < 20);  // what the socket buffers hold, not 200
    f.run_for(200ms);
    CHECK(f.handled == handled_while_unread);
    // Read everything: every request is answered, in order.
    std::string all = f.read_lines(c.get(), 200);
    CHECK(f.handled == 200);
    CHECK(std::count(all.begin(), all.end(), '\n') == 200);
}

TEST_CASE("control server: at the limit the idle longest is shed, repeatedly; busy ones stay") {
    ControlServerOptions o;
    o.max_connections = 4;
    Fixture f(o);
    std::vector<UniqueFd> idle;
    for (int i = 0; i < 4; ++i) {
        idle.push_back(f.connect());
        f.run_for(5ms);
    }
    CHECK(f.server->stats().open == 4);
    for (int round = 0; round < 50; ++round) {
        CAPTURE(round);
        UniqueFd fresh = f.connect();
        f.send_all(fresh.get(), "{\"cmd\":\"version\"}\n");
        CHECK(f.read_lines(fresh.get(), 1).starts_with(R"({"cmd":"version")"));
        // The oldest idle connection was told why, and closed.
        std::string last = f.read_to_close(idle.front().get());
        CHECK(last.find("this one was idle the longest") != std::string::npos);
        idle.erase(idle.begin());
        idle.push_back(std::move(fresh));
        CHECK(f.server->stats().open <= 4);
    }
    CHECK(f.server->stats().shed_idle == 50);

    // Every connection busy: a new one is refused with a reason, nothing is shed.
    f.hold = true;
    for (auto& c : idle) f.send_all(c.get(), "{\"cmd\":\"reload\"}\n");
    f.run_for(20ms);
    CHECK(f.held.size() == 4);
    UniqueFd extra = f.connect();
    CHECK(f.read_to_close(extra.get()).find("too many control connections (4 open, all busy)") !=
          std::string::npos);
    CHECK(f.server->stats().refused_busy == 1);
    CHECK(f.server->stats().shed_idle == 50);
    for (auto& r : f.held) r->finish({{"ok", true}});
    for (auto& c : idle) CHECK(f.read_lines(c.get(), 1) == "{\"ok\":true}\n");
}

TEST_CASE("control server: idle, request and write timeouts") {
    ControlServerOptions o;
    o.idle_timeout = 150ms;
    o.request_timeout = 150ms;
    o.write_timeout = 150ms;
    Fixture f(o, std::string(256 * 1024, 'r'));

    for (int round = 0; round < 5; ++round) {
        auto start = std::chrono::steady_clock::now();
        UniqueFd silent = f.connect();
        CHECK(f.read_to_close(silent.get()).empty());
        CHECK(std::chrono::steady_clock::now() - start >= 140ms);

        // A request that trickles in: one byte every 20 ms never completes in time.
        UniqueFd slow = f.connect();
        std::string got;
        for (int i = 0; i < 30; ++i) {
            if (::send(slow.get(), "{", 1, MSG_NOSIGNAL) != 1) break;
            f.run_for(20ms);
            char buf[256];
            ssize_t n = ::recv(slow.get(), buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) got.append(buf, static_cast<std::size_t>(n));
            if (n == 0) break;
        }
        got += f.read_to_close(slow.get());
        CHECK(got.find("request line not complete within 150 ms") != std::string::npos);

        // A reply the client never reads.
        UniqueFd deaf = f.connect();
        f.send_all(deaf.get(), "{\"cmd\":\"status\"}\n");
        f.run_for(400ms);
        char buf[1];
        CHECK(::recv(deaf.get(), buf, 0, MSG_DONTWAIT) <= 0);
    }
    const auto& s = f.server->stats();
    CHECK(s.idle_timeouts == 5);
    CHECK(s.request_timeouts == 5);
    CHECK(s.write_timeouts == 5);
    CHECK(s.open == 0);
}

TEST_CASE("control server: out of descriptors, accept neither spins nor stops") {
    Fixture f;
    // Connections wait in the backlog; then no descriptor is left for accept().
    std::vector<UniqueFd> clients;
    for (int i = 0; i < 10; ++i) clients.push_back(f.connect());
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    int probe = ::dup(0);
    REQUIRE(probe >= 0);
    ::close(probe);
    rlimit low = old;
    low.rlim_cur = static_cast<rlim_t>(probe);  // every descriptor from `probe` on is refused
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    std::size_t handlers = 0;
    auto end = std::chrono::steady_clock::now() + 300ms;
    while (std::chrono::steady_clock::now() < end) {
        f.io.restart();
        handlers += f.io.run_for(5ms);
    }
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    const auto& s = f.server->stats();
    CHECK(s.accept_shortages >= 1);
    // Each waiting connection was closed with the spare descriptor, not retried forever.
    CHECK(s.accept_shed + s.accepted <= 10);
    CHECK(handlers < 200);
    CHECK(s.accept_shed == 10);
    for (auto& c : clients) {
        char buf[16];
        CHECK(::recv(c.get(), buf, sizeof buf, MSG_DONTWAIT) == 0);  // closed, not left waiting
    }
    // Descriptors again: the server serves.
    UniqueFd c = f.connect();

    f.send_all(c.get(), "{\"cmd\":\"version\"}\n");
    CHECK(f.read_lines(c.get(), 1).starts_with(R"({"cmd":"version")"));
}

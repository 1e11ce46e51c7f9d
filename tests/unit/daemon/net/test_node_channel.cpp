// The master's end of a Node IPC channel, against a peer that writes what a Node worker (or a
// hostile one) writes: real socketpairs on a real io_context.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/net/node_channel.hpp"

using namespace clusterd;
using nlohmann::json;

namespace {

struct Peer {
    Peer() {
        auto [ch, theirs] = NodeChannel::open(io, "web[0]", counters, handlers());
        channel = std::move(ch);
        worker = std::move(theirs);
        channel->start();
    }
    NodeChannel::Handlers handlers() {
        NodeChannel::Handlers h;
        h.notify = [this](const NotifyMessage& m) { notes.push_back(m); };
        h.query_server = [this](const NodeServerQuery& q) { queries.push_back(q); };
        h.listening = [this](const NodeServerQuery& q) { listening.push_back(q); };
        return h;
    }
    void send(const std::string& bytes, int fd = -1) {
        iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        if (fd >= 0) {
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
        }
        REQUIRE(::sendmsg(worker.get(), &msg, 0) == static_cast<ssize_t>(bytes.size()));
        io.poll();
        io.restart();
    }
    /// The lines the master wrote, and the fds that came with them.
    std::vector<std::string> read_lines(std::vector<int>* fds = nullptr) {
        io.poll();
        io.restart();
        std::vector<std::string> lines;
        for (;;) {
            char buf[65536];
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
            iovec iov{buf, sizeof buf};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            ssize_t n = ::recvmsg(worker.get(), &msg, MSG_DONTWAIT);
            if (n <= 0) break;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
                if (fds)
                    fds->push_back(fd);
                else
                    ::close(fd);
            }
            pending.append(buf, static_cast<std::size_t>(n));
        }
        for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
            lines.push_back(pending.substr(0, nl));
            pending.erase(0, nl + 1);
        }
        return lines;
    }

    boost::asio::io_context io;
    NodeChannelCounters counters;
    std::unique_ptr<NodeChannel> channel;
    UniqueFd worker;
    std::vector<NotifyMessage> notes;
    std::vector<NodeServerQuery> queries;
    std::vector<NodeServerQuery> listening;
    std::string pending;
};

bool is_open(int fd) {
    return ::fcntl(fd, F_GETFD) >= 0;
}

}  // namespace

TEST_CASE("Node channel: 'ready', 'heartbeat' and {notify} are notify messages") {
    Peer p;
    p.send("\"ready\"\n\"heartbeat\"\n{\"notify\":\"STATUS=warming\\nX_CLUSTERD_A=1\"}\n");
    REQUIRE(p.notes.size() == 3);
    CHECK(p.notes[0].ready);
    CHECK(p.notes[1].watchdog);
    CHECK(p.notes[2].status == "warming");
    CHECK(p.notes[2].fields.at("A") == "1");
    // A line may come in pieces.
    p.send("\"rea");
    CHECK(p.notes.size() == 3);
    p.send("dy\"\n");
    CHECK(p.notes.size() == 4);
    CHECK(p.counters.messages == 4);
}

TEST_CASE("Node channel: queryServer gets the socket on its line; listening is reported") {
    Peer p;
    p.send(R"({"cmd":"NODE_CLUSTER","act":"online","seq":0})"
           "\n"
           R"({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,)"
           R"("port":8080,"addressType":4,"backlog":0,"seq":1})"
           "\n");
    CHECK(p.channel->online());
    REQUIRE(p.queries.size() == 1);
    const NodeServerQuery& q = p.queries[0];
    CHECK(q.seq == 1);
    CHECK_FALSE(q.address);
    CHECK(q.port == 8080);
    CHECK(q.describe() == ":8080");
    int sock = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(sock >= 0);
    p.channel->give_server(q, sock);
    std::vector<int> fds;
    auto lines = p.read_lines(&fds);
    REQUIRE(lines.size() == 1);
    REQUIRE(fds.size() == 1);
    struct stat a {
    }, b{};
    REQUIRE(::fstat(sock, &a) == 0);
    REQUIRE(::fstat(fds[0], &b) == 0);
    CHECK(a.st_ino == b.st_ino);  // the same socket
    CHECK(is_open(sock));         // the master keeps its own
    json reply = json::parse(lines[0]);
    CHECK(reply["cmd"] == "NODE_HANDLE");
    CHECK(reply["type"] == "net.Native");
    CHECK(reply["msg"]["cmd"] == "NODE_CLUSTER");
    CHECK(reply["msg"]["ack"] == 1);
    CHECK(reply["msg"]["errno"] == 0);
    CHECK(reply["msg"]["key"] == "null:8080:4:undefined:0");
    ::close(fds[0]);
    // A NACK (the handle did not arrive) gets it again, with the socket.
    p.send("{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
    fds.clear();
    lines = p.read_lines(&fds);
    REQUIRE(lines.size() == 1);
    CHECK(fds.size() == 1);
    for (int fd : fds) ::close(fd);
    p.send(
        "{\"cmd\":\"NODE_HANDLE_ACK\"}\n{\"cmd\":\"NODE_CLUSTER\",\"act\":\"listening\","
        "\"address\":\"127.0.0.1\",\"port\":8080,\"addressType\":4,\"seq\":2}\n");
    REQUIRE(p.listening.size() == 1);
    CHECK(p.listening[0].describe() == "127.0.0.1:8080");
    // An error answer carries no fd and the errno.
    p.channel->refuse_server(q, -99);
    fds.clear();
    lines = p.read_lines(&fds);
    REQUIRE(lines.size() == 1);
    CHECK(fds.empty());
    CHECK(json::parse(lines[0])["errno"] == -99);
    ::close(sock);
}

TEST_CASE("Node channel: hostile input is counted and dropped, the channel goes on") {
    Peer p;
    // Not JSON; a deep nesting; binary; a line over the limit; a handle sent to the master.
    p.send("not json\n");
    p.send(std::string(10000, '[') + "\n");
    p.send(std::string("\x01\xff\xfe\n", 4));
    p.send(std::string(kNodeMaxLine + 10, 'x'));
    p.send(std::string(100, 'x') + "\n\"ready\"\n");
    // Valid, and nested deep (a recursive parser or destructor would overflow its stack).
    p.send(std::string(30000, '[') + std::string(30000, ']') + "\n");
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    p.send("{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{}}\n", fds[0]);
    ::close(fds[0]);
    CHECK(p.counters.malformed == 4);
    CHECK(p.counters.handles_closed == 1);
    REQUIRE(p.notes.size() == 1);  // the 'ready' after the long line
    CHECK(p.notes[0].ready);
    // The master kept no copy of the fd: the pipe's read end is closed everywhere.
    pollfd pfd{fds[1], POLLOUT, 0};
    REQUIRE(::poll(&pfd, 1, 0) == 1);
    CHECK((pfd.revents & POLLERR) != 0);
    ::close(fds[1]);
    // The handle was acknowledged (else the worker queues what it sends after it).
    auto lines = p.read_lines();
    REQUIRE(lines.size() == 1);
    CHECK(json::parse(lines[0])["cmd"] == "NODE_HANDLE_ACK");
    // Unknown cluster acts are named, not fatal; the app's own messages are ignored.
    p.send("{\"cmd\":\"NODE_CLUSTER\",\"act\":\"fromTheFuture\",\"seq\":9}\n{\"hello\":1}\n5\n");
    CHECK(p.queries.empty());
    p.send("\"heartbeat\"\n");
    CHECK(p.notes.size() == 2);
}

TEST_CASE("Node channel: what the master writes is always one JSON value a line") {
    Peer p;
    p.channel->send_message("\"shutdown\"");
    p.channel->send_message("not json");  // never written
    NodeServerQuery q;
    q.seq = 3;
    q.key = std::string("bad\xff\n") + "key";  // from a worker: invalid UTF-8, a newline
    p.channel->refuse_server(q, -99);
    auto lines = p.read_lines();
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == "\"shutdown\"");
    CHECK_FALSE(json::parse(lines[1], nullptr, false).is_discarded());
}

TEST_CASE("Node channel: disconnect() runs its callback when the worker closes its end") {
    Peer p;
    bool closed = false;
    p.channel->disconnect([&] { closed = true; });
    auto lines = p.read_lines();
    REQUIRE(lines.size() == 1);
    json m = json::parse(lines[0]);
    CHECK(m["cmd"] == "NODE_CLUSTER");
    CHECK(m["act"] == "disconnect");
    CHECK_FALSE(closed);
    p.worker.reset();
    p.io.poll();
    CHECK(closed);
    CHECK_FALSE(p.channel->connected());
    bool again = false;
    p.channel->disconnect([&] { again = true; });
    CHECK(again);  // closed already: at once
}

// The master's notify sockets, with real sockets on a real io_context, real processes of
// another uid, and the warning limiter on simulated time.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/net/notify_receiver.hpp"

using namespace clusterd;
using namespace std::chrono_literals;

namespace {

constexpr uid_t kNobody = 65534;

struct TempDir {
    TempDir() {
        char tmpl[] = "/tmp/cdn-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::string path;
};

struct Got {
    std::vector<std::pair<pid_t, NotifyMessage>> messages;
    NotifySocket::Handler handler() {
        return [this](const NotifySender& s, const NotifyMessage& m) {
            messages.emplace_back(s.pid, m);
        };
    }
};

/// Send `text` to the unix datagram socket at `path`; 0 or errno.
int send_to(const std::string& path, const std::string& text) {
    return notify_send(path, text);
}

/// errno of a send from a child running as uid `uid` (setuid), or -1 if it could not switch.
int send_as(uid_t uid, const std::string& path, const std::string& text) {
    pid_t pid = ::fork();
    if (pid == 0) {
        if (::setgid(uid) < 0 || ::setuid(uid) < 0) ::_exit(255);
        ::_exit(notify_send(path, text) & 0xff);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 254;
    return code == 255 ? -1 : code;
}

}  // namespace

TEST_CASE("WarnLimiter lets a burst through per window, then reports what it held back") {
    using C = WarnLimiter::Clock;
    WarnLimiter lim(3, 10s);
    C::time_point t{1000s};
    int logged = 0;
    for (int i = 0; i < 1000; ++i) {
        auto v = lim.allow(t + std::chrono::milliseconds(i));  // 1000 warnings in 1 s
        logged += v.log;
        CHECK(v.suppressed_before == 0);
    }
    CHECK(logged == 3);
    CHECK(lim.suppressed() == 997);
    // Still within the window: nothing more.
    CHECK_FALSE(lim.allow(t + 9s).log);
    // The next window: the count of the previous one comes with the first warning.
    auto v = lim.allow(t + 10s);
    CHECK(v.log);
    CHECK(v.suppressed_before == 998);
    CHECK(lim.suppressed() == 0);
    // A quiet sender is never suppressed.
    for (int i = 1; i <= 100; ++i) CHECK(lim.allow(t + 10s + i * 10s).log);
}

TEST_CASE("NotifyDir: created 0711, stale sockets removed, a foreign or symlinked dir refused") {
    TempDir tmp;
    std::string dir = tmp.path + "/c.notify";
    if (::geteuid() == 0) {
        // In a directory other users cannot enter, a worker running as one of them could
        // not reach its socket.
        CHECK(NotifyDir::for_control(tmp.path + "/c.sock").starts_with("/run/clusterd/notify-"));
        CHECK(NotifyDir::for_control(tmp.path + "/c.sock") ==
              NotifyDir::for_control(tmp.path + "/c.sock"));
        CHECK(NotifyDir::for_control(tmp.path + "/c.sock") !=
              NotifyDir::for_control(tmp.path + "/d.sock"));
    }
    ::chmod(tmp.path.c_str(), 0755);
    CHECK(NotifyDir::for_control(tmp.path + "/c.sock") == dir);
    CHECK(NotifyDir::for_control(tmp.path + "/ctl") == tmp.path + "/ctl.notify");
    {
        NotifyDir d(dir);
        struct stat st {};
        REQUIRE(::stat(dir.c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0711);
        CHECK(st.st_uid == ::geteuid());
        ::close(::open((dir + "/17").c_str(), O_CREAT | O_WRONLY, 0600));  // a stale entry
    }
    CHECK(::access((dir + "/17").c_str(), F_OK) == 0);  // not empty: the dir stays
    {
        NotifyDir again(dir);
        CHECK(::access((dir + "/17").c_str(), F_OK) != 0);
    }
    CHECK(::access(dir.c_str(), F_OK) != 0);  // removed when empty
    // A symlink at the path is not followed.
    std::string link = tmp.path + "/l.notify";
    REQUIRE(::symlink(tmp.path.c_str(), link.c_str()) == 0);
    CHECK_THROWS_WITH_AS(NotifyDir{link}, doctest::Contains("cannot be opened"),
                         std::runtime_error);
    // Too long for a socket path under it.
    CHECK_THROWS_WITH_AS(NotifyDir{tmp.path + "/" + std::string(90, 'x')},
                         doctest::Contains("too long"), std::runtime_error);
    if (::geteuid() == 0) {
        std::string theirs = tmp.path + "/t.notify";
        REQUIRE(::mkdir(theirs.c_str(), 0777) == 0);
        REQUIRE(::chown(theirs.c_str(), kNobody, kNobody) == 0);
        CHECK_THROWS_WITH_AS(NotifyDir{theirs}, doctest::Contains("owned by uid 65534"),
                             std::runtime_error);
    }
}

TEST_CASE("NotifySocket: the worker's pid comes with each message; the file goes with it") {
    TempDir tmp;
    boost::asio::io_context io;
    NotifyDir dir(tmp.path + "/d");
    NotifyCounters counters;
    Got got;
    std::string path;
    {
        NotifySocket s(io, dir, "1", std::nullopt, std::nullopt, "p[0]", counters, got.handler());
        s.start();
        path = s.path();
        CHECK(path == tmp.path + "/d/1");
        struct stat st {};
        REQUIRE(::lstat(path.c_str(), &st) == 0);
        CHECK(S_ISSOCK(st.st_mode));
        CHECK((st.st_mode & 07777) == 0600);
        REQUIRE(send_to(path, "READY=1\nX_CLUSTERD_A=1") == 0);
        REQUIRE(send_to(path, std::string(kNotifyMaxDatagram + 1, 'x')) == 0);
        REQUIRE(send_to(path, "WATCHDOG=1") == 0);
        io.poll();
        REQUIRE(got.messages.size() == 2);
        CHECK(got.messages[0].first == ::getpid());
        CHECK(got.messages[0].second.ready);
        CHECK(got.messages[1].second.watchdog);
        CHECK(counters.oversized == 1);
    }
    CHECK(::access(path.c_str(), F_OK) != 0);  // unlinked with its socket
}

TEST_CASE("NotifySocket: drain() reads what is queued without the loop running") {
    TempDir tmp;
    boost::asio::io_context io;
    NotifyDir dir(tmp.path + "/d");
    NotifyCounters counters;
    Got got;
    NotifySocket s(io, dir, "2", std::nullopt, std::nullopt, "p[0]", counters, got.handler());
    s.start();
    for (int i = 0; i < 5; ++i) REQUIRE(send_to(s.path(), "WATCHDOG=1") == 0);
    s.drain();
    CHECK(got.messages.size() == 5);
    s.drain();  // nothing more queued: returns at once
    CHECK(got.messages.size() == 5);
}

TEST_CASE("a sender fills only its own worker's queue") {
    TempDir tmp;
    boost::asio::io_context io;
    NotifyDir dir(tmp.path + "/d");
    NotifyCounters counters;
    Got a_got, b_got;
    NotifySocket a(io, dir, "1", std::nullopt, std::nullopt, "p[0]", counters, a_got.handler());
    NotifySocket b(io, dir, "2", std::nullopt, std::nullopt, "p[1]", counters, b_got.handler());
    // Nobody reads (the master is stalled): flood a's socket until it refuses.
    int sent = 0;
    for (; sent < 10000 && send_to(a.path(), "X_CLUSTERD_FLOOD=1") == 0; ++sent) {
    }
    CHECK(sent < 10000);
    CHECK(send_to(a.path(), "WATCHDOG=1") == EAGAIN);
    // b's heartbeats, from 5 rounds of a stall, all get through.
    for (int i = 0; i < 5; ++i) CHECK(send_to(b.path(), "WATCHDOG=1") == 0);
    b.drain();
    CHECK(b_got.messages.size() == 5);
    a.drain();
    CHECK(static_cast<int>(a_got.messages.size()) == sent);
}

TEST_CASE("another uid cannot reach a worker's notify socket; the worker's uid can") {
    if (::geteuid() != 0) return;  // needs to switch uids
    TempDir tmp;
    ::chmod(tmp.path.c_str(), 0755);
    boost::asio::io_context io;
    NotifyDir dir(tmp.path + "/d");
    NotifyCounters counters;
    Got got;
    NotifySocket mine(io, dir, "1", std::nullopt, std::nullopt, "p[0]", counters, got.handler());
    for (int round = 0; round < 20; ++round)
        CHECK(send_as(kNobody, mine.path(), "WATCHDOG=1") == EACCES);
    mine.drain();
    CHECK(got.messages.empty());
    // A program running as nobody owns its socket: it can send, root still reads.
    NotifySocket theirs(io, dir, "2", kNobody, kNobody, "q[0]", counters, got.handler());
    struct stat st {};
    REQUIRE(::lstat(theirs.path().c_str(), &st) == 0);
    CHECK(st.st_uid == kNobody);
    CHECK(send_as(kNobody, theirs.path(), "READY=1") == 0);
    theirs.drain();
    REQUIRE(got.messages.size() == 1);
    CHECK(got.messages[0].second.ready);
    // ... and nobody still cannot reach the other one, nor list the directory.
    CHECK(send_as(kNobody, mine.path(), "WATCHDOG=1") == EACCES);
}

TEST_CASE("warnings from one flooding sender are limited, the rest counted") {
    TempDir tmp;
    boost::asio::io_context io;
    NotifyDir dir(tmp.path + "/d");
    NotifyCounters counters;
    Got got;
    std::ostringstream log;
    auto old = spdlog::default_logger();
    auto logger = std::make_shared<spdlog::logger>(
        "t", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
    spdlog::set_default_logger(logger);
    {
        NotifySocket s(io, dir, "1", std::nullopt, std::nullopt, "p[0]", counters, got.handler());
        std::string big(kNotifyMaxDatagram * 4, 'x');
        for (int round = 0; round < 50; ++round) {
            for (int i = 0; i < 8 && send_to(s.path(), big) == 0; ++i) {
            }
            s.drain();
        }
    }
    spdlog::set_default_logger(old);
    std::string text = log.str();
    std::size_t lines = 0;
    for (char c : text) lines += c == '\n';
    CHECK(counters.oversized >= 50);
    CHECK(counters.warnings_suppressed == counters.oversized - kNotifyWarnBurst);
    CHECK(lines == static_cast<std::size_t>(kNotifyWarnBurst) + 1);  // + the closing summary
    CHECK(text.find("more notify warnings suppressed") != std::string::npos);
}

TEST_CASE("NotifySocket: a sender other than the main pid is identified while it waits") {
    TempDir tmp;
    boost::asio::io_context io;
    NotifyDir dir(tmp.path + "/d");
    NotifyCounters counters;
    std::vector<NotifySender> senders;
    NotifySocket s(io, dir, "1", std::nullopt, std::nullopt, "p[0]", counters,
                   [&](const NotifySender& who, const NotifyMessage&) { senders.push_back(who); });
    s.set_main_pid(::getpid());
    const std::string path = s.path();
    // From the main pid: no look into /proc.
    REQUIRE(send_to(path, "STATUS=main") == 0);
    // From a grandchild that waits (as sd_notify_barrier() does) until the master has read it.
    int go[2];
    REQUIRE(::pipe(go) == 0);
    pid_t child = ::fork();
    if (child == 0) {
        pid_t grandchild = ::fork();
        if (grandchild == 0) {
            send_to(path, "STATUS=below");
            char c;
            ssize_t ignored = ::read(go[0], &c, 1);
            (void)ignored;
            ::_exit(0);
        }
        ::waitpid(grandchild, nullptr, 0);
        ::_exit(0);
    }
    // From a child that is gone (exited and reaped) before its datagram is read.
    pid_t gone = ::fork();
    if (gone == 0) {
        send_to(path, "STATUS=gone");
        ::_exit(0);
    }
    REQUIRE(::waitpid(gone, nullptr, 0) == gone);
    // Both datagrams are queued once the gone one is; the grandchild's may come first.
    for (int i = 0; i < 200 && senders.size() < 3; ++i) {
        s.drain();
        if (senders.size() < 3) ::usleep(10'000);
    }
    REQUIRE(::write(go[1], "x", 1) == 1);
    ::close(go[0]);
    ::close(go[1]);
    ::waitpid(child, nullptr, 0);
    REQUIRE(senders.size() == 3);
    CHECK(senders[0].pid == ::getpid());
    CHECK(senders[0].known);
    CHECK(senders[0].ancestors.empty());
    for (const auto& who : senders) {
        if (who.pid == ::getpid()) continue;
        if (who.pid == gone) {
            CHECK_FALSE(who.known);
            continue;
        }
        CHECK(who.known);
        CHECK(who.pgid == ::getpgrp());
        REQUIRE(who.ancestors.size() >= 2);
        CHECK(who.ancestors[0] == child);
        CHECK(who.ancestors[1] == ::getpid());
    }
}

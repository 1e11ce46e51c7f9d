// The misbehaving helper's new modes, run through the spawner, checked with proc_stats and
// /proc: the facts the supervisor relies on (memory growth, process groups, orphans).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/process/proc_stats.hpp"
#include "daemon/process/spawner.hpp"

using namespace clusterd;
using namespace std::chrono_literals;

namespace {

struct Child {
    pid_t pid = -1;
    UniqueFd out;  // the read end of its stdout
};

Child start(std::vector<std::string> args) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    SpawnSpec spec;
    spec.path = CLUSTERD_MISBEHAVE;
    spec.argv = {"misbehave"};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.output_fd = write_end.get();
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    return {r.pid, std::move(read_end)};
}

/// The pids printed as "grandchild PID" lines (blocks until `n` are read).
std::vector<pid_t> grandchildren(const Child& c, int n) {
    std::vector<pid_t> pids;
    std::string text;
    char buf[256];
    while (static_cast<int>(pids.size()) < n) {
        ssize_t got = ::read(c.out.get(), buf, sizeof buf);
        REQUIRE(got > 0);
        text.append(buf, static_cast<std::size_t>(got));
        pids.clear();
        for (std::size_t at = 0; (at = text.find("grandchild ", at)) != std::string::npos;) {
            at += 11;
            if (text.find('\n', at) != std::string::npos)
                pids.push_back(std::stoi(text.substr(at)));
        }
    }
    return pids;
}

bool alive(pid_t pid) {
    return read_proc_stats(pid).has_value();
}

bool wait_gone(const std::vector<pid_t>& pids) {
    for (int i = 0; i < 200; ++i) {
        bool any = false;
        for (pid_t p : pids) any = any || alive(p);
        if (!any) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

}  // namespace

TEST_CASE("misbehave leak: RSS grows no faster than asked, up to the cap, then stays") {
    // Each step of a tenth of the rate is followed by a 100 ms sleep: a loaded host can slow
    // the growth, never speed it up. So the rate is bounded from above, and the growth is
    // waited for (not timed) up to the cap.
    Child c = start({"leak", "100", "300"});
    std::this_thread::sleep_for(200ms);
    auto before = read_proc_stats(c.pid);
    std::this_thread::sleep_for(1000ms);
    auto after = read_proc_stats(c.pid);
    REQUIRE(before);
    REQUIRE(after);
    auto mib = [](std::uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
    CHECK(mib(after->rss_bytes - before->rss_bytes) <= 120);  // 10 steps of 10 MiB, one late
    std::optional<ProcStats> now;
    for (int i = 0; i < 300; ++i) {  // 30 s at most
        now = read_proc_stats(c.pid);
        REQUIRE(now);
        if (mib(now->rss_bytes) >= 299) break;  // 300 MiB of leak, at least 1 of program
        std::this_thread::sleep_for(100ms);
    }
    CHECK(mib(now->rss_bytes) >= 299);
    CHECK(mib(now->rss_bytes) < 300 + 20);  // the cap, plus the program itself
    std::this_thread::sleep_for(500ms);
    auto later = read_proc_stats(c.pid);
    REQUIRE(later);
    CHECK(mib(later->rss_bytes) - mib(now->rss_bytes) < 5);  // no step after the cap
    ::kill(c.pid, SIGTERM);
    int status = 0;
    REQUIRE(::waitpid(c.pid, &status, 0) == c.pid);
    CHECK(WIFEXITED(status));
}

TEST_CASE("misbehave spawn-grandchildren: KILL to the worker's process group takes them all") {
    Child c = start({"spawn-grandchildren", "3", "ignore-term"});
    auto pids = grandchildren(c, 3);
    for (pid_t p : pids) {
        CHECK(alive(p));
        CHECK(::getpgid(p) == c.pid);  // the spawner made the worker a group leader
    }
    ::kill(c.pid, SIGTERM);  // ignored by all of them
    std::this_thread::sleep_for(100ms);
    CHECK(alive(c.pid));
    REQUIRE(::kill(-c.pid, SIGKILL) == 0);  // what the master sends on escalation
    int status = 0;
    REQUIRE(::waitpid(c.pid, &status, 0) == c.pid);
    CHECK(wait_gone(pids));
}

TEST_CASE("misbehave spawn-grandchildren: a worker that crashes leaves its grandchildren alive") {
    // The fact behind the supervisor's TODO: after a crash nobody kills the group, and the
    // grandchildren are re-parented (to init, or to the nearest child subreaper).
    Child c = start({"spawn-grandchildren", "2", "crash", "100"});
    auto pids = grandchildren(c, 2);
    int status = 0;
    REQUIRE(::waitpid(c.pid, &status, 0) == c.pid);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGSEGV);
    std::this_thread::sleep_for(100ms);
    for (pid_t p : pids) CHECK(alive(p));
    CHECK(::kill(-c.pid, SIGKILL) == 0);  // the group outlives its leader: one kill ends it
    CHECK(wait_gone(pids));
}

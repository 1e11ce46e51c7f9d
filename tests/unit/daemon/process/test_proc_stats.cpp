// proc_stats on real processes: this test's own pid, and a child that grows and burns CPU.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "daemon/process/proc_stats.hpp"

using namespace clusterd;

namespace {

double cpu_now() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

TEST_CASE("proc_stats: this process has RSS, CPU time and a start time in the past") {
    // Burn ~50ms of CPU so that utime moves beyond one clock tick.
    double until = cpu_now() + 0.05;
    volatile unsigned spin = 0;
    while (cpu_now() < until) spin = spin + 1;
    auto s = read_proc_stats(::getpid());
    REQUIRE(s);
    CHECK(s->rss_bytes > 1024 * 1024);  // a doctest binary holds more than 1 MiB
    CHECK(s->cpu_seconds >= 0.03);
    CHECK(s->start_time > 0);
    CHECK(s->start_time <= seconds_since_boot());
    CHECK(s->state == 'R');
}

TEST_CASE("proc_stats: a child that touches 64 MiB and burns 300ms, vanished after it dies") {
    constexpr std::size_t kBytes = 64u << 20;
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    double before_fork = seconds_since_boot();
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // Written through a volatile pointer: the compiler may not elide the pages.
        volatile char* block = static_cast<char*>(std::malloc(kBytes));
        if (block == nullptr) ::_exit(1);
        for (std::size_t i = 0; i < kBytes; i += 4096) block[i] = 1;
        double until = cpu_now() + 0.3;
        volatile unsigned spin = 0;
        while (cpu_now() < until) spin = spin + 1;
        char c = 'x';
        if (::write(ready[1], &c, 1) != 1) ::_exit(1);
        for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    ::close(ready[0]);

    auto s = read_proc_stats(pid);
    REQUIRE(s);
    CHECK(s->rss_bytes >= kBytes);
    CHECK(s->cpu_seconds >= 0.25);
    CHECK(s->cpu_seconds < 5);
    // starttime has clock-tick resolution (10ms at 100 Hz).
    CHECK(s->start_time >= before_fork - 0.02);
    CHECK(s->start_time <= seconds_since_boot());
    auto self = read_proc_stats(::getpid());
    REQUIRE(self);
    CHECK(s->start_time >= self->start_time);

    REQUIRE(::kill(pid, SIGKILL) == 0);
    // Dead but not reaped: a zombie counts as gone.
    for (int i = 0; i < 200; ++i) {
        if (!read_proc_stats(pid)) break;
        ::usleep(5000);
    }
    CHECK_FALSE(read_proc_stats(pid));
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK_FALSE(read_proc_stats(pid));
}

TEST_CASE("proc_stats: parse handles a comm with spaces and parentheses, rejects garbage") {
    std::string stat =
        "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 12345 1000 10 "
        "18446744073709551615";
    auto s = parse_proc_stats(stat, "2500 300 100 1 0 200 0\n", 4096, 100);
    REQUIRE(s);
    CHECK(s->state == 'S');
    CHECK(s->cpu_seconds == doctest::Approx(3.0));
    CHECK(s->start_time == doctest::Approx(123.45));
    CHECK(s->rss_bytes == 300u * 4096u);
    CHECK_FALSE(parse_proc_stats("garbage", "1 2", 4096, 100));
    CHECK_FALSE(parse_proc_stats("1 (x) S 1 2", "1 2", 4096, 100));
    CHECK_FALSE(parse_proc_stats(stat, "", 4096, 100));
    CHECK_FALSE(read_proc_stats(0));
}

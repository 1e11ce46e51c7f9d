// clusterd-test-misbehave MODE [ARGS]: a worker that behaves badly in one chosen way.
//
//   exit CODE          exit at once with CODE
//   ready-exit MS CODE send READY=1, exit with CODE after MS milliseconds
//   never-ready        run, never send READY=1
//   ready              send READY=1, then idle until TERM (exit 0)
//   ignore-term        send READY=1, ignore TERM, idle forever
//   crash MS           send READY=1, SIGSEGV itself after MS milliseconds
//   spew               write awkward output to stdout/stderr, then exit 0: a line split over
//                      two writes 50ms apart, a 40000-byte line written without its newline
//                      (the newline 50ms later), 5000 numbered lines as fast as possible, an
//                      exactly 16384-byte line, and a last line without a newline at all
//   stop-heartbeat N   send READY=1 and N WATCHDOG=1 (every WATCHDOG_USEC/2, else 100ms),
//                      then go silent: a hung worker as the watchdog sees it; exits 0 on TERM
//   leak MB_PER_SEC [MAX_MB]  send READY=1, then allocate and touch MB_PER_SEC MiB a second
//                      (in 10 steps), up to MAX_MB (default 2048) MiB; exits 0 on TERM
//   spawn-grandchildren N THEN  send READY=1 and fork N children that ignore TERM, HUP and
//                      their parent's death and sleep (120 s at most), one line "grandchild
//                      PID" each on stdout; THEN is "ignore-term" (the worker ignores TERM
//                      and idles) or "crash MS" (the worker SIGSEGVs itself after MS ms)
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/notify.hpp"

namespace {

volatile sig_atomic_t stop_requested = 0;

void on_term(int) {
    stop_requested = 1;
}

void idle_until_term() {
    struct sigaction sa {};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, nullptr);
    while (!stop_requested) pause();
}

void sleep_ms(long ms) {
    usleep(static_cast<useconds_t>(ms) * 1000);
}

void write_all(int fd, const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
        ssize_t n = write(fd, text.data() + done, text.size() - done);
        if (n <= 0) return;
        done += static_cast<std::size_t>(n);
    }
}

int spew() {
    write_all(1, "partial-");
    sleep_ms(50);
    write_all(1, "line-end\n");
    write_all(2, "stderr-line\n");
    write_all(1, std::string(40000, 'x'));
    sleep_ms(50);
    write_all(1, "\n");
    std::string burst;
    for (int i = 0; i < 5000; ++i) burst += "fast " + std::to_string(i) + "\n";
    write_all(1, burst);
    write_all(1, std::string(16384, 'y') + "\n");
    write_all(1, "no-newline-at-eof");
    return 0;
}

long watchdog_period_ms() {
    const char* usec = std::getenv("WATCHDOG_USEC");
    long ms = usec ? std::atol(usec) / 2000 : 0;
    return ms > 0 ? ms : 100;
}

int stop_heartbeat(int beats) {
    struct sigaction sa {};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, nullptr);  // before READY: TERM may follow it at once
    clusterd::notify("READY=1");
    for (int i = 0; i < beats && !stop_requested; ++i) {
        clusterd::notify("WATCHDOG=1");
        sleep_ms(watchdog_period_ms());
    }
    std::printf("misbehave: pid %d stops heartbeating\n", getpid());
    std::fflush(stdout);
    idle_until_term();
    return 0;
}

int leak(long mb_per_sec, long max_mb) {
    struct sigaction sa {};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, nullptr);
    clusterd::notify("READY=1");
    const std::size_t step = static_cast<std::size_t>(mb_per_sec) << 20;
    long total_mb = 0;
    while (!stop_requested) {
        if (total_mb < max_mb) {
            // A tenth of the rate every 100ms, written page by page so it is resident.
            std::size_t bytes = step / 10;
            auto* block = static_cast<volatile char*>(std::malloc(bytes));
            if (block != nullptr)
                for (std::size_t i = 0; i < bytes; i += 4096) block[i] = 1;
            total_mb += mb_per_sec / 10 > 0 ? mb_per_sec / 10 : 1;
        }
        sleep_ms(100);
    }
    return 0;
}

int spawn_grandchildren(int n, int argc, char** argv) {
    std::string then = argc > 0 ? argv[0] : "";
    if (then != "ignore-term" && !(then == "crash" && argc == 2)) return 2;
    // Before anything is printed or notified: whoever sees us ready may send TERM at once.
    if (then == "ignore-term") signal(SIGTERM, SIG_IGN);
    for (int i = 0; i < n; ++i) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGTERM, SIG_IGN);
            signal(SIGHUP, SIG_IGN);
            for (int s = 0; s < 120; ++s) sleep(1);  // bounded, should the test fail to kill it
            _exit(0);
        }
        if (pid > 0) std::printf("grandchild %d\n", pid);
    }
    std::fflush(stdout);
    clusterd::notify("READY=1");
    if (then == "ignore-term") {
        for (;;) pause();
    }
    sleep_ms(std::atol(argv[1]));
    raise(SIGSEGV);
    return 1;
}

int usage() {
    std::fprintf(stderr,
                 "usage: clusterd-test-misbehave exit CODE | ready-exit MS CODE | "
                 "never-ready | ready | ignore-term | crash MS | spew | stop-heartbeat N | "
                 "leak MB_PER_SEC [MAX_MB] | spawn-grandchildren N ignore-term|crash MS\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return usage();
    std::string mode = argv[1];
    if (mode == "exit" && argc == 3) return std::atoi(argv[2]);
    if (mode == "ready-exit" && argc == 4) {
        clusterd::notify("READY=1", clusterd::notify_state_wait);
        sleep_ms(std::atol(argv[2]));
        return std::atoi(argv[3]);
    }
    if (mode == "never-ready") {
        idle_until_term();
        return 0;
    }
    if (mode == "ready") {
        clusterd::notify("READY=1", clusterd::notify_state_wait);
        idle_until_term();
        return 0;
    }
    if (mode == "ignore-term") {
        signal(SIGTERM, SIG_IGN);
        clusterd::notify("READY=1", clusterd::notify_state_wait);
        for (;;) pause();
    }
    if (mode == "crash" && argc == 3) {
        clusterd::notify("READY=1", clusterd::notify_state_wait);
        sleep_ms(std::atol(argv[2]));
        raise(SIGSEGV);
        return 1;
    }
    if (mode == "spew") return spew();
    if (mode == "stop-heartbeat" && argc == 3) return stop_heartbeat(std::atoi(argv[2]));
    if (mode == "leak" && (argc == 3 || argc == 4))
        return leak(std::atol(argv[2]), argc == 4 ? std::atol(argv[3]) : 2048);
    if (mode == "spawn-grandchildren" && argc >= 4) {
        int rc = spawn_grandchildren(std::atoi(argv[2]), argc - 3, argv + 3);
        if (rc == 2) return usage();
        return rc;
    }
    return usage();
}

// clusterd-test-misbehave MODE [ARGS]: a worker that behaves badly in one chosen way.
//
//   exit CODE          exit at once with CODE
//   ready-exit MS CODE send READY=1, exit with CODE after MS milliseconds
//   never-ready        run, never send READY=1
//   ready              send READY=1, then idle until TERM (exit 0)
//   ignore-term        send READY=1, ignore TERM, idle forever
//   crash MS           send READY=1, SIGSEGV itself after MS milliseconds
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

int usage() {
    std::fprintf(stderr,
                 "usage: clusterd-test-misbehave exit CODE | ready-exit MS CODE | "
                 "never-ready | ready | ignore-term | crash MS\n");
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
    return usage();
}

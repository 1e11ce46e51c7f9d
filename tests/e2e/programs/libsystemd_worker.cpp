// A worker written against libsystemd (sd-daemon), as many existing services are: it checks
// sd_watchdog_enabled() in itself and in a child it forks (WATCHDOG_PID names the worker, so the
// child must get "no"), reports both in STATUS with READY=1, then heartbeats at half the
// watchdog interval until SIGTERM. No socket: tests/e2e/test_notify_access.py reads `status`.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

int main(void) {
    uint64_t usec = 0;
    int enabled = sd_watchdog_enabled(0, &usec);
    pid_t child = fork();
    if (child == 0) _exit(sd_watchdog_enabled(0, NULL) > 0 ? 1 : 0);
    int st = 0;
    waitpid(child, &st, 0);
    int child_enabled = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    signal(SIGTERM, on_term);
    sd_notifyf(0, "READY=1\nSTATUS=watchdog %d usec %llu child %d", enabled,
               (unsigned long long)usec, child_enabled);
    while (!stop) {
        if (enabled > 0) sd_notify(0, "WATCHDOG=1");
        usleep(enabled > 0 ? (useconds_t)(usec / 2) : 100000);
    }
    sd_notify(0, "STOPPING=1");
    return 0;
}

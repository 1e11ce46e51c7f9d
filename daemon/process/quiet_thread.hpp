// The master's helper threads (the log writer, OffLoop's jobs) take no signals: every signal
// stays the loop's. Each is detached and owns what it is given.
#pragma once

#include <signal.h>

#include <thread>
#include <utility>

namespace clusterd {

/// Start `f` on a detached thread with every signal blocked. The caller's signal mask is
/// restored whether or not the thread could be started (std::system_error then).
template <class F>
void start_quiet_thread(F&& f) {
    sigset_t all, saved;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved);
    try {
        std::thread(std::forward<F>(f)).detach();
    } catch (...) {
        ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
        throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

}  // namespace clusterd

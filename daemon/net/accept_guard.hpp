// What a listening server of the master does when accept() fails for want of file
// descriptors (EMFILE: this process's RLIMIT_NOFILE; ENFILE: the system's file table).
//
// The waiting connection stays in the kernel's backlog, so the listening socket stays
// readable and the loop would retry at once, forever, at 100% CPU. Instead the guard holds
// one spare descriptor (/dev/null): on a shortage it closes the spare, accepts the waiting
// connection into the freed slot, closes that connection (the client sees it closed) and
// reopens the spare. When that fails too (no spare, or the system table is full) the caller
// pauses accepting for `kAcceptPause`, as nginx does. Each shortage is counted and logged at
// most once per `kLogInterval`, with the number of shortages not logged in between.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/fd.hpp"

namespace clusterd {

class AcceptGuard {
  public:
    /// How long a server stops accepting when no connection could be shed.
    static constexpr std::chrono::milliseconds kAcceptPause{100};
    /// At most one log line per interval per server.
    static constexpr std::chrono::seconds kLogInterval{10};

    /// `what` names the server in the log ("control socket /run/clusterd/control.sock").
    explicit AcceptGuard(std::string what);

    /// True for the errno values that mean "out of file descriptors" (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM).
    static bool is_shortage(int error);

    /// What shed_one did.
    enum class Outcome {
        shed,      ///< closed one waiting connection: accept again now
        accepted,  ///< descriptors are free again: the connection in `fd` is the caller's
        pause,     ///< nothing to shed or no spare: pause accepting for kAcceptPause
    };

    /// Counts one shortage and logs it (rate-limited).
    void note(int error);

    /// Sheds one connection waiting on `listen_fd` (a non-blocking listening socket) with the
    /// spare descriptor. When descriptors turned out to be free again by then, the connection
    /// is kept and returned in `fd` (non-blocking, close-on-exec) instead.
    Outcome shed_one(int listen_fd, int& fd);

    /// Shortages seen.
    std::uint64_t shortages() const { return shortages_; }
    /// Connections accepted and closed at once for want of a descriptor.
    std::uint64_t shed() const { return shed_; }

  private:
    std::string what_;
    UniqueFd spare_;
    std::uint64_t shortages_ = 0;
    std::uint64_t shed_ = 0;
    std::uint64_t unlogged_ = 0;
    std::chrono::steady_clock::time_point last_log_{};
};

}  // namespace clusterd

// clusterd scoreboard: a worker's heartbeat and figures in memory shared with the master, so
// reporting them costs the worker a few stores and the master nothing until it asks (`status`,
// /metrics, a watchdog check). Header-only, plain syscalls, nothing to link; part of the SDK
// (worker/sdk.hpp). NOTIFY_SOCKET datagrams (WATCHDOG=1, X_CLUSTERD_*) keep working beside it.
//
// The protocol, for any language:
//   - The master makes one memfd per program and gives each worker process one record in it,
//     named by the environment variable CLUSTERD_SCOREBOARD="FD:OFFSET" (decimal): the memfd
//     is open as fd FD in the worker, its record starts OFFSET bytes into it. A record never
//     crosses a 4096-byte page, so mapping the one page at OFFSET rounded down to 4096 is
//     enough (mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_SHARED, FD, OFFSET & ~4095)).
//     The fd may be closed once mapped. The file cannot shrink (F_SEAL_SHRINK).
//   - The master fills magic, version, size and pid (the worker's pid) and zeroes the rest
//     before the worker starts. A worker that finds another magic or version, or a size below
//     the one it knows, leaves the record alone and reports by datagram only.
//   - The worker sets the flag bits of what it writes *before* sending READY=1; the master
//     reads the flags once, at READY=1. With kFlagHeartbeat set, a store of the time into
//     alive_ns is a heartbeat (the master no longer waits for WATCHDOG=1 datagrams), at the
//     pace READY=1 announced in X_CLUSTERD_HEARTBEAT_USEC (else half of WATCHDOG_USEC).
//   - Every field is native-endian (little-endian on x86_64 and arm64) and naturally aligned.
//     Numbers are written by single aligned stores (atomic, relaxed order); the master reads
//     each on its own, so two fields may come from two different moments.
//   - The status text is guarded by status_seq (a sequence lock): make it odd, write the
//     text (NUL-padded, UTF-8, at most 47 bytes), make it even again. A reader retries while
//     it is odd or changed under it, and gives up after a few tries.
//   - The records are the workers' to write and every worker of the program can write all of
//     them: the master trusts them no more than a datagram (it clamps times to its own clock
//     and ignores a record whose pid is not its worker's).
//
// Layout of a record, version 1, 128 bytes:
//   offset  size  field        writer  meaning
//        0     4  magic        master  kScoreboardMagic ("CDSB" read as little-endian bytes)
//        4     2  version      master  kScoreboardVersion
//        6     2  size         master  sizeof(ScoreboardRecord)
//        8     4  pid          master  the worker's pid
//       12     4  flags        worker  kFlagHeartbeat | kFlagFigures
//       16     8  alive_ns     worker  CLOCK_MONOTONIC of the loop's last heartbeat, in ns
//       24     8  loop_lag_us  worker  how late the loop's heartbeat timer last ran, in us
//       32     8  connections  worker  connections open now
//       40     8  requests     worker  requests served since start
//       48     8  bytes_in     worker  bytes read from clients since start
//       56     8  bytes_out    worker  bytes written to clients since start
//       64     8  rejected     worker  requests answered with an error before a handler ran
//       72     8  timeouts     worker  requests closed for being too slow
//       80     4  status_seq   worker  sequence lock of status
//       84     4  (reserved, 0)
//       88    40  status       worker  short status text, NUL-padded
#pragma once

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace clusterd::sdk {

inline constexpr std::uint32_t kScoreboardMagic = 0x42534443;  // bytes "CDSB"
inline constexpr std::uint16_t kScoreboardVersion = 1;
inline constexpr std::uint32_t kFlagHeartbeat = 1;  // alive_ns is the heartbeat
inline constexpr std::uint32_t kFlagFigures = 2;    // the figures are kept up to date
inline constexpr std::size_t kScoreboardStatusBytes = 40;
inline constexpr const char* kScoreboardEnv = "CLUSTERD_SCOREBOARD";

struct alignas(8) ScoreboardRecord {
    std::uint32_t magic;
    std::uint16_t version;
    std::uint16_t size;
    std::int32_t pid;
    std::uint32_t flags;
    std::uint64_t alive_ns;
    std::uint64_t loop_lag_us;
    std::uint64_t connections;
    std::uint64_t requests;
    std::uint64_t bytes_in;
    std::uint64_t bytes_out;
    std::uint64_t rejected;
    std::uint64_t timeouts;
    std::uint32_t status_seq;
    std::uint32_t reserved;
    char status[kScoreboardStatusBytes];
};
static_assert(sizeof(ScoreboardRecord) == 128);
static_assert(offsetof(ScoreboardRecord, flags) == 12);
static_assert(offsetof(ScoreboardRecord, alive_ns) == 16);
static_assert(offsetof(ScoreboardRecord, timeouts) == 72);
static_assert(offsetof(ScoreboardRecord, status_seq) == 80);
static_assert(offsetof(ScoreboardRecord, status) == 88);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);

/// Relaxed single stores and loads on the shared record (no tearing, no ordering).
template <typename T>
inline void board_store(T& field, T value) {
    std::atomic_ref<T>(field).store(value, std::memory_order_relaxed);
}
template <typename T>
inline T board_load(T& field) {
    return std::atomic_ref<T>(field).load(std::memory_order_relaxed);
}

/// CLOCK_MONOTONIC in nanoseconds (the clock of alive_ns; a vDSO call, no syscall).
inline std::uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

/// Where CLUSTERD_SCOREBOARD points: fd and byte offset; false when unset or malformed.
inline bool parse_scoreboard_env(const char* value, int& fd, std::uint64_t& offset) {
    if (value == nullptr) return false;
    std::string_view v(value);
    auto colon = v.find(':');
    if (colon == std::string_view::npos) return false;
    auto [p1, e1] = std::from_chars(v.data(), v.data() + colon, fd);
    auto [p2, e2] = std::from_chars(v.data() + colon + 1, v.data() + v.size(), offset);
    return e1 == std::errc{} && p1 == v.data() + colon && e2 == std::errc{} &&
           p2 == v.data() + v.size() && fd >= 0 && offset % alignof(ScoreboardRecord) == 0 &&
           offset % 4096 + sizeof(ScoreboardRecord) <= 4096;
}

/// A worker's own record, mapped from CLUSTERD_SCOREBOARD. Every write is a plain relaxed
/// store: call them from the event loop as often as convenient. Without a usable record
/// (not run by clusterd, or another version) attached() is false and every call does nothing.
class Scoreboard {
  public:
    /// Maps the record named by the environment and closes the fd. `flags` says what this
    /// process will write (kFlagHeartbeat, kFlagFigures): set before READY=1.
    explicit Scoreboard(std::uint32_t flags = kFlagHeartbeat | kFlagFigures) {
        int fd = -1;
        std::uint64_t offset = 0;
        if (!parse_scoreboard_env(std::getenv(kScoreboardEnv), fd, offset)) return;
        auto page = static_cast<off_t>(offset & ~std::uint64_t{4095});
        void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, page);
        ::close(fd);
        if (p == MAP_FAILED) return;
        auto* rec = reinterpret_cast<ScoreboardRecord*>(static_cast<char*>(p) + (offset & 4095));
        if (board_load(rec->magic) != kScoreboardMagic ||
            board_load(rec->version) != kScoreboardVersion ||
            board_load(rec->size) < sizeof(ScoreboardRecord)) {
            ::munmap(p, 4096);
            return;
        }
        page_ = p;
        rec_ = rec;
        alive();
        board_store(rec_->flags, flags);
    }
    ~Scoreboard() {
        if (page_ != nullptr) ::munmap(page_, 4096);
    }
    Scoreboard(const Scoreboard&) = delete;
    Scoreboard& operator=(const Scoreboard&) = delete;

    bool attached() const { return rec_ != nullptr; }
    /// The heartbeat: the loop is alive now.
    void alive() { set(&ScoreboardRecord::alive_ns, monotonic_ns()); }
    void loop_lag(std::uint64_t us) { set(&ScoreboardRecord::loop_lag_us, us); }
    void connections(std::uint64_t n) { set(&ScoreboardRecord::connections, n); }
    void requests(std::uint64_t n) { set(&ScoreboardRecord::requests, n); }
    void bytes(std::uint64_t in, std::uint64_t out) {
        set(&ScoreboardRecord::bytes_in, in);
        set(&ScoreboardRecord::bytes_out, out);
    }
    void rejected(std::uint64_t n) { set(&ScoreboardRecord::rejected, n); }
    void timeouts(std::uint64_t n) { set(&ScoreboardRecord::timeouts, n); }
    /// The status text (cut at 39 bytes, on a UTF-8 character boundary).
    void status(std::string_view text) {
        if (rec_ == nullptr) return;
        std::size_t n = std::min(text.size(), kScoreboardStatusBytes - 1);
        while (n > 0 && n < text.size() && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80)
            --n;
        std::atomic_ref<std::uint32_t> seq(rec_->status_seq);
        std::uint32_t s = seq.load(std::memory_order_relaxed);
        seq.store(s | 1, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        for (std::size_t i = 0; i < kScoreboardStatusBytes; ++i)
            std::atomic_ref<char>(rec_->status[i])
                .store(i < n ? text[i] : '\0', std::memory_order_relaxed);
        seq.store((s | 1) + 1, std::memory_order_release);
    }

  private:
    void set(std::uint64_t ScoreboardRecord::*field, std::uint64_t value) {
        if (rec_ != nullptr) board_store(rec_->*field, value);
    }

    void* page_ = nullptr;
    ScoreboardRecord* rec_ = nullptr;
};

}  // namespace clusterd::sdk

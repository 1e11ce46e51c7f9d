// The master's side of the scoreboard (the record layout and the worker's side are in
// worker/scoreboard.hpp): one memfd per program, a record per worker process, read only when
// someone asks (status, /metrics, the watchdog check).
//
// A record belongs to one process, from its spawn to its reaping: a process given up on (after
// a watchdog or a start timeout) keeps writing to its record until it is gone, so its record is
// not handed to another until then. A freed record is zeroed before it is handed out again.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "worker/scoreboard.hpp"

namespace clusterd {

/// Records per program at most: every slot twice over (a replacement beside each worker).
inline constexpr std::uint32_t kMaxBoardRecords = 8192;

/// One record read at one moment (each number on its own, see worker/scoreboard.hpp).
struct BoardReading {
    std::int32_t pid = 0;
    std::uint32_t flags = 0;
    std::uint64_t alive_ns = 0;
    std::uint64_t loop_lag_us = 0;
    std::uint64_t connections = 0;
    std::uint64_t requests = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::uint64_t rejected = 0;
    std::uint64_t timeouts = 0;
    std::optional<std::string> status;  // nullopt: being written each time it was read
};

class Scoreboard {
  public:
    /// A new memfd named after the program, sealed against shrinking. Throws std::system_error.
    explicit Scoreboard(const std::string& program);
    /// An existing one (handed over by an upgrade): its records stay as they are, and
    /// `in_use` marks those still owned. Throws std::system_error.
    Scoreboard(UniqueFd fd, const std::vector<std::uint32_t>& in_use);
    ~Scoreboard();
    Scoreboard(const Scoreboard&) = delete;
    Scoreboard& operator=(const Scoreboard&) = delete;

    int fd() const { return fd_.get(); }
    /// A zeroed record with its header filled in; nullopt when kMaxBoardRecords are in use or
    /// the file cannot grow (logged by the caller).
    std::optional<std::uint32_t> take();
    /// The process now holding record `index`.
    void set_pid(std::uint32_t index, pid_t pid);
    /// Where record `index` names its process (for the spawner's child to fill in itself).
    std::int32_t* pid_word(std::uint32_t index) {
        return index < capacity_ ? &at(index)->pid : nullptr;
    }
    /// Back to the free list, zeroed.
    void release(std::uint32_t index);
    BoardReading read(std::uint32_t index) const;
    /// Byte offset of record `index` in the file (what CLUSTERD_SCOREBOARD names).
    static std::uint64_t offset(std::uint32_t index) {
        return std::uint64_t{index} * sizeof(sdk::ScoreboardRecord);
    }
    std::uint32_t capacity() const { return capacity_; }
    std::uint32_t in_use() const { return in_use_; }

  private:
    sdk::ScoreboardRecord* at(std::uint32_t index) const;
    bool grow(std::uint32_t records);

    UniqueFd fd_;
    void* map_ = nullptr;
    std::uint32_t capacity_ = 0;
    std::uint32_t in_use_ = 0;
    std::vector<bool> used_;
};

/// A record held for one process: released when the process is reaped.
struct BoardSeat {
    std::shared_ptr<Scoreboard> board;
    std::uint32_t index = 0;
    BoardSeat(std::shared_ptr<Scoreboard> b, std::uint32_t i) : board(std::move(b)), index(i) {}
    BoardSeat(BoardSeat&& o) noexcept : board(std::move(o.board)), index(o.index) {}
    BoardSeat& operator=(BoardSeat&&) = delete;
    BoardSeat(const BoardSeat&) = delete;
    ~BoardSeat() {
        if (board) board->release(index);
    }
};

}  // namespace clusterd

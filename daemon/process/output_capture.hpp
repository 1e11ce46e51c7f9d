// `output: capture`: a worker's stdout and stderr become lines of the daemon's log.
//
// One pipe per worker process. open() makes it and returns the write end, which the spawner
// dup2s to the child's fds 1 and 2 (SpawnSpec::output_fd); the master closes its own copy right
// after spawn(). The read end stays here and is read on the master's loop: every whole line is
// logged at info level as "program[slot] line". Every pipe is read (when epoll says it is
// readable) into one 64 KiB buffer shared by all pipes of the loop's thread, and split into
// lines at once; only a partial line is kept, per pipe, until its newline (or EOF, which
// flushes it). A line longer than 16 KiB is logged in 16 KiB pieces, each but the last marked
// " [continued]". Lines of different workers never mix: each pipe keeps its own partial line
// and spdlog writes one line at a time. The read end is closed at EOF, i.e. once the worker
// and every child that inherited its stdout have closed their copies.
//
// The last kTailLines lines (each cut to kTailLineBytes) are kept for `status`: what a worker
// printed before it died, like systemctl status's journal tail.
//
// Asio stays in the .cpp: the header forward-declares io_context.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

class OutputCapture {
  public:
    /// Receives each line (without its newline); `continued` = more of this line follows.
    using LineSink = std::function<void(std::string_view line, bool continued)>;

    /// The longest piece of a line logged at once.
    static constexpr std::size_t kMaxLine = 16 * 1024;
    /// Lines kept for tail(), and the most of each line kept.
    static constexpr std::size_t kTailLines = 10;
    static constexpr std::size_t kTailLineBytes = 512;

    /// Lines are logged as "program[slot] line"; a `sink` replaces the logging (tests); each
    /// line then also goes to `also` (the master's ring for `clusterd logs`), if given.
    OutputCapture(boost::asio::io_context& io, std::string program, int slot,
                  LineSink sink = nullptr, LineSink also = nullptr);
    /// Pipes still open keep being read until their EOF (a worker that just exited may have
    /// left lines in its pipe); close() first to stop them now.
    ~OutputCapture();
    OutputCapture(const OutputCapture&) = delete;
    OutputCapture& operator=(const OutputCapture&) = delete;

    /// A new pipe for one worker process; returns its write end (close-on-exec, blocking),
    /// for SpawnSpec::output_fd. Throws std::system_error when pipe2 fails.
    UniqueFd open();
    /// The read ends of the open pipes, for an upgrade (they stay open and owned here; a
    /// partial line buffered in this image is not handed over).
    std::vector<int> fds() const;
    /// Read the pipe `fd` (an upgrade's new image takes the old one's), and start the tail
    /// from `tail`.
    void adopt(int fd, const std::vector<std::string>& tail);
    /// Pipes not yet at EOF (the current worker's, and older ones a child still holds).
    std::size_t open_pipes() const;
    /// Stops reading every pipe now (shutdown); partial lines are logged, unread data is not.
    void close();
    /// The last lines read, oldest first.
    std::vector<std::string> tail() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace clusterd

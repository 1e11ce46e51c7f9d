#include "daemon/process/logging.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "daemon/process/quiet_thread.hpp"

namespace clusterd {

bool valid_log_level(const std::string& level) {
    return level == "trace" || level == "debug" || level == "info" || level == "warn" ||
           level == "error";
}

namespace {

std::atomic<std::uint64_t> g_dropped_total{0};

// What the loop and the writer thread share. The loop only appends under the mutex (never a
// write(2)); the writer thread owns the fd and does the blocking writes.
struct LogQueue {
    std::mutex mutex;
    std::condition_variable wake;     // the writer: lines to write, or stop
    std::condition_variable drained;  // drain_log(): the queue is empty
    std::deque<std::string> lines;
    std::size_t bytes = 0;
    std::uint64_t dropped_since_last = 0;  // lines dropped since the last one queued
    bool writing = false;                  // the writer holds lines it took out
    bool stop = false;
    int fd = -1;
    bool owns_fd = false;

    ~LogQueue() {
        if (owns_fd) ::close(fd);
    }
};

void write_all(int fd, const std::string& data) {
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // a closed or broken sink: nothing to do but go on
        done += static_cast<std::size_t>(n);
    }
}

void writer(std::shared_ptr<LogQueue> q) {
    std::unique_lock lock(q->mutex);
    for (;;) {
        q->wake.wait(lock, [&] { return q->stop || !q->lines.empty(); });
        if (q->lines.empty()) break;  // stopped, and everything is written
        std::string batch;
        batch.reserve(q->bytes);
        for (auto& line : q->lines) batch += line;
        q->lines.clear();
        q->bytes = 0;
        q->writing = true;
        lock.unlock();
        write_all(q->fd, batch);
        lock.lock();
        q->writing = false;
        if (q->lines.empty()) q->drained.notify_all();
    }
    q->drained.notify_all();
}

const char* level_colour(spdlog::level::level_enum level) {
    switch (level) {
        case spdlog::level::trace:
            return "\033[37m";
        case spdlog::level::debug:
            return "\033[36m";
        case spdlog::level::info:
            return "\033[32m";
        case spdlog::level::warn:
            return "\033[33m\033[1m";
        case spdlog::level::err:
            return "\033[31m\033[1m";
        case spdlog::level::critical:
            return "\033[1m\033[41m";
        default:
            return "";
    }
}

// The master's only sink: formats on the loop, queues the line, and a writer thread of its
// own writes it. When the log's reader stalls (a full pipe to a stuck log collector, a hung
// NFS file), the queue fills to kLogQueueBytes and further lines are dropped and counted,
// instead of the loop blocking in write(2). The first line queued after a drop is preceded
// by one that says how many were lost.
class QueuedSink final : public spdlog::sinks::base_sink<std::mutex> {
  public:
    QueuedSink(int fd, bool owns_fd, bool colour)
        : q_(std::make_shared<LogQueue>()), colour_(colour) {
        q_->fd = fd;
        q_->owns_fd = owns_fd;
        start_quiet_thread([q = q_] { writer(q); });
    }

    // Never waits: the writer finishes what is queued, closes the fd and ends on its own (a
    // reopen on USR1 must not block on a stalled old file).
    ~QueuedSink() override {
        std::lock_guard lock(q_->mutex);
        q_->stop = true;
        q_->wake.notify_one();
    }

    /// Wait up to `timeout` for every queued line to be written.
    bool drain(std::chrono::milliseconds timeout) {
        std::unique_lock lock(q_->mutex);
        return q_->drained.wait_for(lock, timeout,
                                    [&] { return q_->lines.empty() && !q_->writing; });
    }

  protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        std::string line = format(msg);
        std::lock_guard lock(q_->mutex);
        if (q_->dropped_since_last > 0) {
            // Said before the line, and queued or dropped with it.
            std::string notice = "clusterd dropped " + std::to_string(q_->dropped_since_last) +
                                 " log line(s): the log output was not being read";
            line = format({msg.time, {}, msg.logger_name, spdlog::level::warn, notice}) + line;
        }
        if (q_->bytes + line.size() > kLogQueueBytes) {
            ++q_->dropped_since_last;
            g_dropped_total.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        q_->dropped_since_last = 0;
        q_->bytes += line.size();
        q_->lines.push_back(std::move(line));
        q_->wake.notify_one();
    }

    void flush_() override {}  // the writer writes each batch as soon as it has it

  private:
    std::string format(const spdlog::details::log_msg& msg) {
        spdlog::memory_buf_t buf;
        formatter_->format(msg, buf);
        if (colour_ && msg.color_range_end > msg.color_range_start) {
            std::string out(buf.data(), msg.color_range_start);
            out += level_colour(msg.level);
            out.append(buf.data() + msg.color_range_start,
                       msg.color_range_end - msg.color_range_start);
            out += "\033[m";
            out.append(buf.data() + msg.color_range_end, buf.size() - msg.color_range_end);
            return out;
        }
        return std::string(buf.data(), buf.size());
    }

    std::shared_ptr<LogQueue> q_;
    bool colour_;
};

std::shared_ptr<QueuedSink> g_sink;  // the default logger's sink, for drain_log()

std::shared_ptr<spdlog::logger> make_logger(const std::string& file) {
    std::shared_ptr<QueuedSink> sink;
    if (file.empty()) {
        sink = std::make_shared<QueuedSink>(STDERR_FILENO, false, ::isatty(STDERR_FILENO) == 1);
    } else {
        // O_NONBLOCK only for the open itself: a FIFO named as the log file must not block
        // the loop until a reader appears.
        int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0640);
        if (fd < 0)
            throw std::system_error(errno, std::generic_category(), "cannot open log file " + file);
        int flags = ::fcntl(fd, F_GETFL);
        if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        sink = std::make_shared<QueuedSink>(fd, true, false);
    }
    auto logger = std::make_shared<spdlog::logger>("clusterd", sink);
    // journald stamps each line itself; elsewhere the timestamp is ours.
    if (std::getenv("JOURNAL_STREAM") != nullptr && file.empty()) {
        logger->set_pattern("%^%l%$ %v");
    } else {
        logger->set_pattern("%Y-%m-%d %H:%M:%S.%f %^%l%$ %v");
    }
    static bool at_exit = [] {
        return std::atexit([] { drain_log(std::chrono::seconds(2)); }) == 0;
    }();
    (void)at_exit;
    g_sink = sink;
    return logger;
}

}  // namespace

void setup_logging(const std::string& level, const std::string& file) {
    if (!valid_log_level(level)) throw std::invalid_argument("unknown log level \"" + level + "\"");
    auto logger = make_logger(file);
    logger->set_level(spdlog::level::from_str(level));
    spdlog::set_default_logger(logger);
}

void reopen_log(const std::string& file) {
    auto level = spdlog::default_logger()->level();
    auto logger = make_logger(file);
    logger->set_level(level);
    spdlog::set_default_logger(logger);
}

bool drain_log(std::chrono::milliseconds timeout) {
    return g_sink ? g_sink->drain(timeout) : true;
}

std::uint64_t log_lines_dropped() {
    return g_dropped_total.load(std::memory_order_relaxed);
}

}  // namespace clusterd

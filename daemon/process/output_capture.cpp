#include "daemon/process/output_capture.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <system_error>
#include <vector>

namespace clusterd {

namespace asio = boost::asio;
using boost::system::error_code;

// Named, not anonymous: Impl below holds these (and unity builds include this file).
namespace capture_detail {

/// Where every pipe of the thread's loop reads into: the bytes are split into lines at once
/// and only a partial line stays with its pipe, so 64 workers cost one read buffer, not 64.
constexpr std::size_t kScratchSize = 64 * 1024;

char* scratch() {
    thread_local std::unique_ptr<char[]> buffer(new char[kScratchSize]);
    return buffer.get();
}

/// The read end of one worker's pipe, alive until EOF (its pending wait holds it).
class Pipe : public std::enable_shared_from_this<Pipe> {
  public:
    Pipe(asio::io_context& io, int fd, std::shared_ptr<const OutputCapture::LineSink> sink)
        : sd_(io, fd), sink_(std::move(sink)) {}

    void do_read() {
        sd_.async_wait(
            asio::posix::descriptor_base::wait_read,
            [self = shared_from_this()](const error_code& ec) { self->on_readable(ec); });
    }

    bool is_open() const { return sd_.is_open(); }
    int fd() { return sd_.is_open() ? sd_.native_handle() : -1; }

    /// Logs what is buffered and closes the read end.
    void close() {
        if (!pending_.empty()) emit(pending_, false);
        std::string().swap(pending_);
        error_code ignored;
        sd_.close(ignored);
    }

  private:
    // A few reads per wakeup at most, so that one flooding worker does not hold the loop.
    static constexpr int kReadsPerWakeup = 4;

    void on_readable(const error_code& ec) {
        if (ec) {
            if (ec != asio::error::operation_aborted)
                spdlog::error("reading worker output failed: {}", ec.message());
            if (sd_.is_open()) close();
            return;
        }
        if (!sd_.is_open()) return;
        char* buf = scratch();
        for (int i = 0; i < kReadsPerWakeup;) {
            ssize_t n = ::read(sd_.native_handle(), buf, kScratchSize);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n <= 0) {
                // EOF: every writer is gone.
                if (n < 0) spdlog::error("reading worker output failed: {}", std::strerror(errno));
                close();
                return;
            }
            consume(std::string_view(buf, static_cast<std::size_t>(n)));
            if (!sd_.is_open()) return;
            if (static_cast<std::size_t>(n) < kScratchSize) break;  // drained for now
            ++i;
        }
        do_read();
    }

    // Whole lines go out as they complete, straight from the read buffer when nothing of the
    // line was buffered before; a line that outgrows kMaxLine goes out in pieces.
    void consume(std::string_view data) {
        while (!data.empty()) {
            auto nl = data.find('\n');
            std::string_view chunk = data.substr(0, nl);
            // A full buffer is emitted only once more of the same line arrives, so a line of
            // exactly kMaxLine bytes still goes out whole.
            while (pending_.size() + chunk.size() > OutputCapture::kMaxLine) {
                std::size_t take = OutputCapture::kMaxLine - pending_.size();
                if (pending_.empty()) {
                    emit(chunk.substr(0, take), true);
                } else {
                    pending_.append(chunk.substr(0, take));
                    emit(pending_, true);
                    pending_.clear();
                }
                chunk.remove_prefix(take);
            }
            if (nl == std::string_view::npos) {
                pending_.append(chunk);
                return;
            }
            if (pending_.empty()) {
                if (!chunk.empty() && chunk.back() == '\r') chunk.remove_suffix(1);
                emit(chunk, false);
            } else {
                pending_.append(chunk);
                if (pending_.back() == '\r') pending_.pop_back();
                emit(pending_, false);
                release();
            }
            data.remove_prefix(nl + 1);
        }
    }

    // A long partial line had grown the buffer: give the memory back with the line.
    void release() {
        if (pending_.capacity() > kKeptCapacity)
            std::string().swap(pending_);
        else
            pending_.clear();
    }
    static constexpr std::size_t kKeptCapacity = 1024;

    void emit(std::string_view line, bool continued) {
        try {
            (*sink_)(line, continued);
        } catch (const std::exception& e) {
            spdlog::error("logging worker output failed: {}", e.what());
        }
    }

    asio::posix::stream_descriptor sd_;
    std::shared_ptr<const OutputCapture::LineSink> sink_;
    std::string pending_;  // the partial line read so far
};

}  // namespace capture_detail
using capture_detail::Pipe;

struct OutputCapture::Impl {
    asio::io_context& io;
    std::shared_ptr<const LineSink> sink;
    std::vector<std::weak_ptr<Pipe>> pipes;
    std::shared_ptr<std::deque<std::string>> tail = std::make_shared<std::deque<std::string>>();

    void prune() {
        std::erase_if(pipes, [](const std::weak_ptr<Pipe>& w) {
            auto p = w.lock();
            return !p || !p->is_open();
        });
    }
};

OutputCapture::OutputCapture(asio::io_context& io, std::string program, int slot, LineSink sink,
                             LineSink also)
    : impl_(std::make_unique<Impl>(Impl{io, nullptr, {}})) {
    if (!sink) {
        std::string prefix = program + "[" + std::to_string(slot) + "]";
        sink = [prefix](std::string_view line, bool continued) {
            spdlog::info("{} {}{}", prefix, line, continued ? " [continued]" : "");
        };
    }
    // Keep the tail, then pass the line on.
    impl_->sink = std::make_shared<const LineSink>(
        [tail = impl_->tail, sink = std::move(sink), also = std::move(also)](std::string_view line,
                                                                             bool continued) {
            if (tail->size() == kTailLines) tail->pop_front();
            tail->emplace_back(line.substr(0, kTailLineBytes));
            sink(line, continued);
            if (also) also(line, continued);
        });
}

std::vector<std::string> OutputCapture::tail() const {
    return {impl_->tail->begin(), impl_->tail->end()};
}

// Each Pipe owns itself through its pending read and shares only the sink: nothing to do.
OutputCapture::~OutputCapture() = default;

UniqueFd OutputCapture::open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0)
        throw std::system_error(errno, std::system_category(), "pipe2() for worker output failed");
    UniqueFd write_end(fds[1]);
    // O_NONBLOCK on the read end only: it belongs to the open file description, and the
    // worker's stdout must stay blocking.
    int flags = ::fcntl(fds[0], F_GETFL);
    if (flags >= 0) ::fcntl(fds[0], F_SETFL, flags | O_NONBLOCK);
    auto pipe = std::make_shared<Pipe>(impl_->io, fds[0], impl_->sink);
    pipe->do_read();
    impl_->prune();
    impl_->pipes.push_back(pipe);
    return write_end;
}

void OutputCapture::adopt(int fd, const std::vector<std::string>& tail) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    auto pipe = std::make_shared<Pipe>(impl_->io, fd, impl_->sink);
    pipe->do_read();
    impl_->pipes.push_back(pipe);
    if (impl_->tail->empty())
        for (const auto& line : tail) {
            if (impl_->tail->size() == kTailLines) impl_->tail->pop_front();
            impl_->tail->push_back(line);
        }
}

std::vector<int> OutputCapture::fds() const {
    impl_->prune();
    std::vector<int> out;
    for (auto& w : impl_->pipes)
        if (auto p = w.lock(); p && p->fd() >= 0) out.push_back(p->fd());
    return out;
}

std::size_t OutputCapture::open_pipes() const {
    impl_->prune();
    return impl_->pipes.size();
}

void OutputCapture::close() {
    for (auto& w : impl_->pipes)
        if (auto p = w.lock(); p && p->is_open()) p->close();
    impl_->pipes.clear();
}

}  // namespace clusterd

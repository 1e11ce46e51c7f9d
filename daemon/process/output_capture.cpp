#include "daemon/process/output_capture.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <deque>
#include <system_error>
#include <vector>

namespace clusterd {

namespace asio = boost::asio;
using boost::system::error_code;

// Named, not anonymous: Impl below holds these (and unity builds include this file).
namespace capture_detail {

/// The read end of one worker's pipe, alive until EOF (its pending read holds it).
class Pipe : public std::enable_shared_from_this<Pipe> {
  public:
    Pipe(asio::io_context& io, int fd, std::shared_ptr<const OutputCapture::LineSink> sink)
        : sd_(io, fd), sink_(std::move(sink)) {}

    void do_read() {
        sd_.async_read_some(asio::buffer(buf_),
                            [self = shared_from_this()](const error_code& ec, std::size_t n) {
                                self->on_read(ec, n);
                            });
    }

    bool is_open() const { return sd_.is_open(); }
    int fd() { return sd_.is_open() ? sd_.native_handle() : -1; }

    /// Logs what is buffered and closes the read end.
    void close() {
        if (!pending_.empty()) emit(pending_, false);
        pending_.clear();
        error_code ignored;
        sd_.close(ignored);
    }

  private:
    void on_read(const error_code& ec, std::size_t n) {
        if (ec) {
            // EOF: every writer is gone. Anything else but our own close() is unexpected.
            if (ec != asio::error::eof && ec != asio::error::operation_aborted)
                spdlog::error("reading worker output failed: {}", ec.message());
            if (sd_.is_open()) close();
            return;
        }
        consume(std::string_view(buf_.data(), n));
        do_read();
    }

    // Whole lines go out as they complete; a line that outgrows kMaxLine goes out in pieces.
    void consume(std::string_view data) {
        while (!data.empty()) {
            auto nl = data.find('\n');
            std::string_view chunk = data.substr(0, nl);
            // A full buffer is emitted only once more of the same line arrives, so a line of
            // exactly kMaxLine bytes still goes out whole.
            while (pending_.size() + chunk.size() > OutputCapture::kMaxLine) {
                std::size_t take = OutputCapture::kMaxLine - pending_.size();
                pending_.append(chunk.substr(0, take));
                chunk.remove_prefix(take);
                emit(pending_, true);
                pending_.clear();
            }
            pending_.append(chunk);
            if (nl == std::string_view::npos) return;
            if (!pending_.empty() && pending_.back() == '\r') pending_.pop_back();
            emit(pending_, false);
            pending_.clear();
            data.remove_prefix(nl + 1);
        }
    }

    void emit(std::string_view line, bool continued) {
        try {
            (*sink_)(line, continued);
        } catch (const std::exception& e) {
            spdlog::error("logging worker output failed: {}", e.what());
        }
    }

    asio::posix::stream_descriptor sd_;
    std::shared_ptr<const OutputCapture::LineSink> sink_;
    std::array<char, 64 * 1024> buf_{};
    std::string pending_;
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

#include "daemon/supervisor/asio_executor.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "daemon/process/off_loop.hpp"
#include "daemon/process/proc_stats.hpp"
#include "daemon/process/reaper.hpp"
#include "daemon/process/spawner.hpp"

namespace clusterd {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

class AsioTimer final : public Timer {
  public:
    explicit AsioTimer(asio::io_context& io) : timer_(io) {}
    void arm(TimePoint at, std::function<void()> fn) override {
        timer_.expires_at(at);  // cancels what was armed: its handler sees operation_aborted
        timer_.async_wait([fn = std::move(fn)](const error_code& ec) {
            if (!ec) fn();
        });
    }
    void cancel() override { timer_.cancel(); }

  private:
    asio::steady_timer timer_;
};

}  // namespace

struct AsioExecutor::Impl {
    explicit Impl(asio::io_context& io_) : io(io_), signals(io_), off_loop(io_) {}

    void wait_signal() {
        signals.async_wait([this](const error_code& ec, int sig) {
            if (ec || finished) return;
            on_signal(sig);
            if (!finished) wait_signal();
        });
    }

    asio::io_context& io;
    asio::signal_set signals;
    std::unique_ptr<Reaper> reaper;
    std::function<void(int)> on_signal;
    bool finished = false;
    OffLoop off_loop;  // last: destroyed first, so no result arrives after the members go
};

AsioExecutor::AsioExecutor(asio::io_context& io) : impl_(std::make_unique<Impl>(io)) {}
AsioExecutor::~AsioExecutor() = default;

TimePoint AsioExecutor::now() const {
    return Clock::now();
}

std::unique_ptr<Timer> AsioExecutor::make_timer() {
    return std::make_unique<AsioTimer>(impl_->io);
}

void AsioExecutor::start(std::function<void(pid_t, int)> on_exit,
                         std::function<void(int)> on_signal) {
    impl_->reaper = std::make_unique<Reaper>(impl_->io, std::move(on_exit));
    impl_->reaper->start();
    impl_->on_signal = std::move(on_signal);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU})
        impl_->signals.add(sig);
    impl_->wait_signal();
}

void AsioExecutor::finish() {
    impl_->finished = true;
    impl_->signals.cancel();
    impl_->io.stop();
}

Started AsioExecutor::spawn(const SpawnSpec& spec, const std::string& label,
                            const std::string& path) {
    SpawnResult r = clusterd::spawn(spec);
    if (r.pid < 0) return {-1, r.error, r.call};
    auto report = [label, path, pid = r.pid](const SpawnFailure& f) {
        spdlog::critical("{}: {}(\"{}\") failed in pid {}: {}", label, spawn_step_name(f.step),
                         path, pid, std::strerror(f.error));
    };
    // The status pipe reports a failed set-up step or execve. The child has exec'd or exited
    // by the time spawn() returns (CLONE_VFORK) and the master's write end is closed: the
    // answer is there now, EOF or the report, and needs no trip through the loop. Only a
    // child of another thread's fork holding the write end could delay it: then, on the loop.
    ::fcntl(r.status_pipe.get(), F_SETFL, O_NONBLOCK);
    SpawnFailure now{};
    ssize_t got = ::read(r.status_pipe.get(), &now, sizeof now);
    if (got == 0) return {r.pid, 0, ""};
    if (got == static_cast<ssize_t>(sizeof now)) {
        report(now);
        return {r.pid, 0, ""};
    }
    auto sd = std::make_shared<asio::posix::stream_descriptor>(impl_->io);
    error_code ec;
    sd->assign(r.status_pipe.get(), ec);
    if (ec) return {r.pid, 0, ""};  // the pipe closes here; only the failure report is lost
    (void)r.status_pipe.release();  // the descriptor owns it now
    auto failure = std::make_shared<SpawnFailure>();
    sd->async_read_some(asio::buffer(failure.get(), sizeof *failure),
                        [sd, failure, report](const error_code& ec, std::size_t n) {
                            if (ec || n != sizeof *failure) return;  // EOF: execve succeeded
                            report(*failure);
                        });
    return {r.pid, 0, ""};
}

int AsioExecutor::kill(pid_t target, int sig) {
    return ::kill(target, sig) == 0 ? 0 : errno;
}

std::vector<pid_t> AsioExecutor::children() {
    std::string pid = std::to_string(::getpid());
    std::ifstream in("/proc/" + pid + "/task/" + pid + "/children");
    std::vector<pid_t> left;
    for (pid_t child; in >> child;) left.push_back(child);
    return left;
}

std::optional<ProcessFigures> AsioExecutor::figures(pid_t pid) {
    auto stats = read_proc_stats(pid);
    if (!stats) return std::nullopt;
    return ProcessFigures{stats->rss_bytes, stats->cpu_seconds};
}

// A config of a few MiB takes a second of CPU to parse, which would delay every heartbeat:
// it is read on a thread, and the loop goes on until the result is back.
void AsioExecutor::load_config(const std::string& path, std::function<void(LoadedConfig)> done) {
    impl_->off_loop.run<LoadedConfig>(
        [path] {
            LoadedConfig loaded;
            try {
                loaded.config = load_config_file(path);
            } catch (const ConfigError& e) {
                for (const auto& d : e.diagnostics())
                    loaded.error += (loaded.error.empty() ? "" : "\n") + d.to_string();
            } catch (const std::exception& e) {
                loaded.error = e.what();
            }
            return loaded;
        },
        [done = std::move(done)](LoadedConfig loaded) {
            ::malloc_trim(0);  // a large file's parse leaves its memory with the allocator
            done(std::move(loaded));
        });
}

}  // namespace clusterd

#include "worker/runtime.hpp"

#include <cstdlib>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <stdexcept>

#include "worker/address.hpp"
#include "worker/listen_fds.hpp"
#include "worker/listener.hpp"
#include "worker/notify.hpp"
#include "worker/scoreboard.hpp"

namespace clusterd::worker {

namespace detail {
struct ConnectionCount {
    std::size_t open = 0;
    std::function<void()> on_idle;
};
}  // namespace detail

ConnectionToken::ConnectionToken(std::shared_ptr<detail::ConnectionCount> count)
    : count_(std::move(count)) {
    if (count_) ++count_->open;
}

ConnectionToken& ConnectionToken::operator=(ConnectionToken&& other) noexcept {
    if (this != &other) {
        release();
        count_ = std::move(other.count_);
    }
    return *this;
}

ConnectionToken::~ConnectionToken() {
    release();
}

void ConnectionToken::release() {
    if (!count_) return;
    auto count = std::move(count_);
    if (--count->open == 0 && count->on_idle) count->on_idle();
}

struct Runtime::Impl {
    explicit Impl(RuntimeOptions opts) : options(std::move(opts)) {}

    void adopt(ListenFd socket);
    void do_signal_wait();
    void on_signal(const boost::system::error_code& ec, int sig);
    void do_heartbeat();
    void on_heartbeat(const boost::system::error_code& ec);
    void on_connection(int fd, int family);
    void on_listener_failed();
    void begin_stop(const std::string& reason);
    void finish(int code);

    RuntimeOptions options;
    std::shared_ptr<detail::ConnectionCount> count = std::make_shared<detail::ConnectionCount>();
    std::function<void(AcceptedSocket)> accept_handler;
    std::function<void()> drain_handler;
    std::chrono::microseconds heartbeat{0};
    bool watchdog = false;  // heartbeats carry WATCHDOG=1 (else only the figures)
    std::vector<std::pair<std::string, std::function<std::int64_t()>>> reports;
    /// The master's scoreboard record, when it gave one: heartbeats and figures are stores
    /// there (no datagram, nothing for the master to wake up for).
    sdk::Scoreboard board;
    bool stopping = false;
    bool finished = false;
    int exit_code = 0;
    // Declared after everything its handlers touch, so it is destroyed first. One thread runs
    // it and only that thread touches its sockets and timers, so the reactor needs no locks
    // (UNSAFE_IO); the scheduler keeps its lock, so another thread (an offload pool) may
    // still post() completions to it.
    boost::asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    std::vector<std::unique_ptr<Listener>> listeners;
    boost::asio::signal_set signals{ioc};
    boost::asio::steady_timer heartbeat_timer{ioc};
    boost::asio::steady_timer drain_timer{ioc};
};

void Runtime::Impl::adopt(ListenFd socket) {
    listeners.push_back(std::make_unique<Listener>(
        ioc, std::move(socket), [this](int fd, int family) { on_connection(fd, family); },
        [this] { on_listener_failed(); }));
}

void Runtime::Impl::do_signal_wait() {
    signals.async_wait(
        [this](const boost::system::error_code& ec, int sig) { on_signal(ec, sig); });
}

void Runtime::Impl::on_signal(const boost::system::error_code& ec, int sig) {
    if (ec) return;
    switch (sig) {
        case SIGTERM:
        case SIGINT:
            if (!stopping) {
                begin_stop(sig == SIGTERM ? "SIGTERM" : "SIGINT");
            } else if (sig == SIGINT) {
                // A second ^C means "now", as in most servers run by hand.
                spdlog::warn("SIGINT again: stopping with {} connection(s) open", count->open);
                finish(0);
            } else {
                spdlog::info("SIGTERM: already stopping, {} connection(s) open", count->open);
            }
            break;
        case SIGUSR1:
            spdlog::info("SIGUSR1: logging to stderr, no log file to reopen");
            break;
        case SIGHUP:
            spdlog::info("SIGHUP: nothing to reload");
            break;
        default:
            break;
    }
    if (!finished) do_signal_wait();
}

void Runtime::Impl::do_heartbeat() {
    heartbeat_timer.expires_after(heartbeat);
    heartbeat_timer.async_wait([this](const boost::system::error_code& ec) { on_heartbeat(ec); });
}

void Runtime::Impl::on_heartbeat(const boost::system::error_code& ec) {
    if (ec) return;
    // How late this timer ran is the loop's lag: the figure the master watches.
    auto lag = std::chrono::steady_clock::now() - heartbeat_timer.expiry();
    auto lag_us = std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::microseconds>(lag).count());
    if (board.attached()) {
        board.alive();
        board.loop_lag(static_cast<std::uint64_t>(lag_us));
        board.connections(count->open);
        std::vector<NotifyField> rest;  // figures the record has no place for
        std::uint64_t bytes_in = 0, bytes_out = 0;
        for (const auto& [name, value] : reports) {
            auto v = static_cast<std::uint64_t>(std::max<std::int64_t>(0, value()));
            if (name == "REQUESTS")
                board.requests(v);
            else if (name == "HTTP_REJECTED")
                board.rejected(v);
            else if (name == "HTTP_TIMEOUTS")
                board.timeouts(v);
            else if (name == "BYTES_IN")
                bytes_in = v;
            else if (name == "BYTES_OUT")
                bytes_out = v;
            else
                rest.emplace_back(name, static_cast<std::int64_t>(v));
        }
        board.bytes(bytes_in, bytes_out);
        if (!rest.empty()) notify_fields(rest);
        return do_heartbeat();
    }
    std::vector<NotifyField> fields{{"LOOP_LAG_US", lag_us},
                                    {"CONNECTIONS", static_cast<std::int64_t>(count->open)}};
    for (const auto& [name, value] : reports) fields.emplace_back(name, value());
    (watchdog ? notify_watchdog(fields) : notify_fields(fields));
    do_heartbeat();
}

void Runtime::Impl::on_connection(int fd, int family) {
    AcceptedSocket accepted{UniqueFd(fd), family, ConnectionToken(count)};
    if (stopping) return;  // closes it: a batch may outlive the stop
    try {
        accept_handler(std::move(accepted));
    } catch (const std::exception& e) {
        spdlog::error("dropping a connection: {}", e.what());
    }
}

void Runtime::Impl::on_listener_failed() {
    for (const auto& l : listeners) {
        if (l->is_open()) return;
    }
    if (stopping) return;
    spdlog::critical("no listener left, exiting");
    finish(1);
}

void Runtime::Impl::begin_stop(const std::string& reason) {
    if (stopping) return;
    stopping = true;
    for (auto& l : listeners) l->close();
    notify_stopping();
    spdlog::info("{}: stopping, {} connection(s) open", reason, count->open);
    if (drain_handler) {
        try {
            drain_handler();
        } catch (const std::exception& e) {
            spdlog::error("drain handler failed: {}", e.what());
        }
    }
    if (count->open == 0) return finish(0);
    if (options.drain_timeout.count() > 0) {
        drain_timer.expires_after(options.drain_timeout);
        drain_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            spdlog::warn("drain timeout: closing {} connection(s)", count->open);
            finish(0);
        });
    }
}

void Runtime::Impl::finish(int code) {
    if (finished) return;
    finished = true;
    exit_code = code;
    ioc.stop();
}

Runtime::Runtime(RuntimeOptions options) {
    // Before the io_context opens its epoll and eventfd descriptors: were fd 3 closed by
    // mistake, they would take its number and pass for the inherited socket.
    auto inherited = listen_fds();
    impl_ = std::make_unique<Impl>(std::move(options));
    // Signals next: one arriving before run() is queued, not fatal.
    if (impl_->options.handle_signals) {
        for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) impl_->signals.add(sig);
    }
    if (inherited.empty()) {
        auto address = parse_host_port(impl_->options.listen);
        if (!address) {
            throw std::invalid_argument("not a host:port address: \"" + impl_->options.listen +
                                        '"');
        }
        UniqueFd fd = bind_listener(*address, impl_->options.backlog);
        impl_->adopt({impl_->options.listen, fd.get()});
        fd.release();
    } else {
        for (auto& socket : inherited) impl_->adopt(std::move(socket));
    }
    if (auto timeout = watchdog_timeout()) {
        // Half the watchdog, as sd_notify(3) asks, but at least once a second: the master
        // steers new connections away from a worker whose heartbeat is 1.5 intervals late,
        // so a hung worker stops getting them within 1.5 s.
        impl_->heartbeat =
            std::min<std::chrono::microseconds>(*timeout / 2, std::chrono::seconds(1));
        impl_->watchdog = true;
    } else if (std::getenv("NOTIFY_SOCKET") != nullptr) {
        // No watchdog: still report the figures (loop lag, connections...) once a second.
        impl_->heartbeat = std::chrono::seconds(1);
    }
    impl_->count->on_idle = [impl = impl_.get()] {
        if (impl->stopping) impl->finish(0);
    };
}

Runtime::~Runtime() {
    impl_->count->on_idle = nullptr;
}

boost::asio::io_context& Runtime::context() {
    return impl_->ioc;
}

void Runtime::on_accept(std::function<void(AcceptedSocket)> handler) {
    impl_->accept_handler = std::move(handler);
}

void Runtime::on_drain(std::function<void()> handler) {
    impl_->drain_handler = std::move(handler);
}

std::vector<std::string> Runtime::describe_listeners() const {
    std::vector<std::string> out;
    for (const auto& l : impl_->listeners) {
        out.push_back(l->name() + " (fd " + std::to_string(l->fd()) + ')');
    }
    return out;
}

std::size_t Runtime::connections() const {
    return impl_->count->open;
}

bool Runtime::stopping() const {
    return impl_->stopping;
}

void Runtime::report(std::string name, std::function<std::int64_t()> value) {
    impl_->reports.emplace_back(std::move(name), std::move(value));
}

std::chrono::microseconds Runtime::heartbeat_interval() const {
    return impl_->watchdog ? impl_->heartbeat : std::chrono::microseconds(0);
}

void Runtime::stop() {
    impl_->begin_stop("stop requested");
}

int Runtime::run() {
    if (!impl_->accept_handler) throw std::logic_error("Runtime::run() without on_accept()");
    Impl& impl = *impl_;
    if (impl.options.handle_signals) impl.do_signal_wait();
    std::string where;
    for (auto& l : impl.listeners) {
        l->start();
        where += (where.empty() ? "" : ", ") + l->name() + " (fd " + std::to_string(l->fd()) + ')';
    }
    // Posted so READY=1 goes out from the running loop, once accepts can be served.
    boost::asio::post(impl.ioc, [&impl, where] {
        notify_ready("accepting on " + where,
                     impl.watchdog ? impl.heartbeat : std::chrono::microseconds(0));
        spdlog::info("accepting on {}", where);
        if (impl.heartbeat.count() > 0) {
            if (impl.board.attached())
                impl.board.alive();
            else if (impl.watchdog)
                notify_watchdog();
            impl.do_heartbeat();
        }
    });
    try {
        impl.ioc.run();
    } catch (const std::exception& e) {
        spdlog::critical("event loop failed: {}", e.what());
        return 1;
    }
    if (impl.exit_code == 0) spdlog::info("stopped");
    return impl.exit_code;
}

}  // namespace clusterd::worker

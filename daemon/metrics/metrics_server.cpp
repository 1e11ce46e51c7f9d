#include "daemon/metrics/metrics_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <charconv>
#include <list>
#include <optional>
#include <stdexcept>
#include <system_error>

#include "common/host_port.hpp"
#include "daemon/metrics/prometheus.hpp"
#include "daemon/net/accept_guard.hpp"

namespace clusterd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

tcp::endpoint parse_endpoint(std::string_view text) {
    std::string problem;
    auto split = split_host_port(text, &problem, true);  // port 0: any free port (tests)
    if (!split)
        throw std::invalid_argument("not a host:port address: \"" + std::string(text) + "\" (" +
                                    problem + ")");
    error_code addr_ec;
    auto addr = asio::ip::make_address(split->host, addr_ec);
    if (addr_ec) throw std::invalid_argument("not an IP address: \"" + std::string(text) + "\"");
    return {addr, split->port};
}

}  // namespace
namespace detail {
class MetricsSession;
}  // namespace detail
using detail::MetricsSession;

struct MetricsServer::State : std::enable_shared_from_this<MetricsServer::State> {
    State(asio::io_context& io, MetricsCallback m, HealthCallback h, MetricsServerOptions o)
        : acceptor(io),
          pause(io),
          metrics(std::move(m)),
          health(std::move(h)),
          options(o),
          guard("metrics endpoint") {}

    void do_accept();
    void on_accept(const error_code& ec, tcp::socket socket);
    void admit(tcp::socket socket);
    bool make_room();
    void session_closed(std::list<MetricsSession*>::iterator it, bool was_shed);
    /// Open connections not already shed.
    std::size_t live() const { return sessions.size() - shed_pending; }

    tcp::acceptor acceptor;
    asio::steady_timer pause;
    MetricsCallback metrics;
    HealthCallback health;
    MetricsServerOptions options;
    AcceptGuard guard;
    std::list<MetricsSession*> sessions;  // oldest first; each removes itself
    MetricsServerStats stats;
    std::size_t shed_pending = 0;  // shed, their handlers not yet run
    bool accepting = false;        // an async_accept is pending or paused
    bool closed = false;
};

// Not in the anonymous namespace: State (declared in the header) holds pointers to it.
namespace detail {

// One connection: read one request, write one response, close.
class MetricsSession : public std::enable_shared_from_this<MetricsSession> {
  public:
    MetricsSession(std::shared_ptr<MetricsServer::State> state, tcp::socket socket)
        : state_(std::move(state)), stream_(std::move(socket)) {
        it_ = state_->sessions.insert(state_->sessions.end(), this);
        parser_.header_limit(static_cast<std::uint32_t>(state_->options.max_request_bytes));
        parser_.body_limit(0);
        // Room for the whole head, so that the parser's limit (431) is what trips.
        buffer_.max_size(state_->options.max_request_bytes + 1024);
    }
    ~MetricsSession() { state_->session_closed(it_, shed_); }

    void start() {
        started_ = std::chrono::steady_clock::now();
        stream_.expires_after(std::min(state_->options.header_timeout, state_->options.timeout));
        http::async_read(
            stream_, buffer_, parser_,
            [self = shared_from_this()](const error_code& ec, std::size_t) { self->on_read(ec); });
    }

    void close() {
        error_code ignored;
        stream_.socket().close(ignored);
    }

    /// Still waiting for its request head (and not shed yet): a slow client may be shed.
    bool reading() const { return reading_; }
    void shed() {
        reading_ = false;
        shed_ = true;
        close();  // its read completes as aborted and the session goes
    }

  private:
    void on_read(const error_code& ec) {
        reading_ = false;
        if (state_->closed) return;
        if (ec == beast::error::timeout) {
            ++state_->stats.header_timeouts;
            return close();
        }
        if (ec == http::error::header_limit) return respond(431, "request too large\n", false);
        if (ec == http::error::body_limit) return respond(413, "no request body expected\n", false);
        if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
            ec != http::error::end_of_stream && ec != http::error::partial_message)
            return respond(400, "bad request\n", false);
        if (ec) return close();
        const auto& req = parser_.get();
        bool head = req.method() == http::verb::head;
        if (req.method() != http::verb::get && !head) return respond(405, "GET or HEAD\n", head);
        std::string_view target = req.target();
        target = target.substr(0, target.find('?'));
        try {
            if (target == "/metrics") {
                return respond(200, state_->metrics ? state_->metrics() : std::string{}, head,
                               prometheus::content_type);
            }
            if (target == "/healthz") {
                Health h = state_->health ? state_->health() : Health{};
                if (h.healthy) return respond(200, "ok\n", head);
                return respond(503, h.reason + "\n", head);
            }
        } catch (const std::exception& e) {
            return respond(500, std::string("internal error: ") + e.what() + "\n", head);
        }
        respond(404, "not found: try /metrics or /healthz\n", head);
    }

    void respond(int status, std::string body, bool head,
                 std::string_view type = "text/plain; charset=utf-8") {
        ++state_->stats.requests;
        // What is left of the whole exchange's time, for the response.
        stream_.expires_at(started_ + state_->options.timeout);
        response_.result(static_cast<unsigned>(status));
        response_.version(11);
        response_.set(http::field::server, "clusterd");
        response_.set(http::field::content_type, type);
        response_.set(http::field::connection, "close");
        if (status == 405) response_.set(http::field::allow, "GET, HEAD");
        response_.content_length(body.size());
        if (!head) response_.body() = std::move(body);
        response_.keep_alive(false);
        serializer_.emplace(response_);
        if (head) serializer_->split(true);
        auto done = [self = shared_from_this()](const error_code& ec, std::size_t) {
            if (ec == beast::error::timeout) ++self->state_->stats.timeouts;
            self->finish();
        };
        if (head) {
            http::async_write_header(stream_, *serializer_, std::move(done));
        } else {
            http::async_write(stream_, *serializer_, std::move(done));
        }
    }

    void finish() {
        error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        close();
    }

    std::shared_ptr<MetricsServer::State> state_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    http::request_parser<http::empty_body> parser_;
    http::response<http::string_body> response_;
    std::optional<http::serializer<false, http::string_body>> serializer_;
    std::list<MetricsSession*>::iterator it_;
    std::chrono::steady_clock::time_point started_{};
    bool reading_ = true;
    bool shed_ = false;
};

}  // namespace detail

void MetricsServer::State::do_accept() {
    if (closed || accepting) return;
    // Full of connections that are all writing their responses: wait for one to close.
    if (live() >= options.max_connections &&
        std::none_of(sessions.begin(), sessions.end(),
                     [](const MetricsSession* s) { return s->reading(); }))
        return;
    accepting = true;
    acceptor.async_accept([self = shared_from_this()](const error_code& ec, tcp::socket socket) {
        self->accepting = false;
        self->on_accept(ec, std::move(socket));
    });
}

void MetricsServer::State::on_accept(const error_code& ec, tcp::socket socket) {
    if (closed || ec == asio::error::operation_aborted) return;
    if (ec && AcceptGuard::is_shortage(ec.value())) {
        guard.note(ec.value());
        stats.accept_shortages = guard.shortages();
        int fd = -1;
        auto outcome = guard.shed_one(acceptor.native_handle(), fd);
        stats.accept_shed = guard.shed();
        if (outcome == AcceptGuard::Outcome::accepted) {
            tcp::socket s(acceptor.get_executor());
            error_code assign_ec;
            s.assign(acceptor.local_endpoint(assign_ec).protocol(), fd, assign_ec);
            if (assign_ec) {
                ::close(fd);
            } else {
                admit(std::move(s));
            }
        } else if (outcome == AcceptGuard::Outcome::pause) {
            accepting = true;
            pause.expires_after(AcceptGuard::kAcceptPause);
            pause.async_wait([self = shared_from_this()](const error_code& e) {
                self->accepting = false;
                if (!e) self->do_accept();
            });
            return;
        }
    } else if (!ec) {
        admit(std::move(socket));
    }
    // Other errors (a connection reset before accept) concern one connection: go on.
    do_accept();
}

void MetricsServer::State::admit(tcp::socket socket) {
    // At the limit, the new connection takes the place of the oldest slow one.
    if (live() >= options.max_connections) make_room();
    ++stats.accepted;
    try {
        std::make_shared<MetricsSession>(shared_from_this(), std::move(socket))->start();
    } catch (const std::exception&) {
        // Out of memory for one connection: it is closed; the server goes on.
    }
}

// Closes the oldest connection still reading its request head; false when there is none.
bool MetricsServer::State::make_room() {
    for (MetricsSession* s : sessions) {
        if (!s->reading()) continue;
        ++stats.shed;
        ++shed_pending;
        s->shed();
        return true;
    }
    return false;
}

void MetricsServer::State::session_closed(std::list<MetricsSession*>::iterator it, bool was_shed) {
    sessions.erase(it);
    if (was_shed) --shed_pending;
    do_accept();  // resumes after the connection limit
}

MetricsServer::MetricsServer(asio::io_context& io, std::string_view address,
                             MetricsCallback metrics, HealthCallback health,
                             MetricsServerOptions options)
    : state_(std::make_shared<State>(io, std::move(metrics), std::move(health), options)) {
    tcp::endpoint ep = parse_endpoint(address);
    auto fail = [&](const char* call, const error_code& ec) {
        throw std::system_error(ec.value(), std::system_category(),
                                std::string(call) + "(" + std::string(address) + ") failed");
    };
    error_code ec;
    state_->acceptor.open(ep.protocol(), ec);
    if (ec) fail("socket", ec);
    state_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (ec) fail("setsockopt(SO_REUSEADDR)", ec);
    state_->acceptor.bind(ep, ec);
    if (ec) fail("bind", ec);
    state_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) fail("listen", ec);
}

MetricsServer::MetricsServer(asio::io_context& io, int listener, MetricsCallback metrics,
                             HealthCallback health, MetricsServerOptions options)
    : state_(std::make_shared<State>(io, std::move(metrics), std::move(health), options)) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
        int e = errno;
        ::close(listener);
        throw std::system_error(e, std::system_category(), "getsockname(metrics listener) failed");
    }
    ::fcntl(listener, F_SETFD, FD_CLOEXEC);
    error_code ec;
    state_->acceptor.assign(addr.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), listener, ec);
    if (ec) {
        ::close(listener);
        throw std::system_error(ec.value(), std::system_category(),
                                "cannot take over the metrics listener");
    }
}

int MetricsServer::listener() const {
    return state_->acceptor.is_open() ? state_->acceptor.native_handle() : -1;
}

MetricsServer::~MetricsServer() {
    close();
}

void MetricsServer::start() {
    state_->do_accept();
}

void MetricsServer::close() {
    if (state_->closed) return;
    state_->closed = true;
    error_code ignored;
    state_->pause.cancel();
    state_->acceptor.close(ignored);
    for (MetricsSession* s : state_->sessions) s->close();
}

std::uint16_t MetricsServer::port() const {
    error_code ec;
    return state_->acceptor.local_endpoint(ec).port();
}

std::string MetricsServer::address() const {
    error_code ec;
    auto ep = state_->acceptor.local_endpoint(ec);
    if (ec) return "closed";
    std::string host = ep.address().to_string();
    if (ep.address().is_v6()) host = "[" + host + "]";
    return host + ":" + std::to_string(ep.port());
}

std::size_t MetricsServer::connections() const {
    return state_->live();
}

std::uint64_t MetricsServer::requests() const {
    return state_->stats.requests;
}

const MetricsServerStats& MetricsServer::stats() const {
    return state_->stats;
}

const MetricsServerOptions& MetricsServer::options() const {
    return state_->options;
}

}  // namespace clusterd

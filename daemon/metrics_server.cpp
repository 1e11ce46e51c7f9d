#include "daemon/metrics_server.hpp"

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

#include <charconv>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <unordered_set>

#include "daemon/prometheus.hpp"

namespace clusterd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

tcp::endpoint parse_endpoint(std::string_view text) {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
        throw std::invalid_argument("not a host:port address: \"" + std::string(text) + "\"");
    std::string_view host = text.substr(0, colon);
    std::string_view port_text = text.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    unsigned port = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535)
        throw std::invalid_argument("not a port: \"" + std::string(text) + "\"");
    error_code addr_ec;
    auto addr = asio::ip::make_address(std::string(host), addr_ec);
    if (addr_ec) throw std::invalid_argument("not an IP address: \"" + std::string(text) + "\"");
    return {addr, static_cast<unsigned short>(port)};
}

}  // namespace
namespace detail {
class MetricsSession;
}  // namespace detail
using detail::MetricsSession;

struct MetricsServer::State : std::enable_shared_from_this<MetricsServer::State> {
    State(asio::io_context& io, MetricsCallback m, HealthCallback h, MetricsServerOptions o)
        : acceptor(io), metrics(std::move(m)), health(std::move(h)), options(o) {}

    void do_accept();
    void on_accept(const error_code& ec, tcp::socket socket);
    void session_closed(MetricsSession* s);

    tcp::acceptor acceptor;
    MetricsCallback metrics;
    HealthCallback health;
    MetricsServerOptions options;
    std::unordered_set<MetricsSession*> sessions;
    std::uint64_t requests = 0;
    bool accepting = false;  // an async_accept is pending
    bool closed = false;
};

// Not in the anonymous namespace: State (declared in the header) holds pointers to it.
namespace detail {

// One connection: read one request, write one response, close.
class MetricsSession : public std::enable_shared_from_this<MetricsSession> {
  public:
    MetricsSession(std::shared_ptr<MetricsServer::State> state, tcp::socket socket)
        : state_(std::move(state)), stream_(std::move(socket)) {
        state_->sessions.insert(this);
        parser_.header_limit(static_cast<std::uint32_t>(state_->options.max_request_bytes));
        parser_.body_limit(0);
        // Room for the whole head, so that the parser's limit (431) is what trips.
        buffer_.max_size(state_->options.max_request_bytes + 1024);
    }
    ~MetricsSession() { state_->session_closed(this); }

    void start() {
        stream_.expires_after(state_->options.timeout);
        http::async_read(
            stream_, buffer_, parser_,
            [self = shared_from_this()](const error_code& ec, std::size_t) { self->on_read(ec); });
    }

    void close() {
        error_code ignored;
        stream_.socket().close(ignored);
    }

  private:
    void on_read(const error_code& ec) {
        if (state_->closed) return;
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
        ++state_->requests;
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
        auto done = [self = shared_from_this()](const error_code&, std::size_t) { self->finish(); };
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
};

}  // namespace detail

void MetricsServer::State::do_accept() {
    if (closed || accepting || sessions.size() >= options.max_connections) return;
    accepting = true;
    acceptor.async_accept([self = shared_from_this()](const error_code& ec, tcp::socket socket) {
        self->accepting = false;
        self->on_accept(ec, std::move(socket));
    });
}

void MetricsServer::State::on_accept(const error_code& ec, tcp::socket socket) {
    if (closed || ec == asio::error::operation_aborted) return;
    if (!ec) {
        try {
            std::make_shared<MetricsSession>(shared_from_this(), std::move(socket))->start();
        } catch (const std::exception&) {
            // Out of memory for one connection: it is closed; the server goes on.
        }
    }
    // Other errors (EMFILE, a connection reset before accept) concern one connection: go on.
    do_accept();
}

void MetricsServer::State::session_closed(MetricsSession* s) {
    sessions.erase(s);
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
    return state_->sessions.size();
}

std::uint64_t MetricsServer::requests() const {
    return state_->requests;
}

}  // namespace clusterd

#include "worker/http_session.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>

#include <sys/sendfile.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>

#include "worker/http_route.hpp"
#include "worker/http_server.hpp"
#include "worker/offload_pool.hpp"

namespace clusterd::worker {

namespace http = boost::beast::http;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

// Files up to this size are read into the connection's buffer and sent with the head in one
// write; larger ones go out with sendfile(2) after the head.
constexpr std::uint64_t small_file = 64 * 1024;
constexpr std::size_t sendfile_chunk = 1 << 20;
// sendfile calls per turn of the loop, so one fast reader cannot starve the others.
constexpr int sendfile_rounds = 4;
constexpr std::size_t buffer_limit = 64 * 1024;
// Pipelined requests answered on one stack before yielding to the loop.
constexpr int max_inline_depth = 16;

int status_for(const error_code& ec) {
    if (ec == http::error::body_limit) return 413;
    if (ec == http::error::header_limit) return 431;
    return 400;
}

boost::asio::generic::stream_protocol protocol_for(int family) {
    return {family, family == AF_UNIX ? 0 : IPPROTO_TCP};
}

}  // namespace

HttpSession::HttpSession(HttpServer& server, AcceptedSocket socket)
    : server_(&server),
      slot_(0),
      socket_(server.context()),
      token_(std::move(socket.token)),
      buffer_(buffer_limit) {
    socket_.assign(protocol_for(socket.family), socket.fd.get());
    socket.fd.release();
    // accept4 made the fd non-blocking; tell Asio, so write_some returns would_block.
    socket_.non_blocking(true);
    slot_ = server.add(this);
}

HttpSession::~HttpSession() {
    if (server_ != nullptr) server_->remove(slot_);
}

namespace {
constexpr std::chrono::milliseconds kDrainIdleGrace{1000};
}  // namespace

void HttpSession::start() {
    do_read();
}

bool HttpSession::idle() const {
    return state_ == State::reading && !request_started_ && buffer_.size() == 0 &&
           !(parser_ && parser_->got_some());
}

// Closing an idle keep-alive connection at once races with the client's next request,
// which would then fail. Give it a short grace instead: a request that arrives is served
// with `Connection: close` (the client reconnects, to another worker), and a connection
// still idle when the grace is over is closed by the sweep.
void HttpSession::drain() {
    if (state_ == State::lingering) return close();
    if (idle()) deadline_ = std::min(deadline_, Clock::now() + kDrainIdleGrace);
}

void HttpSession::sweep(Clock::time_point now) {
    if (state_ == State::closed) return;
    if (state_ == State::reading && !request_started_ && !idle()) {
        // The first bytes of a request arrived: from now on its head has header_timeout to
        // complete, and the whole request request_timeout.
        request_started_ = true;
        header_deadline_ = now + server_->options().header_timeout;
        deadline_ = now + server_->options().request_timeout;
    }
    bool head_late = state_ == State::reading && request_started_ && !parser_->is_header_done() &&
                     now >= header_deadline_;
    if (!head_late && now < deadline_) return;
    // A client that started a request is told why it is cut off; an idle one is not.
    if (state_ == State::reading && request_started_) return time_out();
    close();
}

void HttpSession::detach() {
    server_ = nullptr;
    close();
}

void HttpSession::do_read() {
    state_ = State::reading;
    parser_.emplace(target_, server_->options().body_limit);
    parser_->eager(true);
    request_started_ = buffer_.size() > 0;
    continue_answered_ = false;
    const auto& opts = server_->options();
    deadline_ = Clock::now() + (request_started_ ? opts.request_timeout : opts.idle_timeout);
    header_deadline_ = Clock::now() + opts.header_timeout;
    if (server_->draining()) deadline_ = std::min(deadline_, Clock::now() + kDrainIdleGrace);
    // Pipelined requests already buffered are parsed at once, but only a few levels deep on
    // this stack: a flood of tiny pipelined requests must not recurse without bound.
    if (buffer_.size() > 0) {
        if (inline_depth_ < max_inline_depth) return parse_buffered();
        inline_depth_ = 0;
        return boost::asio::post(socket_.get_executor(),
                                 [self = shared_from_this()] { self->parse_buffered(); });
    }
    read_some();
}

void HttpSession::read_some() {
    // What Beast's http::async_read does, without its composed operations: on this path
    // they cost more than the parsing (executor work tracking, a handler per layer).
    std::size_t size = boost::beast::read_size(buffer_, 65536);
    if (size == 0) return on_read(http::error::buffer_overflow);
    inline_depth_ = 0;
    socket_.async_read_some(buffer_.prepare(size),
                            [self = shared_from_this()](const error_code& ec, std::size_t n) {
                                self->on_read_some(ec, n);
                            });
}

void HttpSession::on_read_some(const error_code& ec, std::size_t n) {
    // Not reading any more: a timeout cancelled this read and answered 408.
    if (server_ == nullptr || state_ != State::reading) return;
    buffer_.commit(n);
    server_->count_in(n);
    if (ec == boost::asio::error::eof) {
        if (!parser_->got_some()) return on_read(http::error::end_of_stream);
        error_code eof_ec;
        parser_->put_eof(eof_ec);
        return on_read(eof_ec ? eof_ec : http::error::partial_message);
    }
    if (ec) return on_read(ec);
    parse_buffered();
}

void HttpSession::parse_buffered() {
    // A posted parse finds the request timed out (408) in the meantime: nothing more is read.
    if (server_ == nullptr || state_ != State::reading) return;
    while (buffer_.size() > 0 && !parser_->is_done()) {
        error_code ec;
        std::size_t used = parser_->put(buffer_.data(), ec);
        buffer_.consume(used);
        if (ec == http::error::need_more) break;
        if (ec) return on_read(ec);
        if (used == 0) break;
    }
    if (parser_->is_done()) return on_read({});
    if (parser_->expects_continue() && !continue_answered_) return on_expect_continue();
    read_some();
}

// The head asked for `100 Continue` and the body has not all arrived: tell the client to
// send it, or give the final answer now when the body cannot change it.
void HttpSession::on_expect_continue() {
    continue_answered_ = true;
    const auto& opts = server_->options();
    if (route_request(parser_->method(), target_, opts.cpu_endpoint, opts.root != nullptr) ==
        Route::method_not_allowed)
        return handle_request();  // 405; the connection closes after it (body unread)
    send_continue();
}

void HttpSession::send_continue() {
    static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
    error_code ec;
    std::size_t sent = socket_.write_some(boost::asio::buffer(interim), ec);
    if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
        ec = {};
        sent = 0;
    }
    if (ec) return close();
    if (sent == interim.size()) return read_some();
    boost::asio::async_write(socket_, boost::asio::buffer(interim.substr(sent)),
                             [self = shared_from_this()](const error_code& ec, std::size_t) {
                                 if (self->server_ == nullptr || self->state_ != State::reading)
                                     return;
                                 if (ec) return self->close();
                                 self->read_some();
                             });
}

void HttpSession::on_read(const error_code& ec) {
    if (server_ == nullptr || state_ == State::closed) return;
    if (ec == http::error::end_of_stream || ec == http::error::partial_message) return close();
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category()) {
        int status = parser_->reject_status();
        return refuse(status != 0 ? status : status_for(ec), parser_->reject_reason());
    }
    if (ec) return close();
    handle_request();
}

// A request whose framing or head is refused: the answer says what was wrong, and the
// connection closes after it, so nothing that follows is read as another request.
void HttpSession::refuse(int status, std::string_view reason) {
    server_->count_rejected();
    keep_alive_ = false;
    is_head_ = false;
    if (reason.empty()) {
        file_data_.assign(error_body(status));
    } else {
        file_data_.assign(reason_phrase(status));
        file_data_ += ": ";
        file_data_ += reason;
        file_data_ += '\n';
    }
    respond({.status = status, .keep_alive = false, .content_length = file_data_.size()},
            file_data_);
}

void HttpSession::time_out() {
    // Cancel the pending read first: its handler then sees a state other than reading.
    error_code ignored;
    socket_.cancel(ignored);
    server_->count_timeout();
    keep_alive_ = false;
    is_head_ = false;
    respond({.status = 408, .keep_alive = false, .content_length = error_body(408).size()},
            error_body(408));
}

void HttpSession::handle_request() {
    server_->count_request();
    const RequestParser& req = *parser_;
    // Answered before its body arrived (Expect: 100-continue): the unread body would be
    // taken for the next request, so the connection closes after the answer.
    keep_alive_ = req.keep_alive() && !server_->draining() && req.is_done();
    is_head_ = req.method() == http::verb::head;
    ResponseHead head{.version = req.version(), .keep_alive = keep_alive_};
    const HttpOptions& opts = server_->options();

    switch (route_request(req.method(), target_, opts.cpu_endpoint, opts.root != nullptr)) {
        case Route::healthz:
            head.content_length = 3;
            return respond(head, "ok\n");
        case Route::cpu:
            return respond_cpu();
        case Route::method_not_allowed:
            head.status = 405;
            head.allow = true;
            head.content_length = error_body(405).size();
            return respond(head, error_body(405));
        case Route::file:
            return respond_file(opts.root->open(target_));
        case Route::body:
            break;
    }
    const std::string& body = server_->options().body;
    // The common case, a keep-alive GET of the fixed body, has a head the server keeps
    // ready (rebuilt when the Date changes): nothing is formatted per request.
    if (head.version == 11 && keep_alive_ && !is_head_) return do_write(server_->body_head(), body);
    head.content_length = body.size();
    respond(head, body);
}

void HttpSession::respond_file(RootFile file) {
    ResponseHead head{.version = parser_->version(), .keep_alive = keep_alive_};
    if (file.status != 200) {
        head.status = file.status;
        head.content_length = error_body(file.status).size();
        return respond(head, error_body(file.status));
    }
    head.content_type = content_type_for(file.name);
    head.content_length = file.size;
    if (is_head_) return respond(head, {});
    if (file.size <= small_file) {
        file_data_.resize(file.size);
        ssize_t n = ::pread(file.fd.get(), file_data_.data(), file_data_.size(), 0);
        if (n != static_cast<ssize_t>(file_data_.size())) {
            // Changed under us: the head would lie about the length.
            head = {.status = 500,
                    .version = head.version,
                    .keep_alive = false,
                    .content_length = error_body(500).size()};
            keep_alive_ = false;
            return respond(head, error_body(500));
        }
        return respond(head, file_data_);
    }
    file_ = std::move(file.fd);
    file_offset_ = 0;
    file_end_ = static_cast<off_t>(file.size);
    respond(head, {});
}

// /cpu?ms=N: burn N ms of CPU on the offload pool; the loop keeps serving meanwhile.
void HttpSession::respond_cpu() {
    ResponseHead head{.version = parser_->version(), .keep_alive = keep_alive_};
    long long ms = -1;
    std::string_view query = target_;
    if (auto q = query.find("?ms="); q != std::string_view::npos) {
        query.remove_prefix(q + 4);
        auto [end, ec] = std::from_chars(query.data(), query.data() + query.size(), ms);
        if (ec != std::errc{} || end != query.data() + query.size()) ms = -1;
    }
    if (ms < 0 || ms > server_->options().cpu_limit_ms) {
        head.status = 400;
        file_data_ = "expected /cpu?ms=N with N from 0 to " +
                     std::to_string(server_->options().cpu_limit_ms) + "\n";
        head.content_length = file_data_.size();
        return respond(head, file_data_);
    }
    state_ = State::writing;  // not idle: a drain lets it finish
    deadline_ = Clock::now() + std::chrono::milliseconds(ms) + server_->options().send_timeout;
    auto used_us = std::make_shared<long long>(0);
    server_->pool().submit([ms, used_us] { *used_us = burn_cpu_ms(ms); },
                           [self = shared_from_this(), head, used_us]() mutable {
                               if (self->server_ == nullptr || self->state_ == State::closed)
                                   return;
                               self->file_data_ = "burned " + std::to_string(*used_us / 1000) +
                                                  " ms of CPU off the loop\n";
                               head.content_length = self->file_data_.size();
                               self->respond(head, self->file_data_);
                           });
}

void HttpSession::respond(ResponseHead head, std::string_view body) {
    head_.clear();
    append_head(head_, head, server_->date());
    do_write(head_, is_head_ ? std::string_view{} : body);
}

void HttpSession::do_write(std::string_view head, std::string_view body) {
    state_ = State::writing;
    std::array<boost::asio::const_buffer, 2> buffers{boost::asio::buffer(head.data(), head.size()),
                                                     boost::asio::buffer(body.data(), body.size())};
    // A small response almost always fits the socket's send buffer: one sendmsg now, and the
    // next request is read without a trip through the scheduler. The rest, if any, goes
    // out asynchronously.
    error_code ec;
    std::size_t total = head.size() + body.size();
    std::size_t sent = socket_.write_some(buffers, ec);
    if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
        ec = {};
        sent = 0;
    }
    if (ec) return close();
    server_->count_out(sent);
    if (sent == total) {
        ++inline_depth_;
        return on_write({});
    }
    deadline_ = Clock::now() + server_->options().send_timeout;
    // The rest of the head is kept here: a head the server owns may change before the
    // write completes. Bodies outlive the write (the server's, the session's, static text).
    std::array<boost::asio::const_buffer, 2> remaining{};
    if (sent < head.size()) {
        if (head.data() != head_.data())
            head_.assign(head.substr(sent));
        else
            head_.erase(0, sent);
        remaining[0] = boost::asio::buffer(head_);
        remaining[1] = boost::asio::buffer(body.data(), body.size());
    } else {
        remaining[1] = boost::asio::buffer(body.data(), body.size()) + (sent - head.size());
    }
    boost::asio::async_write(socket_, remaining,
                             [self = shared_from_this()](const error_code& ec, std::size_t n) {
                                 if (self->server_ != nullptr) self->server_->count_out(n);
                                 self->on_write(ec);
                             });
}

void HttpSession::on_write(const error_code& ec) {
    if (server_ == nullptr || state_ == State::closed) return;
    if (ec) return close();
    if (file_) return do_sendfile();
    finish_response();
}

void HttpSession::do_sendfile() {
    for (int round = 0; round < sendfile_rounds; ++round) {
        std::size_t want = static_cast<std::size_t>(file_end_ - file_offset_);
        if (want == 0) {
            file_.reset();
            return finish_response();
        }
        ssize_t n = ::sendfile(socket_.native_handle(), file_.get(), &file_offset_,
                               want < sendfile_chunk ? want : sendfile_chunk);
        if (n > 0) {
            server_->count_out(static_cast<std::size_t>(n));
            deadline_ = Clock::now() + server_->options().send_timeout;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        // n == 0: the file shrank; the promised length can no longer be kept.
        file_.reset();
        return close();
    }
    socket_.async_wait(boost::asio::socket_base::wait_write,
                       [self = shared_from_this()](const error_code& ec) {
                           if (self->server_ == nullptr || self->state_ == State::closed) return;
                           if (ec) return self->close();
                           self->do_sendfile();
                       });
}

void HttpSession::finish_response() {
    // The response promised keep-alive: even while draining, the client may already be
    // sending its next request. Read it (it gets `Connection: close`) or close after the
    // drain grace.
    if (keep_alive_) return do_read();
    bool fully_read = parser_ && parser_->is_done();
    if (fully_read && buffer_.size() == 0) return close();
    // Input is still arriving (an error response, or pipelined requests): closing now would
    // reset the connection and could destroy the response before the peer reads it.
    do_linger();
}

void HttpSession::do_linger() {
    if (state_ != State::lingering) {
        state_ = State::lingering;
        deadline_ = Clock::now() + server_->options().linger_timeout;
        error_code ignored;
        socket_.shutdown(boost::asio::socket_base::shutdown_send, ignored);
        buffer_.clear();
    }
    socket_.async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this()](const error_code& ec, std::size_t) { self->on_linger(ec); });
}

void HttpSession::on_linger(const error_code& ec) {
    if (server_ == nullptr || state_ == State::closed) return;
    if (ec) return close();
    do_linger();
}

void HttpSession::close() {
    state_ = State::closed;
    error_code ignored;
    socket_.close(ignored);
    file_.reset();
    token_.release();
}

}  // namespace clusterd::worker

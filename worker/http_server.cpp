#include "worker/http_server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <ctime>

#include "worker/http_response.hpp"
#include "worker/http_session.hpp"

namespace clusterd::worker {

HttpServer::HttpServer(boost::asio::io_context& ioc, HttpOptions options)
    : ioc_(ioc), options_(std::move(options)), sweep_(ioc), pool_(ioc, options_.offload_threads) {
    update_date();
}

HttpServer::~HttpServer() {
    // Sessions still referenced by pending handlers are destroyed with the io_context, after
    // this; they must not call back.
    auto sessions = std::move(sessions_);
    for (HttpSession* s : sessions) s->detach();
}

void HttpServer::start() {
    do_sweep();
}

void HttpServer::accept(AcceptedSocket socket) {
    if (socket.family == AF_INET || socket.family == AF_INET6) {
        int one = 1;
        ::setsockopt(socket.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    std::make_shared<HttpSession>(*this, std::move(socket))->start();
}

void HttpServer::drain() {
    draining_ = true;
    // drain() may close sessions, but removal only happens in their destructors, later.
    for (std::size_t i = 0; i < sessions_.size(); ++i) sessions_[i]->drain();
}

std::size_t HttpServer::add(HttpSession* session) {
    sessions_.push_back(session);
    return sessions_.size() - 1;
}

void HttpServer::remove(std::size_t slot) {
    // Swap-remove: O(1); the session moved into `slot` is told its new place.
    if (slot + 1 != sessions_.size()) {
        sessions_[slot] = sessions_.back();
        sessions_[slot]->slot_ = slot;
    }
    sessions_.pop_back();
}

void HttpServer::do_sweep() {
    sweep_.expires_after(std::chrono::seconds(1));
    sweep_.async_wait([this](const boost::system::error_code& ec) { on_sweep(ec); });
}

void HttpServer::on_sweep(const boost::system::error_code& ec) {
    if (ec) return;
    update_date();
    sweep(std::chrono::steady_clock::now());
    do_sweep();
}

void HttpServer::sweep(std::chrono::steady_clock::time_point now) {
    for (std::size_t i = 0; i < sessions_.size(); ++i) sessions_[i]->sweep(now);
}

void HttpServer::update_date() {
    date_len_ = format_http_date(std::time(nullptr), date_);
    body_head_.clear();
    append_head(body_head_, {.content_length = options_.body.size()}, date());
}

}  // namespace clusterd::worker

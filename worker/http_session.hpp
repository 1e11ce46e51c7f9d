// One HTTP/1.1 connection: read a request, answer it, repeat while keep-alive lasts. The
// buffer, parser storage, target string and response head are reused across requests.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/fd.hpp"
#include "worker/document_root.hpp"
#include "worker/http_response.hpp"
#include "worker/request_parser.hpp"
#include "worker/runtime.hpp"

namespace clusterd::worker {

class HttpServer;

/// Serves the requests of one connection; owned by its pending operations (shared_ptr).
class HttpSession : public std::enable_shared_from_this<HttpSession> {
  public:
    /// Adopts the accepted socket; throws boost::system::system_error if it cannot.
    HttpSession(HttpServer& server, AcceptedSocket socket);
    ~HttpSession();
    HttpSession(const HttpSession&) = delete;
    HttpSession& operator=(const HttpSession&) = delete;

    /// Starts reading the first request.
    void start();
    /// Graceful stop: closes now if idle between requests, else after this response.
    void drain();
    /// Closes the connection if its current deadline has passed.
    void sweep(std::chrono::steady_clock::time_point now);
    /// Forgets the server (it is going away) and closes the socket.
    void detach();

  private:
    friend class HttpServer;  // keeps slot_ current when the registry moves the session
    enum class State { reading, writing, lingering, closed };

    void do_read();
    void read_some();
    void on_read_some(const boost::system::error_code& ec, std::size_t n);
    void parse_buffered();
    void on_read(const boost::system::error_code& ec);
    void on_expect_continue();
    void send_continue();
    void refuse(int status, std::string_view reason);
    void time_out();
    void handle_request();
    void respond(ResponseHead head, std::string_view body);
    void respond_file(RootFile file);
    void respond_cpu();
    void do_write(std::string_view head, std::string_view body);
    void on_write(const boost::system::error_code& ec);
    void do_sendfile();
    void finish_response();
    void do_linger();
    void on_linger(const boost::system::error_code& ec);
    void close();
    bool idle() const;

    HttpServer* server_;
    std::size_t slot_;
    boost::asio::generic::stream_protocol::socket socket_;
    ConnectionToken token_;
    boost::beast::flat_buffer buffer_;
    std::string target_;
    std::optional<RequestParser> parser_;
    std::string head_;
    std::string file_data_;
    UniqueFd file_;
    off_t file_offset_ = 0;
    off_t file_end_ = 0;
    bool is_head_ = false;
    bool keep_alive_ = false;
    bool request_started_ = false;
    bool continue_answered_ = false;
    int inline_depth_ = 0;
    State state_ = State::reading;
    std::chrono::steady_clock::time_point deadline_;
    // The head of a started request must be complete by then (reading only).
    std::chrono::steady_clock::time_point header_deadline_;
};

}  // namespace clusterd::worker

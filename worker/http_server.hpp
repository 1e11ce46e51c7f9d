// The built-in worker's HTTP/1.1 server: owns the open connections of one loop, their
// timeouts (one sweep a second instead of a timer per request) and the cached Date header.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "worker/document_root.hpp"
#include "worker/offload_pool.hpp"
#include "worker/runtime.hpp"

namespace clusterd::worker {

class HttpSession;

/// What the server answers and how long it waits.
struct HttpOptions {
    /// Body of every response for other paths when there is no root.
    std::string body = "Hello from clusterd-worker\n";
    /// Serve files from here instead of `body`; null for none.
    std::shared_ptr<const DocumentRoot> root;
    /// A keep-alive connection may sit idle this long.
    std::chrono::seconds idle_timeout{60};
    /// From the first byte of a request to the end of its head: 408 and a close after it
    /// (the slowloris bound).
    std::chrono::seconds header_timeout{10};
    /// From the first byte of a request to its last, body included: 408 and a close after it.
    std::chrono::seconds request_timeout{30};
    /// Without progress while sending a response.
    std::chrono::seconds send_timeout{60};
    /// Discarding input after an error response, so the peer reads it before the close.
    std::chrono::seconds linger_timeout{2};
    /// Request bodies are read and discarded up to this size; larger ones get 413. (The
    /// head is limited by Beast's parser to 8 KiB: 431.)
    std::uint64_t body_limit = 1 << 20;
    /// Serve /cpu?ms=N (burn N ms on the offload pool): a demonstration and test endpoint,
    /// off by default since it lets any client spend the server's CPU.
    bool cpu_endpoint = false;
    /// Threads of the offload pool that serves /cpu (CPU work kept off the loop).
    std::size_t offload_threads = 2;
    /// The largest N of /cpu?ms=N.
    long long cpu_limit_ms = 10'000;
};

/// Serves HTTP on the connections the runtime hands it.
class HttpServer {
  public:
    /// A server on `ioc`; call start() before the loop runs.
    HttpServer(boost::asio::io_context& ioc, HttpOptions options);
    /// Closes what is still open; the sessions outlive it only as closed sockets.
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    /// Starts the once-a-second sweep.
    void start();
    /// Serves one accepted connection.
    void accept(AcceptedSocket socket);
    /// Graceful stop: closes idle connections, lets the others finish their request.
    void drain();
    /// Applies every connection's timeouts as of `now` (the once-a-second timer calls it;
    /// tests call it with a simulated time).
    void sweep(std::chrono::steady_clock::time_point now);

    /// True once drain() ran: no more keep-alive.
    bool draining() const { return draining_; }
    /// The loop the connections run on.
    boost::asio::io_context& context() { return ioc_; }
    /// The configuration.
    const HttpOptions& options() const { return options_; }
    /// The current Date header value, refreshed every second.
    std::string_view date() const { return {date_, date_len_}; }
    /// Where CPU-heavy work runs, off the loop.
    OffloadPool& pool() { return pool_; }
    /// The head of a 200 keep-alive HTTP/1.1 response carrying options().body, with the
    /// current Date; valid until the next sweep.
    std::string_view body_head() const { return body_head_; }
    /// Open connections.
    std::size_t sessions() const { return sessions_.size(); }
    /// Requests answered since start.
    std::uint64_t requests() const { return requests_; }
    void count_request() { ++requests_; }
    /// Requests refused for their head or body (400, 413, 417, 431, 501) since start.
    std::uint64_t rejected() const { return rejected_; }
    void count_rejected() { ++rejected_; }
    /// Requests that did not arrive within the header or request timeout (408) since start.
    std::uint64_t timeouts() const { return timeouts_; }
    void count_timeout() { ++timeouts_; }
    /// Bytes read from clients, and written to them (heads, bodies, files), since start.
    std::uint64_t bytes_in() const { return bytes_in_; }
    std::uint64_t bytes_out() const { return bytes_out_; }
    void count_in(std::size_t n) { bytes_in_ += n; }
    void count_out(std::size_t n) { bytes_out_ += n; }

    /// Registers a session (HttpSession calls it); returns its slot.
    std::size_t add(HttpSession* session);
    /// Unregisters the session in `slot`.
    void remove(std::size_t slot);

  private:
    void do_sweep();
    void on_sweep(const boost::system::error_code& ec);
    void update_date();

    boost::asio::io_context& ioc_;
    HttpOptions options_;
    boost::asio::steady_timer sweep_;
    std::vector<HttpSession*> sessions_;
    std::string body_head_;
    char date_[32] = {};
    std::size_t date_len_ = 0;
    bool draining_ = false;
    // Last: joined first on destruction, before anything its completions refer to.
    OffloadPool pool_;
    std::uint64_t requests_ = 0;
    std::uint64_t rejected_ = 0;
    std::uint64_t timeouts_ = 0;
    std::uint64_t bytes_in_ = 0;
    std::uint64_t bytes_out_ = 0;
};

}  // namespace clusterd::worker

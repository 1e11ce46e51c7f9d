// sdk_example: a complete clusterd worker written against worker/sdk.hpp and
// worker/sdk_asio.hpp only (header-only; links nothing of clusterd). A minimal HTTP/1.0-style
// server: every request gets "sdk_example worker <slot> pid <pid>" and the connection closes.
//
// It takes its sockets from clusterd (LISTEN_FDS), sends READY=1 once accepting, heartbeats
// from its own loop when a watchdog is set, and on SIGTERM stops accepting, finishes the
// requests in flight and exits 0. Without inherited sockets it exits 78 ("bad config").
#include <unistd.h>

#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "worker/sdk.hpp"
#include "worker/sdk_asio.hpp"

namespace sdk = clusterd::sdk;
namespace net = sdk::net;
using tcp = net::ip::tcp;

namespace {

class Server {
  public:
    explicit Server(net::io_context&) {}

    void add(sdk::TcpListener listener) { listeners_.push_back(std::move(listener)); }

    void start() {
        for (auto& l : listeners_) do_accept(l.acceptor);
    }

    /// Stop accepting; the loop returns once the open connections are done.
    void stop() {
        for (auto& l : listeners_) {
            sdk::error_code ignored;
            l.acceptor.close(ignored);
        }
    }

  private:
    struct Connection {
        explicit Connection(tcp::socket s) : socket(std::move(s)) {}
        tcp::socket socket;
        net::streambuf request;
        std::string response;
    };

    void do_accept(tcp::acceptor& acceptor) {
        acceptor.async_accept([this, &acceptor](const sdk::error_code& ec, tcp::socket socket) {
            if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
            if (!ec) serve(std::make_shared<Connection>(std::move(socket)));
            do_accept(acceptor);
        });
    }

    void serve(std::shared_ptr<Connection> c) {
        net::async_read_until(c->socket, c->request, "\r\n\r\n",
                              [this, c](const sdk::error_code& ec, std::size_t) {
                                  if (!ec) respond(c);
                              });
    }

    void respond(const std::shared_ptr<Connection>& c) {
        std::string body = "sdk_example worker " + std::to_string(sdk::worker_id()) + " pid " +
                           std::to_string(::getpid()) + "\n";
        c->response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        net::async_write(c->socket, net::buffer(c->response),
                         [c](const sdk::error_code&, std::size_t) {
                             sdk::error_code ignored;
                             c->socket.shutdown(tcp::socket::shutdown_both, ignored);
                         });
    }

    std::vector<sdk::TcpListener> listeners_;
};

}  // namespace

int main() {
    net::io_context io{1};
    Server server(io);
    std::vector<sdk::ListenFd> fds;
    try {
        fds = sdk::listen_fds();
        for (auto& l : sdk::tcp_listeners(io, fds)) server.add(std::move(l));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sdk_example: %s\n", e.what());
        return sdk::exit_bad_config;
    }
    if (fds.empty()) {
        std::fprintf(stderr, "sdk_example: no inherited socket (run me under clusterd)\n");
        return sdk::exit_bad_config;
    }
    // Its heartbeats go to its scoreboard record when clusterd gave one (else by datagram).
    sdk::Scoreboard board(sdk::kFlagHeartbeat);
    sdk::Heartbeat heartbeat(io, sdk::watchdog_interval(), &board);
    sdk::GracefulStop stop(io, [&](int sig) {
        std::printf("sdk_example: signal %d, stopping\n", sig);
        std::fflush(stdout);
        server.stop();
        heartbeat.stop();
    });
    server.start();
    sdk::notify_ready("accepting on " + fds.front().name);
    heartbeat.start();
    std::printf("sdk_example: pid %d ready on %zu socket(s), heartbeat every %lld us\n", ::getpid(),
                fds.size(), static_cast<long long>(heartbeat.interval().count()));
    std::fflush(stdout);
    // Returns when nothing is left: acceptors closed, connections done, heartbeat stopped.
    io.run();
    std::printf("sdk_example: pid %d stopped\n", ::getpid());
    return 0;
}

// clusterd-worker: the built-in HTTP/1.1 worker. Serves a fixed body or the files under
// --root on the sockets inherited from clusterd (or --listen when run by hand).
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <exception>
#include <optional>
#include <system_error>

#include "common/exit_codes.hpp"
#include "worker/address.hpp"
#include "worker/document_root.hpp"
#include "worker/http_server.hpp"
#include "worker/logging.hpp"
#include "worker/runtime.hpp"

namespace {

using namespace clusterd;
using namespace clusterd::worker;

struct Options {
    std::string listen = "127.0.0.1:8080";
    std::string root;
    std::string body = "Hello from clusterd-worker\n";
    double drain_timeout = 0;
    long long header_timeout = 10;
    long long request_timeout = 30;
    std::size_t offload_threads = 2;
    bool cpu_endpoint = false;
    long long debug_block_after_ms = -1;
};

// --debug-block-after: a loop stuck for good (a runaway regex, a busy loop), on purpose, so
// the master's watchdog can be seen replacing it. The heartbeat stops with the loop.
void block_loop_forever() {
    spdlog::warn("--debug-block-after: blocking the event loop forever");
    spdlog::default_logger()->flush();
    for (;;) ::pause();
}

int serve(const Options& opts, std::shared_ptr<const DocumentRoot> root) {
    RuntimeOptions runtime_opts;
    runtime_opts.listen = opts.listen;
    runtime_opts.drain_timeout =
        std::chrono::milliseconds(static_cast<long long>(opts.drain_timeout * 1000));
    Runtime runtime(runtime_opts);

    HttpOptions http_opts;
    http_opts.body = opts.body;
    http_opts.root = std::move(root);
    http_opts.offload_threads = opts.offload_threads;
    http_opts.cpu_endpoint = opts.cpu_endpoint;
    http_opts.header_timeout = std::chrono::seconds(opts.header_timeout);
    http_opts.request_timeout = std::chrono::seconds(opts.request_timeout);
    // Declared after the runtime: destroyed before the io_context its sessions live on.
    HttpServer server(runtime.context(), std::move(http_opts));
    runtime.on_accept([&server](AcceptedSocket socket) { server.accept(std::move(socket)); });
    runtime.on_drain([&server] { server.drain(); });
    runtime.report("REQUESTS", [&server] { return static_cast<std::int64_t>(server.requests()); });
    runtime.report("HTTP_REJECTED",
                   [&server] { return static_cast<std::int64_t>(server.rejected()); });
    runtime.report("HTTP_TIMEOUTS",
                   [&server] { return static_cast<std::int64_t>(server.timeouts()); });
    runtime.report("BYTES_IN", [&server] { return static_cast<std::int64_t>(server.bytes_in()); });
    runtime.report("BYTES_OUT",
                   [&server] { return static_cast<std::int64_t>(server.bytes_out()); });
    server.start();
    boost::asio::steady_timer block_timer(runtime.context());
    if (opts.debug_block_after_ms >= 0) {
        block_timer.expires_after(std::chrono::milliseconds(opts.debug_block_after_ms));
        block_timer.async_wait([](const boost::system::error_code& ec) {
            if (!ec) block_loop_forever();
        });
    }
    return runtime.run();
}

// The command line, into `opts`; an exit code when it says to exit (--help, --version, an
// error). Under clusterd the built-in worker usually has no arguments: then there is nothing
// to parse, and no parser is built (CLI11's, with its validators and default strings, is
// work done before the worker can be ready, at every restart).
std::optional<int> parse_command_line(int argc, char** argv, Options& opts) {
    if (argc <= 1) return std::nullopt;
    CLI::App app{
        "The built-in HTTP/1.1 worker of clusterd: serves a fixed body, or the files\n"
        "under --root, on the sockets clusterd passes (LISTEN_FDS), or on --listen.",
        "clusterd-worker"};
    app.add_option("--listen", opts.listen,
                   "HOST:PORT to bind when no socket is inherited ([v6]:port for IPv6)")
        ->type_name("HOST:PORT")
        ->capture_default_str();
    auto* root_opt =
        app.add_option("--root", opts.root, "Serve the files under DIR (a directory: index.html)")
            ->type_name("DIR");
    app.add_option("--body", opts.body, "Body of every response when there is no --root")
        ->type_name("TEXT")
        ->excludes(root_opt);
    app.add_option("--drain-timeout", opts.drain_timeout,
                   "After TERM, close connections still open after SECONDS (0 = wait)")
        ->type_name("SECONDS")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--header-timeout", opts.header_timeout,
                   "Answer 408 and close when a request's head is not complete SECONDS after "
                   "its first byte (slow clients holding connections)")
        ->type_name("SECONDS")
        ->check(CLI::Range(1, 3600))
        ->capture_default_str();
    app.add_option("--request-timeout", opts.request_timeout,
                   "Answer 408 and close when a request, body included, is not complete "
                   "SECONDS after its first byte")
        ->type_name("SECONDS")
        ->check(CLI::Range(1, 3600))
        ->capture_default_str();
    app.add_flag("--cpu-endpoint", opts.cpu_endpoint,
                 "Serve /cpu?ms=N: N ms of CPU work on the offload pool, off the loop (a demo; "
                 "off by default, it lets any client spend CPU)");
    app.add_option("--threads", opts.offload_threads,
                   "Threads of the offload pool that runs CPU work (/cpu?ms=N) off the loop")
        ->type_name("N")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    app.add_option("--debug-block-after", opts.debug_block_after_ms,
                   "Testing: block the event loop forever MS milliseconds after start (the "
                   "heartbeat stops; the master's watchdog replaces the worker)")
        ->type_name("MS")
        ->check(CLI::NonNegativeNumber);
    app.set_version_flag("--version", std::string("clusterd-worker ") + CLUSTERD_VERSION);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? exit_code::ok : exit_code::worker_bad_config;
    }
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
    init_logging("clusterd-worker");
    // sendfile(2) has no MSG_NOSIGNAL: a peer that went away must not kill the worker.
    std::signal(SIGPIPE, SIG_IGN);

    Options opts;
    if (auto rc = parse_command_line(argc, argv, opts)) return *rc;
    if (!parse_host_port(opts.listen)) {
        spdlog::error("--listen: not a HOST:PORT address: \"{}\"", opts.listen);
        return exit_code::worker_bad_config;
    }

    std::shared_ptr<const DocumentRoot> root;
    if (!opts.root.empty()) {
        try {
            root = std::make_shared<const DocumentRoot>(opts.root);
        } catch (const std::system_error& e) {
            spdlog::error("--root: {}", e.what());
            return exit_code::worker_bad_config;
        }
    }

    spdlog::info("clusterd-worker {} starting, pid {}, {}", CLUSTERD_VERSION, ::getpid(),
                 root ? "serving files from " + root->path()
                      : "serving a fixed body of " + std::to_string(opts.body.size()) + " bytes");
    int rc = 1;
    try {
        rc = serve(opts, std::move(root));
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
    }
    spdlog::shutdown();
    return rc;
}

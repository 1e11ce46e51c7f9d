#include "daemon/control_server.hpp"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <system_error>

namespace clusterd {

namespace asio = boost::asio;
using boost::system::error_code;
using stream = asio::local::stream_protocol;

namespace {

constexpr std::size_t kMaxLine = 64 * 1024;

// Supplementary groups of a process, from /proc/PID/status.
bool in_group(pid_t pid, gid_t gid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (!line.starts_with("Groups:")) continue;
        std::istringstream groups(line.substr(7));
        unsigned long g;
        while (groups >> g)
            if (g == gid) return true;
    }
    return false;
}

// One client connection: reads a line, hands it to the handler, writes what the handler
// reports, and reads the next line only once the final reply is written.
class ControlSession : public std::enable_shared_from_this<ControlSession> {
  public:
    ControlSession(stream::socket socket, ControlServer::Handler& handler)
        : socket_(std::move(socket)), buffer_(kMaxLine), handler_(handler) {}

    void start() { do_read(); }

    void send(std::string line) {
        line += '\n';
        bool idle = queue_.empty();
        queue_.push_back(std::move(line));
        if (idle) do_write();
    }

    void finished() {
        busy_ = false;
        if (!closed_) do_read();
    }

    void reject(const std::string& why) {
        send(nlohmann::json{{"ok", false}, {"message", why}}.dump());
        close_after_write_ = true;
    }

  private:
    void do_read() {
        if (busy_ || closed_) return;
        asio::async_read_until(socket_, buffer_, '\n',
                               [self = shared_from_this()](const error_code& ec, std::size_t n) {
                                   self->on_read(ec, n);
                               });
    }

    void on_read(const error_code& ec, std::size_t n);

    void do_write() {
        asio::async_write(
            socket_, asio::buffer(queue_.front()),
            [self = shared_from_this()](const error_code& ec, std::size_t) { self->on_write(ec); });
    }

    void on_write(const error_code& ec) {
        if (ec) {
            closed_ = true;
            queue_.clear();
            return;
        }
        queue_.pop_front();
        if (!queue_.empty()) return do_write();
        if (close_after_write_) {
            closed_ = true;
            error_code ignored;
            socket_.shutdown(stream::socket::shutdown_send, ignored);
            do_discard(0);
        }
    }

    // Closing with unread input would reset the connection and could destroy the reply
    // before the client reads it: read and drop what it still sends (up to a bound) first.
    void do_discard(std::size_t total) {
        if (total > kMaxDiscard) return close_now();
        socket_.async_read_some(asio::buffer(scratch_), [self = shared_from_this(), total](
                                                            const error_code& ec, std::size_t n) {
            if (ec) return self->close_now();
            self->do_discard(total + n);
        });
    }

    void close_now() {
        error_code ignored;
        socket_.close(ignored);
    }

    static constexpr std::size_t kMaxDiscard = 1024 * 1024;
    std::array<char, 4096> scratch_{};

    stream::socket socket_;
    asio::streambuf buffer_;
    ControlServer::Handler& handler_;
    std::deque<std::string> queue_;
    bool busy_ = false;
    bool closed_ = false;
    bool close_after_write_ = false;
};

class SessionReporter : public Reporter {
  public:
    explicit SessionReporter(std::shared_ptr<ControlSession> s) : session_(std::move(s)) {}
    void progress(const std::string& line) override {
        session_->send(nlohmann::json{{"progress", line}}.dump(
            -1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    void finish(const nlohmann::json& reply) override {
        if (done_) return;
        // A worker's STATUS= text may not be UTF-8: replace, never throw.
        session_->send(reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        done_ = true;
        session_->finished();
    }

  private:
    std::shared_ptr<ControlSession> session_;
    bool done_ = false;
};

void ControlSession::on_read(const error_code& ec, std::size_t n) {
    if (ec == asio::error::not_found) {
        return reject("request line longer than " + std::to_string(kMaxLine) + " bytes");
    }
    if (ec) {
        closed_ = true;  // client gone (EOF) or reset
        return;
    }
    std::string line(asio::buffers_begin(buffer_.data()),
                     asio::buffers_begin(buffer_.data()) + static_cast<std::ptrdiff_t>(n));
    buffer_.consume(n);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.empty()) return do_read();
    nlohmann::json request = nlohmann::json::parse(line, nullptr, false);
    if (request.is_discarded() || !request.is_object()) {
        send(
            nlohmann::json{{"ok", false}, {"message", "expected one JSON object per line"}}.dump());
        return do_read();
    }
    busy_ = true;
    auto reporter = std::make_shared<SessionReporter>(shared_from_this());
    try {
        handler_(request, reporter);
    } catch (const std::exception& e) {
        spdlog::error("control request {} failed: {}",
                      request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                      e.what());
        reporter->finish({{"ok", false}, {"message", std::string("internal error: ") + e.what()}});
    }
}

}  // namespace

struct ControlServer::Impl : std::enable_shared_from_this<ControlServer::Impl> {
    Impl(asio::io_context& io, std::string p, Handler h)
        : acceptor(io), path(std::move(p)), handler(std::move(h)) {}

    void do_accept() {
        acceptor.async_accept(
            [self = shared_from_this()](const error_code& ec, stream::socket socket) {
                if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
                if (!ec) self->on_accept(std::move(socket));
                self->do_accept();
            });
    }

    void on_accept(stream::socket socket) {
        ucred cred{};
        socklen_t len = sizeof cred;
        int rc = ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len);
        auto session = std::make_shared<ControlSession>(std::move(socket), handler);
        if (rc < 0) return session->reject("cannot read peer credentials");
        bool allowed = cred.uid == 0 || cred.uid == ::geteuid() ||
                       (group && (cred.gid == *group || in_group(cred.pid, *group)));
        if (!allowed) {
            spdlog::warn("control socket: refused uid {} (pid {})", cred.uid, cred.pid);
            return session->reject("permission denied: uid " + std::to_string(cred.uid) +
                                   " may not control clusterd");
        }
        session->start();
    }

    stream::acceptor acceptor;
    std::string path;
    Handler handler;
    std::optional<gid_t> group;
};

ControlServer::ControlServer(asio::io_context& io, const std::string& path,
                             const std::string& group, Handler handler)
    : impl_(std::make_shared<Impl>(io, path, std::move(handler))) {
    if (!group.empty()) {
        struct group* g = ::getgrnam(group.c_str());
        if (g == nullptr)
            throw std::runtime_error("control_group: unknown group \"" + group + "\"");
        impl_->group = g->gr_gid;
    }
    // Root's /run/clusterd is world-readable (control_group members reach the socket); any
    // other user's directory is private, and must not be one another user prepared for us.
    auto dir = path.substr(0, path.rfind('/'));
    bool root = ::geteuid() == 0;
    if (!dir.empty() && ::mkdir(dir.c_str(), root ? 0755 : 0700) < 0 && errno != EEXIST)
        throw std::system_error(errno, std::system_category(), "mkdir(" + dir + ") failed");
    if (!root && !dir.empty()) {
        struct stat d {};
        if (::lstat(dir.c_str(), &d) < 0 || !S_ISDIR(d.st_mode))
            throw std::runtime_error(dir + " is not a directory");
        bool others_write = (d.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (d.st_mode & S_ISVTX) == 0;
        if ((d.st_uid != ::geteuid() && d.st_uid != 0) || others_write)
            throw std::runtime_error("refusing " + dir + ": owned by uid " +
                                     std::to_string(d.st_uid) +
                                     (others_write ? " and writable by others" : ""));
    }
    // A socket file left by a daemon that died: remove it, unless somebody answers there.
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            throw std::runtime_error("control socket path " + path + " exists and is not a socket");
        stream::socket probe(io);
        error_code ec;
        probe.connect(stream::endpoint(path), ec);
        if (!ec) throw std::runtime_error("another clusterd answers on " + path);
        ::unlink(path.c_str());
    }
    mode_t old = ::umask(0177);
    error_code ec;
    impl_->acceptor.open(stream(), ec);
    if (!ec) impl_->acceptor.bind(stream::endpoint(path), ec);
    ::umask(old);
    if (!ec) impl_->acceptor.listen(64, ec);
    if (ec)
        throw std::system_error(ec.value(), std::system_category(), "bind(" + path + ") failed");
    if (impl_->group) {
        if (::chown(path.c_str(), static_cast<uid_t>(-1), *impl_->group) < 0 ||
            ::chmod(path.c_str(), 0660) < 0)
            throw std::system_error(errno, std::system_category(),
                                    "chown/chmod(" + path + ") failed");
    }
}

ControlServer::~ControlServer() = default;

void ControlServer::start() {
    impl_->do_accept();
}

void ControlServer::close() {
    error_code ignored;
    if (impl_->acceptor.is_open()) {
        impl_->acceptor.close(ignored);
        ::unlink(impl_->path.c_str());
    }
}

}  // namespace clusterd

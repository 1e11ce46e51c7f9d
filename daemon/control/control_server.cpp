#include "daemon/control/control_server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <list>
#include <optional>
#include <sstream>
#include <system_error>
#include <variant>

#include "common/fd.hpp"
#include "daemon/control/control_request.hpp"
#include "daemon/net/accept_guard.hpp"

namespace clusterd {

namespace asio = boost::asio;
using boost::system::error_code;
using stream = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;

namespace {

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

std::string error_reply(const std::string& message) {
    return nlohmann::json{{"ok", false}, {"message", message}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A last word to a connection about to be closed: one short line into an empty socket
// buffer, never waited for.
void tell(int fd, const std::string& message) {
    std::string line = error_reply(message) + "\n";
    [[maybe_unused]] ssize_t n = ::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

}  // namespace

namespace detail {

// One client connection: reads a line, hands it to the handler, writes what the handler
// reports, and reads the next line only once the final reply is written. One timer holds the
// connection's one deadline: idle, request, or write, whichever applies now.
class ControlSession : public std::enable_shared_from_this<ControlSession> {
  public:
    ControlSession(std::shared_ptr<ControlServer::Impl> server, stream::socket socket);
    ~ControlSession();

    void start() { pump(); }
    /// A connection whose request the previous image of the master took (an upgrade): busy
    /// until the reporter returned finishes it, then read as any other.
    std::shared_ptr<Reporter> adopt();
    void send(std::string line);
    int fd() { return socket_.native_handle(); }
    void finished() {
        busy_ = false;
        pump();
    }
    /// Reply `why` and close once it is written.
    void reject(const std::string& why);
    /// No request is being handled or answered: it may be shed for a new connection. A
    /// stream (`events -f`) between two lines counts as idle.
    bool idle() const { return (!busy_ || following_) && !writing_; }
    /// The request streams: read (and drop) what the client sends, to see it leave.
    void follow() {
        following_ = true;
        arm(Deadline::none, {});
        do_read();
    }
    bool gone() const { return closed_ || closing_; }
    Clock::time_point last_activity() const { return last_activity_; }
    /// Closes at once, after a best-effort last line.
    void shed(const std::string& why) {
        if (closed_) return;
        tell(socket_.native_handle(), why);
        close_now();
    }
    void close_now();

  private:
    enum class Deadline { none, idle, request, write };

    void pump();
    void handle_line(std::string line);
    void do_read();
    void on_read(const error_code& ec, std::size_t n);
    void do_write();
    void on_write(const error_code& ec);
    void do_discard(std::size_t total);
    void arm(Deadline kind, Clock::time_point at);
    void on_deadline(Deadline kind);

    static constexpr std::size_t kMaxDiscard = 1024 * 1024;

    std::shared_ptr<ControlServer::Impl> server_;
    stream::socket socket_;
    asio::steady_timer timer_;
    std::array<char, 4096> chunk_{};
    std::string input_;
    std::deque<std::string> queue_;
    std::size_t queued_bytes_ = 0;
    Clock::time_point last_activity_ = Clock::now();
    Clock::time_point request_started_{};
    Deadline deadline_ = Deadline::none;
    std::uint64_t deadline_gen_ = 0;
    bool busy_ = false;
    bool reading_ = false;
    bool writing_ = false;
    bool pumping_ = false;
    bool closing_ = false;
    bool closed_ = false;
    bool following_ = false;
};

}  // namespace detail

using detail::ControlSession;

struct ControlServer::Impl : std::enable_shared_from_this<ControlServer::Impl> {
    Impl(asio::io_context& io, std::string p, Handler h, ControlServerOptions o)
        : acceptor(io),
          pause(io),
          path(std::move(p)),
          handler(std::move(h)),
          options(o),
          guard("control socket " + path) {
        stats.limit = options.max_connections;
    }

    void do_accept() {
        if (!acceptor.is_open()) return;
        acceptor.async_accept(
            [self = shared_from_this()](const error_code& ec, stream::socket socket) {
                self->on_accept(ec, std::move(socket));
            });
    }

    void on_accept(const error_code& ec, stream::socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
        if (ec && AcceptGuard::is_shortage(ec.value())) {
            guard.note(ec.value());
            stats.accept_shortages = guard.shortages();
            // An idle connection gives its descriptor to the new one, as at the limit: an
            // operator's `clusterd status` gets through even then.
            if (make_room()) return do_accept();
            int fd = -1;
            auto outcome = guard.shed_one(acceptor.native_handle(), fd);
            stats.accept_shed = guard.shed();
            if (outcome == AcceptGuard::Outcome::accepted) {
                stream::socket s(acceptor.get_executor());
                error_code assign_ec;
                s.assign(stream(), fd, assign_ec);
                if (assign_ec) {
                    ::close(fd);
                } else {
                    admit(std::move(s));
                }
            } else if (outcome == AcceptGuard::Outcome::pause) {
                pause.expires_after(AcceptGuard::kAcceptPause);
                pause.async_wait([self = shared_from_this()](const error_code& e) {
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

    void admit(stream::socket socket) {
        ++stats.accepted;
        // Asio accepts without SOCK_CLOEXEC: an upgrade's exec would hand the new image every
        // open connection, which it never serves nor closes, and their clients (`status
        // --watch`, `top`, `events`) would wait forever. The one connection an upgrade hands
        // over on purpose gets close-on-exec cleared just before the exec.
        ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
        ucred cred{};
        socklen_t len = sizeof cred;
        int rc = ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len);
        bool allowed = rc == 0 && (cred.uid == 0 || cred.uid == ::geteuid() ||
                                   (group && (cred.gid == *group || in_group(cred.pid, *group))));
        if (!allowed) {
            ++stats.denied;
            std::string why = rc < 0 ? "cannot read peer credentials"
                                     : "permission denied: uid " + std::to_string(cred.uid) +
                                           " may not control clusterd";
            if (rc == 0)
                spdlog::warn("control socket: refused uid {} (pid {})", cred.uid, cred.pid);
            tell(socket.native_handle(), why);
            return;  // closed as it goes out of scope
        }
        if (sessions.size() >= options.max_connections && !make_room()) {
            ++stats.refused_busy;
            tell(socket.native_handle(), "too many control connections (" +
                                             std::to_string(sessions.size()) +
                                             " open, all busy): try again");
            return;
        }
        try {
            std::make_shared<ControlSession>(shared_from_this(), std::move(socket))->start();
        } catch (const std::exception&) {
            // Out of memory for one connection: it is closed; the server goes on.
        }
    }

    // Sheds the connection idle the longest; false when every one is busy.
    bool make_room() {
        ControlSession* oldest = nullptr;
        for (ControlSession* s : sessions)
            if (s->idle() && (oldest == nullptr || s->last_activity() < oldest->last_activity()))
                oldest = s;
        if (oldest == nullptr) return false;
        ++stats.shed_idle;
        oldest->shed("closed: the control socket's " + std::to_string(options.max_connections) +
                     " connections are in use and this one was idle the longest");
        return true;
    }

    void closed(ControlSession* s) {
        sessions.remove(s);
        stats.open = sessions.size();
    }

    stream::acceptor acceptor;
    asio::steady_timer pause;
    std::string path;
    Handler handler;
    ControlServerOptions options;
    AcceptGuard guard;
    std::optional<gid_t> group;
    std::list<ControlSession*> sessions;  // each removes itself when it closes
    ControlServerStats stats;
};

namespace detail {

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

    int connection() const override { return session_->fd(); }
    void send(const nlohmann::json& line) override {
        session_->send(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    void follow() override { session_->follow(); }
    bool gone() const override { return done_ || session_->gone(); }

  private:
    std::shared_ptr<ControlSession> session_;
    bool done_ = false;
};

std::shared_ptr<Reporter> ControlSession::adopt() {
    busy_ = true;
    return std::make_shared<SessionReporter>(shared_from_this());
}

ControlSession::ControlSession(std::shared_ptr<ControlServer::Impl> server, stream::socket socket)
    : server_(std::move(server)), socket_(std::move(socket)), timer_(socket_.get_executor()) {
    server_->sessions.push_back(this);
    server_->stats.open = server_->sessions.size();
}

// A reporter dropped without finishing is the last owner of a busy session.
ControlSession::~ControlSession() {
    if (!closed_) server_->closed(this);
}

void ControlSession::send(std::string line) {
    if (closed_ || closing_) return;
    line += '\n';
    if (queued_bytes_ + line.size() > server_->options.max_queued_bytes) {
        ++server_->stats.queue_overflows;
        spdlog::warn("control socket: a client left {} bytes of replies unread: closing it",
                     queued_bytes_);
        return close_now();
    }
    queued_bytes_ += line.size();
    queue_.push_back(std::move(line));
    if (!writing_) do_write();
}

void ControlSession::reject(const std::string& why) {
    send(error_reply(why));
    closing_ = true;
    if (!writing_) do_discard(0);
}

// What to do next: hand a complete line to the handler, or read, under the deadline that
// applies. Nothing is read while a request is handled or a reply written.
void ControlSession::pump() {
    if (pumping_) return;  // called back from the handler: the loop below goes on
    pumping_ = true;
    while (!closed_ && !closing_ && !busy_ && !writing_) {
        auto nl = input_.find('\n');
        if (nl == std::string::npos) break;
        std::string line = input_.substr(0, nl);
        input_.erase(0, nl + 1);
        request_started_ = input_.empty() ? Clock::time_point{} : Clock::now();
        handle_line(std::move(line));
    }
    pumping_ = false;
    if (closed_ || closing_ || writing_) return;
    if (busy_) return arm(Deadline::none, {});
    if (input_.size() > kMaxControlRequestBytes) {
        ++server_->stats.oversized;
        input_.clear();
        return reject("request line longer than " + std::to_string(kMaxControlRequestBytes) +
                      " bytes");
    }
    if (input_.empty()) {
        arm(Deadline::idle, last_activity_ + server_->options.idle_timeout);
    } else {
        arm(Deadline::request, request_started_ + server_->options.request_timeout);
    }
    do_read();
}

void ControlSession::handle_line(std::string line) {
    while (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) return;
    auto decoded = decode_control_request(line);
    if (auto* e = std::get_if<ControlDecodeError>(&decoded)) {
        ++server_->stats.bad_requests;
        return send(error_reply(e->message));
    }
    const auto& request = std::get<ControlRequest>(decoded);
    ++server_->stats.requests;
    busy_ = true;
    arm(Deadline::none, {});
    auto reporter = std::make_shared<SessionReporter>(shared_from_this());
    try {
        server_->handler(request, reporter);
    } catch (const std::exception& e) {
        spdlog::error(
            "control request {} failed: {}",
            request.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
            e.what());
        reporter->finish({{"ok", false}, {"message", std::string("internal error: ") + e.what()}});
    }
}

void ControlSession::do_read() {
    if (reading_) return;
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(chunk_),
        [self = shared_from_this()](const error_code& ec, std::size_t n) { self->on_read(ec, n); });
}

void ControlSession::on_read(const error_code& ec, std::size_t n) {
    reading_ = false;
    if (closed_) return;
    if (ec) return close_now();  // client gone (EOF) or reset
    if (following_) {
        // A stream takes no requests: what the client sends is dropped, and the read stays
        // pending to see it leave.
        last_activity_ = Clock::now();
        return do_read();
    }
    if (input_.empty()) request_started_ = Clock::now();
    input_.append(chunk_.data(), n);
    last_activity_ = Clock::now();
    pump();
}

void ControlSession::do_write() {
    writing_ = true;
    arm(Deadline::write, Clock::now() + server_->options.write_timeout);
    asio::async_write(
        socket_, asio::buffer(queue_.front()),
        [self = shared_from_this()](const error_code& ec, std::size_t) { self->on_write(ec); });
}

void ControlSession::on_write(const error_code& ec) {
    if (closed_) return;
    if (ec) return close_now();
    queued_bytes_ -= queue_.front().size();
    queue_.pop_front();
    last_activity_ = Clock::now();
    if (!queue_.empty()) return do_write();
    writing_ = false;
    if (closing_) return do_discard(0);
    if (following_) return arm(Deadline::none, {});
    pump();
}

// Closing with unread input would reset the connection and could destroy the reply before
// the client reads it: stop sending and read and drop what it still sends (up to a bound,
// under the write deadline) first.
void ControlSession::do_discard(std::size_t total) {
    if (closed_) return;
    if (total == 0) {
        error_code ignored;
        socket_.shutdown(stream::socket::shutdown_send, ignored);
        arm(Deadline::write, Clock::now() + server_->options.write_timeout);
    }
    if (total > kMaxDiscard) return close_now();
    socket_.async_read_some(asio::buffer(chunk_), [self = shared_from_this(), total](
                                                      const error_code& ec, std::size_t n) {
        if (ec) return self->close_now();
        self->do_discard(total + n);
    });
}

void ControlSession::arm(Deadline kind, Clock::time_point at) {
    if (kind == deadline_ && kind != Deadline::write && timer_.expiry() == at) return;
    deadline_ = kind;
    auto gen = ++deadline_gen_;
    timer_.cancel();
    if (kind == Deadline::none) return;
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this(), kind, gen](const error_code& ec) {
        if (!ec && gen == self->deadline_gen_) self->on_deadline(kind);
    });
}

void ControlSession::on_deadline(Deadline kind) {
    if (closed_) return;
    auto& stats = server_->stats;
    switch (kind) {
        case Deadline::idle:
            ++stats.idle_timeouts;
            return close_now();
        case Deadline::request:
            ++stats.request_timeouts;
            tell(socket_.native_handle(),
                 "request line not complete within " +
                     std::to_string(server_->options.request_timeout.count()) + " ms");
            return close_now();
        case Deadline::write:
            if (!closing_) ++stats.write_timeouts;
            return close_now();
        case Deadline::none:
            return;
    }
}

void ControlSession::close_now() {
    if (closed_) return;
    closed_ = true;
    ++deadline_gen_;
    timer_.cancel();
    error_code ignored;
    socket_.close(ignored);
    queue_.clear();
    queued_bytes_ = 0;
    server_->closed(this);
}

}  // namespace detail

namespace {
const ControlServerStats* g_stats = nullptr;
}  // namespace

const ControlServerStats* control_server_stats() {
    return g_stats;
}

ControlServer::ControlServer(asio::io_context& io, const std::string& path,
                             const std::string& group, Handler handler,
                             ControlServerOptions options)
    : impl_(std::make_shared<Impl>(io, path, std::move(handler), options)) {
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

ControlServer::ControlServer(asio::io_context& io, int listener, const std::string& path,
                             const std::string& group, Handler handler,
                             ControlServerOptions options)
    : impl_(std::make_shared<Impl>(io, path, std::move(handler), options)) {
    UniqueFd owned(listener);
    if (!group.empty()) {
        struct group* g = ::getgrnam(group.c_str());
        if (g == nullptr)
            throw std::runtime_error("control_group: unknown group \"" + group + "\"");
        impl_->group = g->gr_gid;
    }
    ::fcntl(listener, F_SETFD, FD_CLOEXEC);
    error_code ec;
    impl_->acceptor.assign(stream(), listener, ec);
    if (ec)
        throw std::system_error(ec.value(), std::system_category(),
                                "cannot take over the control socket " + path);
    owned.release();
}

int ControlServer::listener() const {
    return impl_->acceptor.is_open() ? impl_->acceptor.native_handle() : -1;
}

std::shared_ptr<Reporter> ControlServer::adopt_connection(int fd) {
    UniqueFd owned(fd);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    stream::socket socket(impl_->acceptor.get_executor());
    error_code ec;
    socket.assign(stream(), fd, ec);
    if (ec) return nullptr;
    owned.release();
    ++impl_->stats.accepted;
    auto session = std::make_shared<ControlSession>(impl_, std::move(socket));
    return session->adopt();
}

ControlServer::~ControlServer() {
    if (g_stats == &impl_->stats) g_stats = nullptr;
}

void ControlServer::start() {
    g_stats = &impl_->stats;
    impl_->do_accept();
}

void ControlServer::close() {
    error_code ignored;
    impl_->pause.cancel();
    if (impl_->acceptor.is_open()) {
        impl_->acceptor.close(ignored);
        ::unlink(impl_->path.c_str());
    }
    for (ControlSession* s : std::list<ControlSession*>(impl_->sessions)) s->close_now();
}

const ControlServerStats& ControlServer::stats() const {
    return impl_->stats;
}

}  // namespace clusterd

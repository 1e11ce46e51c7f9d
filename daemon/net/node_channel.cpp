#include "daemon/net/node_channel.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <system_error>

#include "daemon/net/notify_receiver.hpp"

namespace clusterd {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

std::system_error node_channel_error(const std::string& what) {
    return std::system_error(errno, std::system_category(), what);
}

// One JSON value on one line: invalid UTF-8 (from a worker's address string, say) is replaced,
// never thrown on; dump() escapes every control character, so no newline gets inside.
std::string node_line(const json& value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

// The start of a worker's line, fit for the log: control and non-ASCII bytes become '.'.
std::string node_excerpt(std::string_view line) {
    std::string out(line.substr(0, 80));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '.';
    return line.size() > 80 ? out + "..." : out;
}

// Bytes read per wakeup at most: a worker that floods its channel cannot hold the loop.
constexpr int kNodeReadsPerWakeup = 4;
constexpr std::size_t kNodeReadChunk = 64 * 1024;
// Node resends a handle that did not arrive (NODE_HANDLE_NACK) at most this often.
constexpr int kNodeHandleRetransmissions = 3;

}  // namespace

std::string NodeServerQuery::describe() const {
    if (fd) return "fd " + std::to_string(*fd);
    if (address_type == -1) return address.value_or("?");
    std::string host = address.value_or("");
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    return host + ":" + std::to_string(port);
}

struct NodeChannel::State : std::enable_shared_from_this<State> {
    State(asio::io_context& io, NodeChannelCounters& c, Handlers h)
        : descriptor(io), counters(c), handlers(std::move(h)) {}

    struct Out {
        std::string bytes;
        std::size_t sent = 0;
        UniqueFd fd;  // sent with the first byte
    };

    void adopt(int fd) {
        UniqueFd owned(fd);
        int flags = ::fcntl(fd, F_GETFL);
        if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
            ::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
            throw node_channel_error("fcntl(Node channel) failed");
        boost::system::error_code ec;
        descriptor.assign(fd, ec);  // registers it with the reactor: may fail
        if (ec)
            throw std::system_error(ec.value(), std::system_category(),
                                    "cannot watch the Node channel");
        owned.release();
    }

    void wait_read() {
        descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                              [self = shared_from_this()](const boost::system::error_code& ec) {
                                  if (ec == asio::error::operation_aborted || self->closed) return;
                                  self->on_readable();
                              });
    }

    void on_readable() {
        auto keep = shared_from_this();  // a handler may destroy the NodeChannel
        char buf[kNodeReadChunk];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
        for (int i = 0; i < kNodeReadsPerWakeup && !closed && !eof; ++i) {
            iovec iov{buf, sizeof buf};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            ssize_t n =
                ::recvmsg(descriptor.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (errno != ECONNRESET)
                    spdlog::error("{}: recvmsg() on its Node channel failed: {}", label,
                                  std::strerror(errno));
                eof = true;
                break;
            }
            // A handle sent to the primary: there is no primary app to give it to.
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
                auto count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (std::size_t k = 0; k < count; ++k) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
                    ::close(fd);
                    ++counters.handles_closed;
                }
            }
            if (n == 0) {
                eof = true;
                break;
            }
            take(std::string_view(buf, static_cast<std::size_t>(n)));
        }
        if (eof) {
            spdlog::debug("{}: its Node channel was closed by the worker", label);
            if (auto then = std::exchange(on_closed, nullptr)) then();
            return;
        }
        if (!closed) wait_read();
    }

    // Split what arrived into lines; a line over kNodeMaxLine is dropped whole.
    void take(std::string_view data) {
        while (!data.empty() && !closed) {
            auto nl = data.find('\n');
            std::string_view part = data.substr(0, nl);
            if (!skipping) {
                if (input.size() + part.size() > kNodeMaxLine) {
                    ++counters.malformed;
                    warn("a Node channel message over " + std::to_string(kNodeMaxLine) +
                         " bytes dropped");
                    input.clear();
                    skipping = true;
                } else {
                    input.append(part);
                }
            }
            if (nl == std::string_view::npos) return;
            data.remove_prefix(nl + 1);
            if (!skipping) {
                std::string line = std::move(input);
                input.clear();
                handle_line(line);
            }
            skipping = false;
        }
    }

    void handle_line(const std::string& line) {
        ++counters.messages;
        json value = json::parse(line, nullptr, false);
        if (value.is_discarded()) {
            ++counters.malformed;
            warn("a Node channel line that is not JSON dropped: " + node_excerpt(line));
            return;
        }
        if (value.is_string()) {
            const auto& text = value.get_ref<const std::string&>();
            if (text == "ready") return notify("READY=1");
            if (text == "heartbeat") return notify("WATCHDOG=1");
            spdlog::debug("{}: Node message {} ignored", label, node_excerpt(line));
            return;
        }
        if (!value.is_object()) return;
        auto cmd = value.find("cmd");
        if (cmd != value.end() && cmd->is_string() &&
            cmd->get_ref<const std::string&>().starts_with("NODE_"))
            return internal(cmd->get_ref<const std::string&>(), value);
        if (auto n = value.find("notify"); n != value.end() && n->is_string()) {
            const auto& text = n->get_ref<const std::string&>();
            if (text.size() > kNotifyMaxDatagram) {
                ++counters.malformed;
                warn("a {notify} message of " + std::to_string(text.size()) +
                     " bytes dropped (limit " + std::to_string(kNotifyMaxDatagram) + ")");
                return;
            }
            return notify(text);
        }
        spdlog::debug("{}: Node message {} ignored", label, node_excerpt(line));
    }

    void notify(std::string_view text) {
        if (handlers.notify) handlers.notify(parse_notify(text));
    }

    static NodeServerQuery query_of(const json& m) {
        NodeServerQuery q;
        auto number = [&](const char* key, auto fallback) {
            auto it = m.find(key);
            return it != m.end() && it->is_number_integer() ? it->get<decltype(fallback)>()
                                                            : fallback;
        };
        q.seq = number("seq", std::int64_t{-1});
        if (auto a = m.find("address"); a != m.end() && a->is_string())
            q.address = a->get<std::string>();
        q.port = number("port", -1);
        q.address_type = number("addressType", 4);
        if (auto f = m.find("fd"); f != m.end() && f->is_number_integer()) q.fd = f->get<int>();
        q.index = number("index", 0);
        // The primary's own key shape (address:port:addressType:fd:index), as JS prints it.
        q.key = q.address.value_or("null") + ":" + std::to_string(q.port) + ":" +
                std::to_string(q.address_type) + ":" +
                (q.fd ? std::to_string(*q.fd) : std::string("undefined")) + ":" +
                std::to_string(q.index);
        return q;
    }

    void internal(const std::string& cmd, const json& m) {
        if (cmd == "NODE_HANDLE") {
            // Its fd was closed on arrival; the ack lets the worker send what it queued behind it.
            warn("the worker sent a handle to the cluster primary: closed (clusterd takes none)");
            return write(node_line(json{{"cmd", "NODE_HANDLE_ACK"}}));
        }
        if (cmd == "NODE_HANDLE_ACK") {
            last_handle.reset();
            return;
        }
        if (cmd == "NODE_HANDLE_NACK") {
            // The worker got the line without its fd (its read cut the control data): resend.
            if (last_handle && handle_retries < kNodeHandleRetransmissions) {
                ++handle_retries;
                return write(last_handle->first, last_handle->second.get());
            }
            warn("the worker did not receive the socket it was sent; it cannot listen");
            return;
        }
        if (cmd != "NODE_CLUSTER") {
            spdlog::debug("{}: Node message {} ignored", label, cmd);
            return;
        }
        auto act_it = m.find("act");
        std::string act =
            act_it != m.end() && act_it->is_string() ? act_it->get<std::string>() : "";
        if (act.empty()) return;  // an ack of something clusterd sent: it asks for none
        if (act == "online") {
            is_online = true;
            spdlog::debug("{}: Node cluster worker online", label);
        } else if (act == "queryServer") {
            if (handlers.query_server) handlers.query_server(query_of(m));
        } else if (act == "listening") {
            if (handlers.listening) handlers.listening(query_of(m));
        } else if (act == "close") {
            spdlog::debug("{}: the Node worker closed its server {}", label,
                          query_of(m).describe());
        } else if (act == "exitedAfterDisconnect") {
            // cluster.worker.disconnect(): acknowledged, so that the worker disconnects and ends.
            write(node_line(
                json{{"cmd", "NODE_CLUSTER"}, {"ack", m.value("seq", -1)}, {"seq", seq++}}));
        } else {
            warn("unknown Node cluster message act \"" + node_excerpt(act.substr(0, 40)) +
                 "\" ignored: this Node's cluster protocol is newer than clusterd's");
        }
    }

    // Queue `bytes` (with `fd`, borrowed, on its first byte) and write what can be written.
    void write(const std::string& bytes, int fd = -1) {
        if (closed || eof) return;
        if (queued + bytes.size() > kNodeMaxQueued) {
            ++counters.writes_dropped;
            warn("the worker does not read its Node channel: a message dropped (" +
                 std::to_string(queued) + " bytes waiting, limit " +
                 std::to_string(kNodeMaxQueued) + ")");
            return;
        }
        Out o;
        o.bytes = bytes;
        if (fd >= 0) {
            o.fd = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
            if (!o.fd) {
                spdlog::error("{}: dup() of the socket for its Node channel failed: {}", label,
                              std::strerror(errno));
                return;
            }
        }
        queued += o.bytes.size();
        out.push_back(std::move(o));
        flush();
    }

    void flush() {
        while (!out.empty() && !closed) {
            Out& o = out.front();
            iovec iov{o.bytes.data() + o.sent, o.bytes.size() - o.sent};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
            if (o.fd) {
                msg.msg_control = control;
                msg.msg_controllen = sizeof control;
                cmsghdr* c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                int fd = o.fd.get();
                std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
            }
            ssize_t n = ::sendmsg(descriptor.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return wait_write();
                if (errno != EPIPE && errno != ECONNRESET)
                    spdlog::error("{}: write to its Node channel failed: {}", label,
                                  std::strerror(errno));
                out.clear();
                queued = 0;
                return;
            }
            if (o.fd && static_cast<std::size_t>(n) < o.bytes.size())
                // Node takes a handle with the line it reads it with: cut, it is lost.
                warn("a socket's message to the worker went out in parts; it may not listen");
            o.fd.reset();  // sent (the worker has its own copy)
            o.sent += static_cast<std::size_t>(n);
            if (o.sent < o.bytes.size()) continue;
            queued -= o.bytes.size();
            out.pop_front();
        }
    }

    void wait_write() {
        if (writing) return;
        writing = true;
        descriptor.async_wait(asio::posix::descriptor_base::wait_write,
                              [self = shared_from_this()](const boost::system::error_code& ec) {
                                  self->writing = false;
                                  if (ec == asio::error::operation_aborted || self->closed) return;
                                  self->flush();
                              });
    }

    void warn(const std::string& message) {
        warn_limited(limiter, label, "Node channel", message, counters.warnings_suppressed);
    }

    void close() {
        if (closed) return;
        closed = true;
        boost::system::error_code ignored;
        descriptor.close(ignored);
        out.clear();
    }

    asio::posix::stream_descriptor descriptor;
    NodeChannelCounters& counters;
    Handlers handlers;
    std::string label;
    std::string input;  // a line begun
    bool skipping = false;
    std::deque<Out> out;
    std::size_t queued = 0;
    bool writing = false;
    bool eof = false;
    bool closed = false;
    bool is_online = false;
    std::int64_t seq = 0;
    // The last socket sent, kept until acknowledged (for a NACK's resend): a copy of its fd,
    // so that a resend can never send whatever took the original's number since.
    std::optional<std::pair<std::string, UniqueFd>> last_handle;
    std::function<void()> on_closed;
    int handle_retries = 0;
    WarnLimiter limiter;
};

std::pair<std::unique_ptr<NodeChannel>, UniqueFd> NodeChannel::open(asio::io_context& io,
                                                                    std::string label,
                                                                    NodeChannelCounters& counters,
                                                                    Handlers handlers) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        throw node_channel_error("socketpair() for the Node channel failed");
    UniqueFd theirs(fds[1]);
    auto channel = std::make_unique<NodeChannel>(io, fds[0], std::string(), std::move(label),
                                                 counters, std::move(handlers));
    return {std::move(channel), std::move(theirs)};
}

NodeChannel::NodeChannel(asio::io_context& io, int fd, std::string input, std::string label,
                         NodeChannelCounters& counters, Handlers handlers)
    : state_(std::make_shared<State>(io, counters, std::move(handlers))) {
    state_->label = std::move(label);
    state_->input = std::move(input);
    state_->adopt(fd);
}

NodeChannel::~NodeChannel() {
    state_->close();
}

void NodeChannel::start() {
    state_->wait_read();
}

void NodeChannel::give_server(const NodeServerQuery& query, int fd) {
    ++state_->counters.servers_given;
    json reply{{"cmd", "NODE_CLUSTER"}, {"errno", 0},      {"key", query.key},
               {"ack", query.seq},      {"data", nullptr}, {"seq", state_->seq++}};
    std::string text =
        node_line(json{{"cmd", "NODE_HANDLE"}, {"type", "net.Native"}, {"msg", reply}});
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (copy) state_->last_handle.emplace(text, std::move(copy));
    state_->handle_retries = 0;
    state_->write(text, fd);
}

void NodeChannel::refuse_server(const NodeServerQuery& query, int uv_errno) {
    ++state_->counters.servers_refused;
    state_->write(node_line(json{{"cmd", "NODE_CLUSTER"},
                                 {"errno", uv_errno},
                                 {"key", query.key},
                                 {"ack", query.seq},
                                 {"data", nullptr},
                                 {"seq", state_->seq++}}));
}

void NodeChannel::send_message(const std::string& text) {
    json value = json::parse(text, nullptr, false);
    if (value.is_discarded()) return;  // never write what the worker could choke on
    state_->write(node_line(value));
}

void NodeChannel::disconnect(std::function<void()> closed) {
    if (!connected()) return closed();
    state_->on_closed = std::move(closed);
    state_->write(
        node_line(json{{"cmd", "NODE_CLUSTER"}, {"act", "disconnect"}, {"seq", state_->seq++}}));
}

bool NodeChannel::connected() const {
    return !state_->eof && !state_->closed;
}

bool NodeChannel::online() const {
    return state_->is_online;
}

int NodeChannel::fd() const {
    return state_->descriptor.native_handle();
}

const std::string& NodeChannel::pending_input() const {
    return state_->input;
}

void NodeChannel::warn(const std::string& message) {
    state_->warn(message);
}

}  // namespace clusterd

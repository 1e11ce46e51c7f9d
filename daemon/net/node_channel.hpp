// The master's end of a worker's Node IPC channel (`ipc: node`): what child_process.fork() gives
// a Node child, so that `process.send()`, `process.on('message')` and the `cluster` module work
// in an unmodified app, with clusterd as the cluster primary.
//
// The channel: a unix stream socketpair; the worker's end is NODE_CHANNEL_FD (the fd after the
// listeners), with NODE_CHANNEL_SERIALIZATION_MODE=json: one JSON value per line, each way. A fd
// travels with the line that announces it (SCM_RIGHTS on that line's first byte).
//
// What the worker may say, and what clusterd does with it:
//   'ready'                      READY=1 (PM2's wait_ready: `process.send('ready')`)
//   'heartbeat'                  WATCHDOG=1
//   {notify: 'STATUS=...\n...'}  any sd_notify text, read as a NOTIFY_SOCKET datagram is
//   {cmd: 'NODE_CLUSTER', act: 'online' | 'queryServer' | 'listening' | 'close' |
//    'exitedAfterDisconnect', seq, ...}
//                                the Node cluster worker's side (lib/internal/cluster/child.js):
//                                queryServer is answered with the listening socket of the
//                                program that matches it (a {cmd: 'NODE_HANDLE', type:
//                                'net.Native'} line carrying the fd), or with an errno
//   {cmd: 'NODE_HANDLE', ...}    a handle sent to the primary: acknowledged, and closed
//   anything else                the app's own message to a primary it does not have: ignored
// Lines that are not JSON, or longer than kNodeMaxLine, are counted, logged (rate-limited) and
// dropped. What clusterd writes is always one valid JSON value and a newline: Node parses each
// line with JSON.parse and would throw on anything else.
//
// Checked against the protocol of Node 18 (Debian 12's) and 20 (tests/e2e/test_node.py fails,
// naming the Node version, if a worker does not get its socket).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "common/fd.hpp"
#include "common/notify.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

/// The longest line read from a worker; a longer one is dropped whole.
inline constexpr std::size_t kNodeMaxLine = 64 * 1024;
/// The most bytes waiting to be written to a worker that does not read; what is over is dropped.
inline constexpr std::size_t kNodeMaxQueued = 256 * 1024;

/// A Node cluster worker's `queryServer` (or `listening`): the address it listens on.
struct NodeServerQuery {
    std::int64_t seq = 0;
    std::optional<std::string> address;  // null: every address (listen(port))
    int port = -1;
    int address_type = 4;   // 4, 6, or -1 for a pipe
    std::optional<int> fd;  // listen({fd: N})
    int index = 0;
    std::string key;  // what the worker names this handle by
    /// "127.0.0.1:8080", ":8080" (no address), "fd 3" or the pipe path, for the log.
    std::string describe() const;
};

/// What the Node channels saw since the master started (for /metrics).
struct NodeChannelCounters {
    std::uint64_t messages = 0;         // lines read
    std::uint64_t malformed = 0;        // not JSON, or over kNodeMaxLine: dropped
    std::uint64_t handles_closed = 0;   // fds a worker sent: closed
    std::uint64_t servers_given = 0;    // queryServer answered with a socket
    std::uint64_t servers_refused = 0;  // queryServer answered with an error
    std::uint64_t writes_dropped = 0;   // messages over kNodeMaxQueued
    std::uint64_t warnings_suppressed = 0;
};

class NodeChannel {
  public:
    struct Handlers {
        /// 'ready', 'heartbeat' and {notify: ...}, as the datagram they stand for.
        std::function<void(const NotifyMessage&)> notify;
        /// A queryServer: answer it with give_server() or refuse_server(), now or later.
        std::function<void(const NodeServerQuery&)> query_server;
        /// The worker listens on a socket it was given.
        std::function<void(const NodeServerQuery&)> listening;
    };

    /// A new channel: this end, and the worker's end (to pass to the spawn, then close).
    /// Throws std::system_error.
    static std::pair<std::unique_ptr<NodeChannel>, UniqueFd> open(boost::asio::io_context& io,
                                                                  std::string label,
                                                                  NodeChannelCounters& counters,
                                                                  Handlers handlers);
    /// An open channel (an upgrade's new image takes the old one's), with the input the old one
    /// had read short of a newline. Throws std::system_error.
    NodeChannel(boost::asio::io_context& io, int fd, std::string input, std::string label,
                NodeChannelCounters& counters, Handlers handlers);
    ~NodeChannel();
    NodeChannel(const NodeChannel&) = delete;
    NodeChannel& operator=(const NodeChannel&) = delete;

    /// Start reading on the loop.
    void start();
    /// Answer `query` with the listening socket `fd` (sent, not given away: the master keeps
    /// its own).
    void give_server(const NodeServerQuery& query, int fd);
    /// Answer `query` with a libuv errno (negative, as UV_EADDRNOTAVAIL): the worker's listen()
    /// fails with it.
    void refuse_server(const NodeServerQuery& query, int uv_errno);
    /// A message for the app's process.on('message'): `json` must be one JSON value.
    void send_message(const std::string& json);
    /// The Node cluster primary's graceful stop (`worker.disconnect()`): the worker closes its
    /// servers, lets its connections finish, and closes the channel; `closed` runs then (at
    /// once if it is closed already), unless the channel is destroyed first.
    void disconnect(std::function<void()> closed);
    /// The worker has not closed its end.
    bool connected() const;
    /// Its Node cluster worker said `online`.
    bool online() const;
    int fd() const;
    /// Read, short of a newline (for an upgrade's handover).
    const std::string& pending_input() const;
    /// A warning about this worker's channel, rate-limited like the notify socket's.
    void warn(const std::string& message);

  private:
    struct State;
    std::shared_ptr<State> state_;
};

}  // namespace clusterd

// Where a command or long operation (reload, rolling restart, scale) reports to: a
// control-socket client, or the log when it came from a signal.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace clusterd {

class Reporter {
  public:
    virtual ~Reporter() = default;
    /// One progress line ("web: slot 3/8 ready").
    virtual void progress(const std::string& line) = 0;
    /// The end: {"ok": bool, "message": text, ...data}. Called once.
    virtual void finish(const nlohmann::json& reply) = 0;
    /// The client's connection, when there is one (an upgrade hands it to the new image).
    virtual int connection() const { return -1; }
    /// A line of a stream (`events`, `logs`): `line` is sent as it is, and finish() may never
    /// come. Dropped when nobody reads.
    virtual void send(const nlohmann::json& line) { (void)line; }
    /// From now on the request streams until the client leaves: the connection is watched
    /// for its end, and it may be closed for a new one at the connection limit like an idle one.
    virtual void follow() {}
    /// The client left (or was closed): nothing sent reaches anyone any more.
    virtual bool gone() const { return false; }
};

/// {"ok": ok, "message": message}.
nlohmann::json reply(bool ok, const std::string& message);

/// Reports to the daemon's log (SIGHUP reloads, TTIN/TTOU).
std::shared_ptr<Reporter> log_reporter(std::string what);

}  // namespace clusterd

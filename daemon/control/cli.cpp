#include "daemon/control/cli.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <vector>

#include "common/duration.hpp"
#include "common/fd.hpp"

namespace clusterd {

using nlohmann::json;

namespace {

std::string uptime(double seconds) {
    if (seconds <= 0) return "-";
    auto ms = std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
    if (ms >= std::chrono::seconds(60)) ms -= ms % std::chrono::seconds(1);
    return format_duration(ms);
}

std::string fixed(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

std::string mib(std::uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1fM", static_cast<double>(bytes) / (1024.0 * 1024.0));
    return buf;
}

// A figure the worker reports (X_CLUSTERD_<name>), scaled; "-" when it reports none.
std::string field(const json& slot, const char* name, double divisor, const char* unit) {
    const json& fields = slot.contains("fields") ? slot["fields"] : json::object();
    if (!fields.contains(name) || !fields[name].is_string()) return "-";
    try {
        double v = std::stod(fields[name].get<std::string>()) / divisor;
        return (divisor == 1.0 ? std::to_string(static_cast<long long>(v)) : fixed(v)) + unit;
    } catch (const std::exception&) {
        return "?";
    }
}

std::string pad(std::string s, std::size_t width) {
    if (s.size() < width) s.append(width - s.size(), ' ');
    return s;
}

}  // namespace

std::string format_status(const json& status) {
    std::string out;
    const json& d = status.at("daemon");
    out += "clusterd " + d.value("version", "") + ", pid " + std::to_string(d.value("pid", 0)) +
           ", up " + uptime(d.value("uptime_s", 0.0)) + ", config " + d.value("config", "") +
           " (generation " + std::to_string(d.value("config_generation", 0)) + ", reloads " +
           std::to_string(d.value("reloads_ok", 0)) + " ok / " +
           std::to_string(d.value("reloads_failed", 0)) + " failed)\n";
    for (const auto& p : status.at("programs")) {
        out += "\n" + p.value("name", "") + ": " + std::to_string(p.value("workers", 0)) +
               " workers, generation " + std::to_string(p.value("generation", 0));
        if (!p["runtime_scale"].is_null())
            out += ", runtime scale (config says " + std::to_string(p.value("config_workers", 0)) +
                   ")";
        if (p.value("rolling", false)) out += ", rolling restart in progress";
        if (p.value("removed", false)) out += ", being removed";
        if (!p.value("accepting", true)) out += ", REFUSING CONNECTIONS (no worker can serve)";
        if (!p.value("waiting_for", "").empty())
            out += ", WAITING for " + p.value("waiting_for", "") + " to be ready (depends_on)";
        if (p.contains("dependencies_down") && p["dependencies_down"].is_array() &&
            !p["dependencies_down"].empty()) {
            std::string names;
            for (const auto& d : p["dependencies_down"])
                if (d.is_string()) names += (names.empty() ? "" : ", ") + d.get<std::string>();
            out += ", dependency " + names + " has no ready worker";
        }
        out += "\n";
        const std::vector<std::pair<const char*, std::size_t>> cols = {
            {"SLOT", 5},   {"PID", 8},      {"STATE", 9},      {"GEN", 4},
            {"UPTIME", 9}, {"CPU%", 6},     {"RSS", 8},        {"LAG", 7},
            {"CONNS", 6},  {"RESTARTS", 9}, {"LAST EXIT", 28}, {"STATUS", 0}};
        for (const auto& [name, w] : cols) out += pad(name, w) + " ";
        out += "\n";
        auto row = [&](const json& s, const std::string& note) {
            std::string last = s.value("last_exit", "");
            if (!last.empty()) last += " (" + s.value("last_cause", "") + ")";
            std::vector<std::string> v = {
                std::to_string(s.value("slot", 0)),
                s.value("pid", 0) ? std::to_string(s.value("pid", 0)) : "-",
                s.value("state", "") + note,
                std::to_string(s.value("generation", 0)),
                uptime(s.value("uptime_s", 0.0)),
                s.contains("cpu_percent") ? fixed(s["cpu_percent"].get<double>()) : "-",
                s.contains("rss_bytes") ? mib(s["rss_bytes"].get<std::uint64_t>()) : "-",
                field(s, "LOOP_LAG_US", 1000.0, "ms"),
                field(s, "CONNECTIONS", 1.0, ""),
                std::to_string(s.value("restarts", 0)),
                last.empty() ? "-" : last,
                s.value("status", ""),
            };
            for (std::size_t i = 0; i < v.size(); ++i) out += pad(v[i], cols.at(i).second) + " ";
            out += "\n";
        };
        // Why a slot does not serve: failures in a row, the next try, its last words.
        auto why = [&](const json& s) {
            std::string state = s.value("state", "");
            if (state != "backoff" && state != "failed" && !s.value("late", false)) return;
            std::string line = "  slot " + std::to_string(s.value("slot", 0)) + ": ";
            if (s.value("late", false)) line += "heartbeat overdue; ";
            line += std::to_string(s.value("failures", 0)) + " failing runs in a row";
            if (s.contains("next_try_s") && !s["next_try_s"].is_null())
                line += ", next try in " + fixed(s["next_try_s"].get<double>()) + " s";
            else if (state == "failed")
                line += ", not restarting";
            out += line + "\n";
            if (s.contains("last_output") && s["last_output"].is_array())
                for (const auto& l : s["last_output"])
                    if (l.is_string()) out += "    | " + l.get<std::string>() + "\n";
        };
        for (const auto& s : p.at("slots")) row(s, "");
        for (const auto& s : p.at("other_workers")) row(s, "*");
        for (const auto& s : p.at("slots")) why(s);
        if (!p.at("other_workers").empty()) out += "(* = old generation or leaving slot)\n";
        if (p.contains("reuseport") && p["reuseport"].is_array())
            for (const auto& l : p["reuseport"]) {
                int n = l.value("foreign_sockets", 0);
                if (n == 0) continue;
                out += "  listener " + l.value("listener", "") + " (" + l.value("address", "") +
                       "): " + std::to_string(n) + " foreign socket" + (n == 1 ? "" : "s") +
                       " in its reuseport group, steering: " + l.value("steering", "") + "\n";
            }
    }
    return out;
}

int watch_status(const std::string& socket_path, const json& request, double interval) {
    for (;;) {
        std::cout << "\033[H\033[2J" << std::flush;  // home, clear: a refreshing view
        int rc = run_client(socket_path, request, false);
        if (rc != 0) return rc;
        std::cout << "\n(every " << interval << " s; Ctrl-C to quit)" << std::flush;
        ::usleep(static_cast<useconds_t>(interval * 1e6));
    }
}

UniqueFd send_request(const std::string& socket_path, const json& request, int timeout_ms,
                      std::string& error) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof addr.sun_path) {
        error = "socket path too long: " + socket_path;
        return {};
    }
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd && timeout_ms > 0) {
        timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        error = "cannot connect to the daemon at " + socket_path + ": " + std::strerror(errno);
        return {};
    }
    std::string line = request.dump() + "\n";
    if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
            static_cast<ssize_t>(line.size()) &&
        errno != EPIPE && errno != ECONNRESET) {
        error = std::string("sending the request failed: ") + std::strerror(errno);
        return {};
    }
    // A daemon that refuses a client (not allowed, too many connections) says why and
    // closes at once, maybe before the request is sent: the reply is read all the same.
    return fd;
}

std::optional<json> ask_daemon(const std::string& socket_path, const json& request, int timeout_ms,
                               std::string& error) {
    UniqueFd fd = send_request(socket_path, request, timeout_ms, error);
    if (!fd) return std::nullopt;
    std::string buffer;
    char chunk[4096];
    for (;;) {
        std::size_t nl;
        while ((nl = buffer.find('\n')) != std::string::npos) {
            json reply = json::parse(buffer.substr(0, nl), nullptr, false);
            buffer.erase(0, nl + 1);
            if (reply.is_object() && !reply.contains("progress")) return reply;
        }
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || buffer.size() > (1u << 24)) {
            error = n < 0 ? std::string("no answer: ") + std::strerror(errno)
                          : std::string("the connection closed without a reply");
            return std::nullopt;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
    }
}

int run_client(const std::string& socket_path, const json& request, bool json_output,
               int busy_wait_s) {
    std::string error;
    UniqueFd fd = send_request(socket_path, request, 0, error);
    if (!fd) {
        std::cerr << "clusterd: " << error
                  << (error.starts_with("cannot connect")
                          ? " (is it running? -s PATH or -c FILE names another one)"
                          : "")
                  << "\n";
        return 1;
    }
    std::string buffer;
    char chunk[4096];
    for (;;) {
        std::size_t nl;
        while ((nl = buffer.find('\n')) != std::string::npos) {
            std::string text = buffer.substr(0, nl);
            buffer.erase(0, nl + 1);
            json reply = json::parse(text, nullptr, false);
            if (reply.is_discarded()) {
                std::cerr << "clusterd: unreadable reply: " << text << "\n";
                return 1;
            }
            if (json_output) std::cout << text << "\n" << std::flush;
            if (reply.contains("progress")) {
                if (!json_output)
                    std::cout << reply["progress"].get<std::string>() << "\n" << std::flush;
                continue;
            }
            bool ok = reply.value("ok", false);
            if (!ok && reply.value("busy", false) && busy_wait_s > 0) {
                // The daemon is in the middle of something that ends on its own: ask again.
                std::cerr << reply.value("message", "") << " (asking again, " << busy_wait_s
                          << " s left)\n";
                ::sleep(1);
                return run_client(socket_path, request, json_output, busy_wait_s - 1);
            }
            if (!json_output) {
                if (reply.contains("status")) std::cout << format_status(reply["status"]);
                std::string message = reply.value("message", "");
                if (!message.empty()) (ok ? std::cout : std::cerr) << message << "\n";
            }
            return ok ? 0 : 1;
        }
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::cerr << "clusterd: the daemon closed the connection without a result\n";
            return 1;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
    }
}

namespace {

// The human form of one event or log line.
std::string feed_line(const json& j) {
    auto text = [&](const char* key) {
        return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
    };
    std::string who = text("program");
    if (j.contains("slot") && j["slot"].is_number_integer())
        who += "[" + std::to_string(j["slot"].get<int>()) + "]";
    if (j.contains("line")) return who + " " + text("line");
    std::string out = text("time") + " " + pad(text("event"), 9) + " ";
    if (!who.empty()) out += who + " ";
    return out + text("message");
}

// `logs` of a program with output: FILE: its last `lines` lines, then (follow) what is
// appended; a file replaced (logrotate) is reopened, one cut short is read from its start.
int tail_file(const std::string& path, int lines, bool follow) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        std::cerr << "clusterd: cannot read " << path << ": " << std::strerror(errno) << "\n";
        return 1;
    }
    struct stat st {};
    ::fstat(fd.get(), &st);
    // The last lines: read back from the end in chunks until there are enough.
    off_t end = st.st_size;
    off_t from = end;
    // Chunks read from the end until they hold more newlines than lines asked (or 16 MiB).
    std::vector<std::string> chunks;
    std::size_t newlines = 0;
    std::size_t bytes = 0;
    constexpr off_t kChunk = 65536;
    while (from > 0 && newlines <= static_cast<std::size_t>(lines) && bytes < (16u << 20)) {
        off_t start = std::max<off_t>(0, from - kChunk);
        std::string chunk(static_cast<std::size_t>(from - start), '\0');
        ssize_t n = ::pread(fd.get(), chunk.data(), chunk.size(), start);
        if (n <= 0) break;
        chunk.resize(static_cast<std::size_t>(n));
        newlines += static_cast<std::size_t>(std::count(chunk.begin(), chunk.end(), '\n'));
        bytes += chunk.size();
        chunks.push_back(std::move(chunk));
        from = start;
    }
    std::string tail;
    tail.reserve(bytes);
    for (auto it = chunks.rbegin(); it != chunks.rend(); ++it) tail += *it;
    std::size_t pos = tail.size();
    int seen = 0;
    if (!tail.empty() && tail.back() == '\n') --pos;
    while (pos > 0 && seen < lines) {
        std::size_t nl = tail.rfind('\n', pos - 1);
        if (nl == std::string::npos) {
            pos = 0;
            break;
        }
        ++seen;
        if (seen == lines) {
            pos = nl + 1;
            break;
        }
        pos = nl;
    }
    if (lines == 0) pos = tail.size();
    std::cout << tail.substr(pos) << std::flush;
    if (!follow) return 0;
    off_t offset = end;
    char buf[65536];
    for (;;) {
        ssize_t n = ::pread(fd.get(), buf, sizeof buf, offset);
        if (n > 0) {
            std::cout.write(buf, n);
            std::cout.flush();
            offset += n;
            continue;
        }
        ::usleep(200'000);
        struct stat now {};
        struct stat open_st {};
        ::fstat(fd.get(), &open_st);
        if (::stat(path.c_str(), &now) == 0 &&
            (now.st_ino != open_st.st_ino || now.st_dev != open_st.st_dev)) {
            // Rotated: what is left of the old file first, then the new one from its start.
            while ((n = ::pread(fd.get(), buf, sizeof buf, offset)) > 0) {
                std::cout.write(buf, n);
                offset += n;
            }
            UniqueFd next(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            if (next) {
                fd = std::move(next);
                offset = 0;
            }
        } else if (open_st.st_size < offset) {
            offset = 0;  // truncated (copytruncate)
        }
    }
}

}  // namespace

int follow_feed(const std::string& socket_path, const json& request, bool json_output) {
    std::string error;
    UniqueFd fd = send_request(socket_path, request, 0, error);
    if (!fd) {
        std::cerr << "clusterd: " << error << "\n";
        return 1;
    }
    std::string buffer;
    char chunk[65536];
    for (;;) {
        std::size_t nl;
        while ((nl = buffer.find('\n')) != std::string::npos) {
            std::string text = buffer.substr(0, nl);
            buffer.erase(0, nl + 1);
            json line = json::parse(text, nullptr, false);
            if (!line.is_object()) {
                std::cerr << "clusterd: unreadable line: " << text << "\n";
                return 1;
            }
            if (line.contains("omitted")) {
                std::cerr << "(" << line["omitted"].dump() << " older lines left out: at most "
                          << (line.value("limit_bytes", 0) >> 10) << " KiB are sent at once)\n";
                continue;
            }
            if (line.contains("following")) {
                std::cerr << "following " << line["following"].get<std::string>()
                          << " (Ctrl-C to stop)\n";
                continue;
            }
            if (line.contains("ok")) {
                bool ok = line.value("ok", false);
                if (ok && line.contains("file") && line["file"].is_string())
                    return tail_file(line["file"].get<std::string>(), request.value("lines", 20),
                                     request.value("follow", false));
                if (json_output && !ok) std::cout << text << "\n";
                if (!ok) std::cerr << "clusterd: " << line.value("message", "") << "\n";
                return ok ? 0 : 1;
            }
            std::cout << (json_output ? text : feed_line(line)) << "\n" << std::flush;
        }
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::cerr << "clusterd: the daemon closed the connection\n";
            return 1;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
    }
}

}  // namespace clusterd

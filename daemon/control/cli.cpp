#include "daemon/control/cli.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

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

namespace {

// A connected control socket with `request` sent, or an invalid fd and `error`.
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

}  // namespace

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

}  // namespace clusterd

#include "daemon/control/top.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <optional>
#include <thread>

#include "daemon/control/cli.hpp"
#include "daemon/control/control_request.hpp"
#include "daemon/control/terminal.hpp"
#include "daemon/control/top_view.hpp"

namespace clusterd {

using nlohmann::json;

namespace {

double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string clock_text() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[16];
    std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
    return buf;
}

bool env_set(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0';
}

// The locale's character set, as the C library would pick it: LC_ALL, LC_CTYPE, LANG.
bool utf8_locale() {
    for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
        if (!env_set(name)) continue;
        std::string v = std::getenv(name);
        for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return v.find("utf-8") != std::string::npos || v.find("utf8") != std::string::npos;
    }
    return false;
}

// One control connection, read a line at a time.
class Connection {
  public:
    bool open(const std::string& path, const json& request, std::string& error) {
        buffer_.clear();
        fd_ = send_request(path, request, 5000, error);
        return static_cast<bool>(fd_);
    }
    bool send(const json& request) {
        std::string line = request.dump() + "\n";
        return ::send(fd_.get(), line.data(), line.size(), MSG_NOSIGNAL) ==
               static_cast<ssize_t>(line.size());
    }
    int fd() const { return fd_.get(); }
    /// Reads what is there (poll() said so); false once the daemon closed it.
    bool fill() {
        char chunk[65536];
        ssize_t n = ::read(fd_.get(), chunk, sizeof chunk);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
        if (n <= 0 || buffer_.size() > (16u << 20)) return false;
        buffer_.append(chunk, static_cast<std::size_t>(n));
        return true;
    }
    /// The next whole line, parsed (not an object: the daemon said something unreadable).
    std::optional<json> take() {
        std::size_t nl = buffer_.find('\n');
        if (nl == std::string::npos) return std::nullopt;
        json j = json::parse(buffer_.substr(0, nl), nullptr, false);
        buffer_.erase(0, nl + 1);
        return j;
    }
    /// The next line, waiting up to `timeout_ms`; nullopt on timeout or a closed connection.
    std::optional<json> wait_line(int timeout_ms) {
        double until = seconds_now() + timeout_ms / 1000.0;
        for (;;) {
            if (auto line = take()) return line;
            int left = static_cast<int>((until - seconds_now()) * 1000);
            pollfd p{fd_.get(), POLLIN, 0};
            if (left <= 0 || ::poll(&p, 1, left) <= 0 || !fill()) return std::nullopt;
        }
    }
    void close() { fd_.reset(); }

  private:
    UniqueFd fd_;
    std::string buffer_;
};

json status_request(const std::string& program) {
    ControlRequest r;
    r.cmd = ControlCommand::status;
    r.program = program;
    return r.to_json();
}

json events_request(const std::string& program, bool follow) {
    ControlRequest r;
    r.cmd = ControlCommand::events;
    r.program = program;
    r.lines = static_cast<int>(TopView::kEvents);
    r.follow = follow;
    return r.to_json();
}

// A status reply's "status", or nullopt with `error` set (a refusal says why).
std::optional<json> status_of(const std::optional<json>& reply, std::string& error) {
    if (!reply || !reply->is_object()) {
        error = reply ? "an unreadable reply" : "no reply";
        return std::nullopt;
    }
    if (!reply->value("ok", false) || !reply->contains("status")) {
        error = reply->value("message", std::string("the daemon refused"));
        return std::nullopt;
    }
    return (*reply)["status"];
}

// Not a terminal: two samples an interval (2 s at least) apart, the latest events, one plain frame.
int one_frame(const std::string& path, const std::string& program, double interval) {
    TopView view(interval);
    Connection c;
    std::string error;
    if (!c.open(path, status_request(program), error)) {
        std::cerr << "clusterd: " << error
                  << " (is it running? -s PATH or -c FILE names another one)\n";
        return 1;
    }
    for (int i = 0; i < 2; ++i) {
        if (i == 1) {
            // Workers report their counts about once a second: two samples closer than
            // that could both fall between two reports.
            std::this_thread::sleep_for(std::chrono::duration<double>(std::max(interval, 2.0)));
            if (!c.send(status_request(program))) error = "the daemon closed the connection";
        }
        auto status = status_of(c.wait_line(10'000), error);
        if (!status) {
            std::cerr << "clusterd: " << error << "\n";
            return 1;
        }
        view.update(*status, seconds_now());
    }
    if (c.send(events_request(program, false)))
        while (auto line = c.wait_line(10'000)) {
            if (!line->is_object() || line->contains("ok")) break;
            if (line->contains("event")) view.add_event(*line);
        }
    int width = 120;
    if (env_set("COLUMNS")) width = std::max(20, std::atoi(std::getenv("COLUMNS")));
    for (const auto& l : view.render({width, 0, false, utf8_locale()}, clock_text()))
        std::cout << l << "\n";
    std::cout << std::flush;
    return 0;
}

struct Outcome {
    int code = 0;
    std::string message;  ///< said once the terminal is back
};

// The live view, until q, a signal, or the daemon goes.
Outcome live(const std::string& path, const std::string& program, double interval) {
    TopView view(interval);
    Connection status, events;
    std::string error;
    if (!status.open(path, status_request(program), error))
        return {1, error + " (is it running? -s PATH or -c FILE names another one)"};
    auto first = status_of(status.wait_line(10'000), error);
    if (!first) return {1, error};
    view.update(*first, seconds_now());
    if (!events.open(path, events_request(program, true), error)) return {1, error};

    const char* term = std::getenv("TERM");
    const bool colour = !env_set("NO_COLOR") && !(term && std::string(term) == "dumb");
    const bool utf8 = utf8_locale();
    bool keys = ::isatty(STDIN_FILENO);  // off at end of input
    Terminal terminal;
    auto draw = [&] {
        TopScreen screen{0, 0, colour, utf8};
        Terminal::size(screen.width, screen.height);
        auto lines = view.render(screen, clock_text());
        std::string out = "\033[H";
        for (std::size_t i = 0; i < lines.size(); ++i)
            out += lines[i] + "\033[K" + (i + 1 < lines.size() ? "\r\n" : "");
        out += "\033[J";
        return Terminal::write(out);
    };
    // A connection the daemon closed: an upgrade's exec closes them too, so ask again once.
    auto reopen = [&](Connection& c, const json& request) {
        c.close();
        return c.open(path, request, error);
    };
    // The daemon stopped: its connection closed and the socket refuses, or it answers that
    // it is shutting down.
    const auto gone = [&] {
        auto colon = error.rfind(": ");
        return Outcome{1, "the daemon at " + path + " went away (" +
                              (colon == std::string::npos ? error : error.substr(colon + 2)) + ")"};
    };
    const auto refused = [&](const std::string& why) {
        error = why;
        return why.find("shutting down") != std::string::npos ? gone() : Outcome{1, why};
    };
    double next = seconds_now() + interval;
    bool asked = false;
    if (!draw()) return {1, "cannot write to the terminal"};
    for (;;) {
        double now = seconds_now();
        if (!asked && now >= next) {
            if (!status.send(status_request(program)) && !reopen(status, status_request(program)))
                return gone();
            asked = true;
            next = now + interval;
        }
        pollfd fds[4] = {{terminal.signals(), POLLIN, 0},
                         {status.fd(), POLLIN, 0},
                         {events.fd(), POLLIN, 0},
                         {keys ? STDIN_FILENO : -1, POLLIN, 0}};
        int wait_ms = asked ? 1000 : std::max(0, static_cast<int>((next - now) * 1000) + 1);
        if (::poll(fds, 4, wait_ms) < 0 && errno != EINTR)
            return {1, std::string("poll: ") + std::strerror(errno)};
        bool redraw = false;
        if (fds[0].revents & POLLIN) {
            unsigned char sig;
            while (::read(terminal.signals(), &sig, 1) == 1) {
                if (sig == SIGINT) return {0, ""};
                if (sig == SIGTERM || sig == SIGHUP) return {128 + sig, ""};
                if (sig == SIGTSTP) terminal.suspend();
                if (sig == SIGCONT) terminal.enter();
                redraw = true;  // SIGWINCH, and back from a stop
            }
        }
        if (fds[3].revents & (POLLIN | POLLHUP)) {
            char key[64];
            ssize_t n = ::read(STDIN_FILENO, key, sizeof key);
            for (ssize_t i = 0; i < n; ++i)
                if (key[i] == 'q' || key[i] == 'Q' || key[i] == 3) return {0, ""};
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) keys = false;
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!status.fill()) {
                error = "it closed the connection";
                if (!reopen(status, status_request(program))) return gone();
                asked = true;
            }
            while (auto reply = status.take()) {
                auto s = status_of(reply, error);
                if (!s) return refused(error);
                view.update(*s, seconds_now());
                asked = false;
                redraw = true;
            }
        }
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!events.fill()) {
                error = "it closed the connection";
                if (!reopen(events, events_request(program, true))) return gone();
                view.clear_events();
            }
            while (auto line = events.take()) {
                if (!line->is_object()) return {1, "an unreadable event line"};
                if (line->contains("ok") && !line->value("ok", false))
                    return refused(line->value("message", std::string("events refused")));
                if (line->contains("event")) {
                    view.add_event(*line);
                    redraw = true;
                }
            }
        }
        if (redraw && !draw()) return {1, "cannot write to the terminal"};
    }
}

}  // namespace

int run_top(const std::string& socket_path, const std::string& program, double interval) {
    if (!::isatty(STDOUT_FILENO)) return one_frame(socket_path, program, interval);
    Outcome out;
    try {
        out = live(socket_path, program, interval);
    } catch (const std::exception& e) {
        out = {1, e.what()};
    }
    if (!out.message.empty()) std::cerr << "clusterd: " << out.message << "\n";
    return out.code;
}

}  // namespace clusterd

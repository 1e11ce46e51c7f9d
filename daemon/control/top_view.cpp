#include "daemon/control/top_view.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace clusterd {

using nlohmann::json;

namespace {

// x rounded to the nearest integer, half away from zero, for x >= 0 (as std::lround, without
// pulling libm into the binary for it).
int nearest(double x) {
    return static_cast<int>(x + 0.5);
}

// Requests are counted over this long at least: workers report them about once a second.
constexpr double kRateWindow = 4.0;

std::string printf_string(const char* format, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

std::string rate(double v) {
    if (v < 0) return "-";
    return printf_string(v < 100 ? "%.1f" : "%.0f", v);
}

std::string bytes(double b) {
    if (b < 0) return "-";
    double m = b / (1024.0 * 1024.0);
    return m >= 1024 ? printf_string("%.1fG", m / 1024.0) : printf_string("%.1fM", m);
}

std::string text(const json& j, const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

double number(const json& j, const char* key, double otherwise = -1) {
    return j.contains(key) && j[key].is_number() ? j[key].get<double>() : otherwise;
}

// A figure the worker reports (fields are strings), or -1.
double figure(const json& worker, const char* name) {
    if (!worker.contains("fields") || !worker["fields"].is_object()) return -1;
    const json& f = worker["fields"];
    if (!f.contains(name) || !f[name].is_string()) return -1;
    try {
        return std::stod(f[name].get<std::string>());
    } catch (const std::exception&) {
        return -1;
    }
}

std::string left(std::string s, std::size_t w) {
    if (s.size() > w) s.resize(w);
    return s + std::string(w - s.size(), ' ');
}

std::string right(const std::string& s, std::size_t w) {
    return s.size() >= w ? s : std::string(w - s.size(), ' ') + s;
}

// Paints already padded text: SGR only with colour on.
struct Painter {
    bool on;
    std::string operator()(const std::string& s, const char* sgr) const {
        return on && *sgr ? "\033[" + std::string(sgr) + "m" + s + "\033[0m" : s;
    }
};

const char* state_colour(const std::string& state) {
    if (state == "ready") return "32";
    if (state == "backoff" || state == "failed") return "31";
    if (state == "stopped") return "2";
    return "33";  // starting, stopping
}

const char* event_colour(const std::string& event) {
    if (event == "exited" || event == "hung") return "31";
    if (event == "ready") return "32";
    return "33";
}

// "[|||   ]" of `fraction` (0..1), `w` inside; green, yellow past 50%, red past 80%.
std::string bar(double fraction, int w, const Painter& paint) {
    if (w <= 0) return "";
    fraction = std::clamp(fraction < 0 ? 0.0 : fraction, 0.0, 1.0);
    int n = nearest(fraction * w);
    const char* c = fraction > 0.8 ? "31" : fraction > 0.5 ? "33" : "32";
    return "[" + paint(std::string(n, '|'), c) + std::string(w - n, ' ') + "] ";
}

std::string sparkline(const std::deque<double>& values, std::size_t w, bool utf8) {
    static const char* const blocks[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    static const char ascii[] = "_.-:=+*#";
    std::size_t from = values.size() > w ? values.size() - w : 0;
    double top = 0;
    for (std::size_t i = from; i < values.size(); ++i) top = std::max(top, values[i]);
    std::string out;
    for (std::size_t i = from; i < values.size(); ++i) {
        if (values[i] < 0) {
            out += ' ';
            continue;
        }
        int level = top > 0 ? nearest(values[i] / top * 7) : 0;
        level = std::clamp(level, 0, 7);
        out += utf8 ? std::string(blocks[level]) : std::string(1, ascii[level]);
    }
    return out;
}

}  // namespace

std::string fit_width(const std::string& s, int width) {
    std::string out;
    int seen = 0;
    bool painted = false;
    for (std::size_t i = 0; i < s.size();) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == 0x1b && i + 1 < s.size() && s[i + 1] == '[') {  // CSI: copy, zero width
            std::size_t end = i + 2;
            while (end < s.size() && (s[end] < 0x40 || s[end] > 0x7e)) ++end;
            out.append(s, i, end + 1 - i);
            painted = true;
            i = end + 1;
            continue;
        }
        std::size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (seen == width) break;
        out.append(s, i, len);
        ++seen;
        i += len;
    }
    if (painted && out.size() < s.size()) out += "\033[0m";
    return out;
}

TopView::TopView(double interval) : interval_(interval) {}

TopView::Rates TopView::rates_of(const json& w, double now) {
    long long pid = w.value("pid", 0LL);
    if (pid == 0) return {};
    Sample cur{now, figure(w, "REQUESTS"), number(w, "cpu_seconds")};
    double window = std::max(kRateWindow, 3 * interval_);
    auto& seen = samples_[pid];
    if (seen.empty()) {
        // Started since about the last refresh: all it did, it did since it started.
        double up = number(w, "uptime_s", 0);
        if (up > 0 && up <= std::max(window, 2 * interval_)) seen.push_back({now - up, 0, 0});
    }
    seen.push_back(cur);
    while (seen.size() > 2 && seen.front().t < now - window) seen.pop_front();
    Rates r;
    if (seen.size() >= 2) {
        const Sample& prev = seen[seen.size() - 2];
        if (cur.cpu_seconds >= 0 && prev.cpu_seconds >= 0 && cur.t > prev.t)
            r.cpu = std::max(0.0, 100 * (cur.cpu_seconds - prev.cpu_seconds) / (cur.t - prev.t));
        auto first =
            std::find_if(seen.begin(), seen.end(), [](const Sample& s) { return s.requests >= 0; });
        if (cur.requests >= 0 && first != seen.end() && cur.t > first->t &&
            cur.requests >= first->requests)
            r.requests = (cur.requests - first->requests) / (cur.t - first->t);
    } else {
        r.cpu = number(w, "cpu_percent");  // the daemon's figure, until there are two of ours
    }
    return r;
}

void TopView::update(const json& status, double now) {
    status_ = status;
    ++refreshes_;
    std::map<long long, Rates> rates;
    const json programs = status.value("programs", json::array());
    for (const auto& p : programs) {
        double total = -1;
        for (const char* group : {"slots", "other_workers"})
            for (const auto& w : p.value(group, json::array())) {
                Rates r = rates_of(w, now);
                long long pid = w.value("pid", 0LL);
                if (pid != 0) rates[pid] = r;
                if (r.requests >= 0) total = std::max(total, 0.0) + r.requests;
            }
        auto& trend = trend_[p.value("name", "")];
        trend.push_back(total);
        while (trend.size() > kTrend) trend.pop_front();
    }
    for (auto it = samples_.begin(); it != samples_.end();)
        it = rates.count(it->first) ? std::next(it) : samples_.erase(it);
    rates_ = std::move(rates);
}

void TopView::add_event(const json& event) {
    events_.push_back(event);
    while (events_.size() > kEvents) events_.pop_front();
}

void TopView::clear_events() {
    events_.clear();
}

namespace {

// A worker row: slot, pid, state, req/s, CPU bar, CPU%, RSS bar, RSS, lag, connections,
// restarts, last exit. The bars come drawn (or blank); the state and restarts are painted.
constexpr int kWidths[] = {5, 8, 18, 7, 0, 6, 0, 7, 8, 6, 9};
constexpr int kFixedColumns = 2 + 5 + 8 + 18 + 7 + 2 + 6 + 7 + 8 + 6 + 9;

std::string cells(const std::vector<std::string>& c, const Painter& paint, const char* state_sgr,
                  const char* restarts_sgr) {
    std::string out = "  ";
    for (std::size_t i = 0; i < c.size(); ++i) {
        std::size_t w = i < std::size(kWidths) ? static_cast<std::size_t>(kWidths[i]) : 0;
        if (i == 3) {
            out += right(c[i], w) + "  ";
        } else if (w == 0) {
            out += c[i];  // a bar, or the last column
        } else {
            std::string cell = left(c[i], w);
            out += i == 2 ? paint(cell, state_sgr) : i == 10 ? paint(cell, restarts_sgr) : cell;
        }
    }
    return out;
}

}  // namespace

std::vector<std::string> TopView::render(const TopScreen& screen, const std::string& clock) const {
    Painter paint{screen.colour};
    const int width = std::max(screen.width, 20);
    std::vector<std::string> main;
    const json d = status_.value("daemon", json::object());
    main.push_back(
        paint(left("clusterd top  " + d.value("version", std::string("?")) + ", pid " +
                       std::to_string(d.value("pid", 0)) + ", config " + text(d, "config") + "  " +
                       clock + "  every " + printf_string("%g", interval_) + " s, q to quit",
                   static_cast<std::size_t>(width)),
              "7"));

    // The bars get what is left once the other columns and 28 of LAST EXIT are placed.
    int bar_w = std::min(10, (width - kFixedColumns - 28) / 2 - 3);
    if (bar_w < 3) bar_w = 0;
    const std::string no_bar(bar_w > 0 ? static_cast<std::size_t>(bar_w) + 3 : 0, ' ');
    const json programs = status_.value("programs", json::array());
    for (const auto& p : programs) {
        std::string name = p.value("name", "");
        const json slots = p.value("slots", json::array());
        const json others = p.value("other_workers", json::array());
        int ready = 0;
        long long restarts = 0;
        double cpu = -1, rss = 0, conns = -1, max_rss = 1, total = -1;
        for (const json* group : {&slots, &others})
            for (const auto& w : *group) {
                max_rss = std::max(max_rss, number(w, "rss_bytes", 0));
                auto r = rates_.find(w.value("pid", 0LL));
                if (r != rates_.end() && r->second.cpu >= 0)
                    cpu = std::max(cpu, 0.0) + r->second.cpu;
                if (r != rates_.end() && r->second.requests >= 0)
                    total = std::max(total, 0.0) + r->second.requests;
                rss += number(w, "rss_bytes", 0);
                if (figure(w, "CONNECTIONS") >= 0)
                    conns = std::max(conns, 0.0) + figure(w, "CONNECTIONS");
            }
        for (const auto& w : slots) {
            ready += text(w, "state") == "ready";
            restarts += w.value("restarts", 0LL);
        }
        double limit = number(p, "memory_limit", 0);
        double rss_scale = limit > 0 ? limit : max_rss;
        const std::string ready_text =
            std::to_string(ready) + "/" + std::to_string(slots.size()) + " ready";

        std::string head = paint(name, "1") + "  " + ready_text + ", generation " +
                           std::to_string(p.value("generation", 0));
        if (p.value("rolling", false)) head += ", " + paint("rolling restart", "33");
        if (!p.value("accepting", true)) head += ", " + paint("REFUSING CONNECTIONS", "31;1");
        if (!text(p, "waiting_for").empty()) head += ", waiting for " + text(p, "waiting_for");
        auto trend = trend_.find(name);
        if (trend != trend_.end()) {
            std::string line = "   req/s " + rate(total) + "  ";
            int room = width - static_cast<int>(name.size()) - 40 - static_cast<int>(line.size());
            if (room >= 5)
                head += line +
                        paint(sparkline(trend->second, static_cast<std::size_t>(room), screen.utf8),
                              "36");
        }
        main.push_back(head);
        main.push_back(paint(cells({"SLOT", "PID", "STATE", "REQ/S", no_bar, "CPU%", no_bar, "RSS",
                                    "LAG", "CONNS", "RESTARTS", "LAST EXIT"},
                                   paint, "", ""),
                             "2"));
        auto row = [&](const json& w, bool other) {
            std::string state = text(w, "state");
            std::string cause = text(w, "last_cause");
            std::string shown = state;
            if (state != "ready" && !cause.empty() && cause != "none" && cause != "requested")
                shown += " (" + cause + ")";
            if (other) shown += "*";
            long long pid = w.value("pid", 0LL);
            auto r = rates_.find(pid);
            Rates rt = r != rates_.end() ? r->second : Rates{};
            double rss_b = number(w, "rss_bytes");
            double lag = figure(w, "LOOP_LAG_US");
            double c = figure(w, "CONNECTIONS");
            std::string last = text(w, "last_exit");
            if (!last.empty()) last += " (" + cause + ")";
            long long n = w.value("restarts", 0LL);
            main.push_back(
                cells({std::to_string(w.value("slot", 0)), pid ? std::to_string(pid) : "-", shown,
                       rate(rt.requests), bar(rt.cpu / 100, bar_w, paint),
                       rt.cpu < 0 ? "-" : printf_string("%.1f", rt.cpu),
                       bar(rss_b / rss_scale, bar_w, paint), bytes(rss_b),
                       lag < 0 ? "-" : printf_string("%.1fms", lag / 1000),
                       c < 0 ? "-" : printf_string("%.0f", c), std::to_string(n),
                       last.empty() ? "-" : last},
                      paint, state_colour(state), n > 0 ? "33" : ""));
        };
        for (const auto& w : slots) row(w, false);
        for (const auto& w : others) row(w, true);
        main.push_back(paint(
            cells({"total", "", ready_text, rate(total), no_bar,
                   cpu < 0 ? "-" : printf_string("%.1f", cpu), no_bar, bytes(rss), "",
                   conns < 0 ? "-" : printf_string("%.0f", conns), std::to_string(restarts), ""},
                  paint, "", ""),
            "1"));
        if (!others.empty()) main.push_back(paint("  (* = old generation or leaving slot)", "2"));
        main.push_back("");
    }
    if (programs.empty()) main.push_back("(no programs)");

    std::vector<std::string> events;
    events.push_back(paint(left("latest events", static_cast<std::size_t>(width)), "7"));
    if (events_.empty()) events.push_back(paint("(none yet)", "2"));
    for (const auto& e : events_) {
        std::string t = text(e, "time");
        std::string who = text(e, "program");
        if (e.contains("slot") && e["slot"].is_number_integer())
            who += "[" + std::to_string(e["slot"].get<int>()) + "]";
        std::string event = text(e, "event");
        events.push_back((t.size() >= 23 ? t.substr(11, 12) : t) + " " +
                         paint(left(event, 10), event_colour(event)) + left(who, 12) + " " +
                         text(e, "message"));
    }

    // A short terminal keeps the top of the tables and the latest events.
    std::size_t h = static_cast<std::size_t>(screen.height);
    if (h > 0 && main.size() + events.size() > h) {
        std::size_t want = std::min({events.size(), std::max<std::size_t>(3, h / 3), h});
        std::size_t room = h - want;
        if (main.size() > room) {
            std::size_t cut = main.size() - (room > 1 ? room - 1 : room);
            main.resize(room > 1 ? room - 1 : room);
            if (room > 1)
                main.push_back(paint(
                    "(" + std::to_string(cut) + " more lines: a taller terminal shows them)", "2"));
        }
        std::size_t shown = h - main.size();  // the pane's title and the latest events
        std::vector<std::string> kept{events.front()};
        if (shown > 1)
            kept.insert(kept.end(), events.end() - static_cast<std::ptrdiff_t>(shown - 1),
                        events.end());
        events = std::move(kept);
    }
    for (auto& l : events) main.push_back(std::move(l));
    for (auto& l : main) l = fit_width(l, width);
    return main;
}

}  // namespace clusterd

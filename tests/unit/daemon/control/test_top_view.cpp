// `clusterd top`'s view: rates from the client's own samples, the frame fitted to the screen.
#include <doctest/doctest.h>

#include <string>

#include "daemon/control/top_view.hpp"

using namespace clusterd;
using nlohmann::json;

namespace top_view_test {

json worker(int slot, long long pid, double requests, double cpu_seconds, double uptime,
            int restarts = 0) {
    json w = {{"slot", slot},
              {"pid", pid},
              {"state", "ready"},
              {"restarts", restarts},
              {"last_cause", "none"},
              {"last_exit", ""},
              {"uptime_s", uptime},
              {"cpu_seconds", cpu_seconds},
              {"cpu_percent", 99.0},
              {"rss_bytes", 10 * 1024 * 1024},
              {"fields", json::object()}};
    if (requests >= 0) w["fields"]["REQUESTS"] = std::to_string(static_cast<long long>(requests));
    w["fields"]["LOOP_LAG_US"] = "1500";
    w["fields"]["CONNECTIONS"] = "8";
    return w;
}

json status(const json& slots) {
    return {{"daemon", {{"pid", 1}, {"version", "0.1.0"}, {"config", "/etc/x.yaml"}}},
            {"programs", json::array({{{"name", "web"},
                                       {"generation", 1},
                                       {"accepting", true},
                                       {"slots", slots},
                                       {"other_workers", json::array()}}})}};
}

std::string frame(const TopView& v, int width = 120, int height = 0) {
    std::string out;
    for (const auto& l : v.render({width, height, false, false}, "12:00:00")) out += l + "\n";
    return out;
}

int visible(const std::string& s) {
    int n = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\033') {
            while (i < s.size() && !(s[i] >= 0x40 && s[i] <= 0x7e && s[i] != '[')) ++i;
            continue;
        }
        if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) ++n;
    }
    return n;
}

}  // namespace top_view_test

using namespace top_view_test;

TEST_CASE("top: req/s and CPU% come from the client's own samples") {
    TopView v(1.0);
    v.update(status(json::array({worker(0, 100, 1000, 5.0, 600)})), 10.0);
    // One sample: no request rate yet; the daemon's CPU figure meanwhile.
    CHECK(frame(v).find("99.0") != std::string::npos);
    v.update(status(json::array({worker(0, 100, 1500, 5.5, 601)})), 11.0);
    std::string f = frame(v);
    CHECK_MESSAGE(f.find("500.0") == std::string::npos, f);
    CHECK_MESSAGE(f.find(" 500 ") != std::string::npos, f);  // (1500 - 1000) / 1 s
    CHECK_MESSAGE(f.find("50.0") != std::string::npos, f);   // 0.5 s of CPU in 1 s
    CHECK_MESSAGE(f.find("1.5ms") != std::string::npos, f);
}

TEST_CASE("top: the request rate spans a few seconds, so a once-a-second report does not swing") {
    TopView v(1.0);
    // The worker's count moves once a second; the samples see it move 1, 0, 2, 1 times.
    double counts[] = {0, 100, 100, 300, 400};
    for (int i = 0; i < 5; ++i)
        v.update(status(json::array({worker(0, 7, counts[i], 0, 600 + i)})), i);
    std::string f = frame(v);
    CHECK_MESSAGE(f.find(" 100 ") != std::string::npos, f);  // (400 - 0) / 4 s
}

TEST_CASE("top: a restarted worker counts from its start, and the old pid is forgotten") {
    TopView v(1.0);
    v.update(status(json::array({worker(0, 7, 5000, 1, 600)})), 0);
    v.update(status(json::array({worker(0, 7, 6000, 1, 601)})), 1);
    // pid 8 replaced it 0.5 s ago and served 200 requests since.
    v.update(status(json::array({worker(0, 8, 200, 0.1, 0.5, 1)})), 2);
    std::string f = frame(v);
    CHECK_MESSAGE(f.find(" 400 ") != std::string::npos, f);
    CHECK_MESSAGE(f.find("20.0") != std::string::npos, f);  // 0.1 s of CPU in 0.5 s
}

TEST_CASE("top: a frame fits the screen, keeps the latest events, and says what it left out") {
    TopView v(1.0);
    json slots = json::array();
    for (int i = 0; i < 30; ++i) slots.push_back(worker(i, 100 + i, 0, 0, 600));
    v.update(status(slots), 0);
    for (int i = 0; i < 12; ++i)
        v.add_event({{"time", "2026-12-01T20:09:40.355Z"},
                     {"event", "exited"},
                     {"program", "web"},
                     {"slot", i},
                     {"message", "pid " + std::to_string(i) + " killed by SIGKILL (crashed)"}});
    for (int width : {40, 80, 120, 200}) {
        auto lines = v.render({width, 24, true, true}, "12:00:00");
        CHECK(lines.size() == 24);
        for (const auto& l : lines) CHECK_MESSAGE(visible(l) <= width, l);
    }
    std::string f = frame(v, 120, 24);
    CHECK_MESSAGE(f.find("more lines") != std::string::npos, f);
    CHECK_MESSAGE(f.find("web[11]") != std::string::npos, f);  // the latest event
    CHECK_MESSAGE(f.find("web[3]") == std::string::npos, f);   // only the last 8 are kept
    // Tall enough: everything, with the pane's title.
    std::string all = frame(v);
    CHECK(all.find("latest events") != std::string::npos);
    CHECK(all.find("web[4]") != std::string::npos);
    CHECK(all.find("total") != std::string::npos);
}

TEST_CASE("top: fit_width counts columns, not bytes or colour codes") {
    CHECK(fit_width("abcdef", 3) == "abc");
    CHECK(fit_width("\033[32mabcdef\033[0m", 2) == "\033[32mab\033[0m");
    CHECK(fit_width("▁▂▃▄", 2) == "▁▂");
    CHECK(fit_width("ab", 5) == "ab");
}

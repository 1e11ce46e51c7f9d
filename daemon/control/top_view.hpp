// What `clusterd top` shows, apart from the terminal: status replies and events in, the
// lines of one frame out. Pure (no I/O, no clock): the caller passes the time of each
// sample, so the rates are tested on made-up samples (tests/unit/daemon/control).
//
// Rates come from the client's own samples, never from the daemon's `cpu_percent` (which
// is "since the previous status request of any client"): CPU% is the growth of a worker's
// `cpu_seconds` between two refreshes; req/s is the growth of the REQUESTS figure the
// worker reports (X_CLUSTERD_REQUESTS) over the last few seconds, because a worker sends
// its figures about once a second, and a rate over one refresh would swing between 0 and
// twice the truth. A worker is known by its pid: a restarted slot starts its count afresh.
#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace clusterd {

/// How a frame is drawn.
struct TopScreen {
    int width = 120;  ///< columns
    int height = 40;  ///< rows; 0 = as many as the frame needs
    bool colour = false;
    bool utf8 = false;  ///< the trend in block characters, else in ASCII
};

class TopView {
  public:
    /// `interval`: seconds between refreshes (the header says it; sizes the rate window).
    explicit TopView(double interval);

    /// One `status` reply's "status" object, taken at `now` (seconds, any monotonic clock).
    void update(const nlohmann::json& status, double now);
    /// One event of the events feed (the object `clusterd events --json` prints).
    void add_event(const nlohmann::json& event);
    /// Forget the events (a new events connection sends the latest again).
    void clear_events();
    /// Refreshes seen so far.
    int refreshes() const { return refreshes_; }

    /// The frame: at most `screen.height` lines of at most `screen.width` visible columns
    /// (colour codes do not count), no line ends.
    std::vector<std::string> render(const TopScreen& screen, const std::string& clock) const;

    /// How many events the pane shows at most.
    static constexpr std::size_t kEvents = 8;
    /// How many refreshes a program's trend keeps.
    static constexpr std::size_t kTrend = 120;

  private:
    struct Sample {
        double t = 0;
        double requests = -1;  ///< -1: the worker reports none
        double cpu_seconds = -1;
    };
    struct Rates {
        double requests = -1;  ///< per second; -1 unknown
        double cpu = -1;       ///< percent of one CPU; -1 unknown
    };
    Rates rates_of(const nlohmann::json& worker, double now);

    double interval_;
    int refreshes_ = 0;
    nlohmann::json status_;
    std::map<long long, std::deque<Sample>> samples_;  ///< by pid
    std::map<long long, Rates> rates_;                 ///< by pid, at the last update
    std::map<std::string, std::deque<double>> trend_;  ///< program's req/s per refresh
    std::deque<nlohmann::json> events_;
};

/// `s` cut to `width` visible columns (escape sequences kept, UTF-8 counted per code point).
std::string fit_width(const std::string& s, int width);

}  // namespace clusterd

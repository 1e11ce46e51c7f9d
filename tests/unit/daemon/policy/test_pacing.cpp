// The program-level restart policy on simulated time: the slot state machine and the pacing
// functions, glued the way the supervisor glues them, run by a discrete-event loop on a fake
// clock. Hours of crash loops, kill storms, outages and random kills run in milliseconds.
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <queue>
#include <random>
#include <tuple>
#include <vector>

#include "daemon/policy/pacing.hpp"

using namespace clusterd;
using namespace std::chrono_literals;

namespace {

const TimePoint t0 = TimePoint{} + 1000s;

/// What a worker started at `at` in slot `k` does: become ready after `ready` (if set) and
/// exit after `exit` (if set), both counted from its start.
struct Fate {
    std::optional<Duration> ready;
    std::optional<Duration> exit;
    bool crash = true;  // killed by a signal (else exit code 1)
};
using Behaviour = std::function<Fate(int k, TimePoint at)>;

class Sim {
  public:
    Sim(int n, Behaviour behave, Duration backoff_max = 5s)
        : slots_(static_cast<std::size_t>(n)), gen_(slots_.size()) {
        policy_.watchdog = 0ms;
        policy_.backoff = {0ms, backoff_max};
        policy_.min_uptime = 1s;
        behave_ = std::move(behave);
        for (int k = 0; k < n; ++k) dispatch(k, event::Start{});
    }

    /// Runs every event up to `until`.
    void run_until(TimePoint until) {
        while (!queue_.empty() && std::get<0>(queue_.top()) <= until) {
            auto [at, seq, what] = queue_.top();
            queue_.pop();
            now_ = at;
            what();
            check_door();
        }
        now_ = until;
    }

    /// Kills the worker of slot k now (a signal from outside).
    void kill(int k) {
        const Slot& s = slots_[static_cast<std::size_t>(k)];
        if (s.pid != 0 && s.state != SlotState::stopping)
            dispatch(k, event::Exited{ExitStatus{true, 9, false}});
    }

    const std::vector<TimePoint>& starts() const { return starts_; }
    const Slot& slot(int k) const { return slots_[static_cast<std::size_t>(k)]; }
    int ready_count() const {
        return static_cast<int>(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) {
            return s.state == SlotState::ready;
        }));
    }
    bool shut() const { return shut_; }
    Duration open_time() const { return open_total_; }
    int entered_backoff() const { return backoffs_; }
    /// Times a shut door was wrongly kept open: nothing ready or starting, none due soon.
    int door_violations() const { return door_violations_; }
    TimePoint now() const { return now_; }
    const pacing::Pace& pace() const { return pace_; }
    std::vector<const Slot*> states() const {
        std::vector<const Slot*> out;
        for (const auto& s : slots_) out.push_back(&s);
        return out;
    }

  private:
    using Item = std::tuple<TimePoint, std::uint64_t, std::function<void()>>;
    struct Later {
        bool operator()(const Item& a, const Item& b) const {
            return std::tie(std::get<0>(a), std::get<1>(a)) >
                   std::tie(std::get<0>(b), std::get<1>(b));
        }
    };

    void at(TimePoint when, std::function<void()> what) {
        queue_.emplace(when, seq_++, std::move(what));
    }

    // The supervisor's dispatch: step, perform, feed back, then pace and the door.
    void dispatch(int k, Event first) {
        auto i = static_cast<std::size_t>(k);
        std::vector<Event> pending{std::move(first)};
        for (std::size_t n = 0; n < pending.size(); ++n) {
            SlotState before = slots_[i].state;
            Transition t = step(slots_[i], policy_, pending[n], now_);
            slots_[i] = t.next;
            if (before != SlotState::backoff && slots_[i].state == SlotState::backoff) ++backoffs_;
            for (const auto& a : t.actions) {
                if (auto* arm = std::get_if<action::ArmDeadline>(&a)) {
                    std::uint64_t g = ++gen_[i];
                    at(arm->at, [this, k, g] { on_deadline(k, g); });
                } else if (std::holds_alternative<action::CancelDeadline>(a)) {
                    ++gen_[i];
                } else if (std::holds_alternative<action::Spawn>(a)) {
                    pending.push_back(spawn(k));
                }
            }
        }
        pacing::Plan plan = pacing::after_change(pace_, states(), false, now_);
        for (auto w : plan.wake) dispatch(static_cast<int>(w), event::Start{});
        if (plan.probe) {
            std::uint64_t g = ++probe_gen_;
            at(*plan.probe, [this, g] {
                if (g != probe_gen_) return;  // re-armed since
                if (auto w = pacing::probe_pick(pace_, states()))
                    dispatch(static_cast<int>(*w), event::Start{});
            });
        }
        std::vector<const Slot*> all = states();
        pacing::Door d = pacing::door(pace_, all, now_);
        if (d == pacing::Door::open) set_shut(false);
        if (d == pacing::Door::shut) set_shut(true);
    }

    Event spawn(int k) {
        pacing::spawned(pace_, now_);
        set_shut(false);  // listen again before the fork
        starts_.push_back(now_);
        pid_t pid = next_pid_++;
        Fate f = behave_(k, now_);
        if (f.ready)
            at(now_ + *f.ready, [this, k, pid] {
                if (slot(k).pid == pid) dispatch(k, event::Ready{});
            });
        if (f.exit)
            at(now_ + *f.exit, [this, k, pid, crash = f.crash] {
                if (slot(k).pid == pid)
                    dispatch(k, event::Exited{ExitStatus{crash, crash ? 9 : 1, false}});
            });
        return event::Spawned{pid};
    }

    void on_deadline(int k, std::uint64_t g) {
        auto i = static_cast<std::size_t>(k);
        if (g != gen_[i]) return;  // cancelled or re-armed
        if (slots_[i].state == SlotState::backoff)
            if (auto until = pacing::hold(pace_, now_)) return dispatch(k, event::Postpone{*until});
        dispatch(k, event::Deadline{});
    }

    void set_shut(bool shut) {
        if (shut == shut_) return;
        if (shut) open_total_ += std::chrono::duration_cast<Duration>(now_ - opened_at_);
        if (!shut) opened_at_ = now_;
        shut_ = shut;
    }

    // Open with nothing ready or starting and nothing due within kSoon: a client would wait.
    void check_door() {
        if (shut_) return;
        bool up = false;
        for (const auto& s : slots_)
            up = up || s.state == SlotState::ready || s.state == SlotState::starting;
        if (up) return;
        bool soon = false;
        auto all = states();
        for (std::size_t i = 0; i < slots_.size(); ++i)
            if (auto at = pacing::next_try(pace_, all, i)) soon = soon || *at <= now_ + kSoon;
        if (!soon) ++door_violations_;
    }

    SlotPolicy policy_;
    Behaviour behave_;
    std::vector<Slot> slots_;
    std::vector<std::uint64_t> gen_;
    std::uint64_t probe_gen_ = 0;
    pacing::Pace pace_;
    std::priority_queue<Item, std::vector<Item>, Later> queue_;
    std::uint64_t seq_ = 0;
    TimePoint now_ = t0;
    pid_t next_pid_ = 100;
    std::vector<TimePoint> starts_;
    bool shut_ = false;
    TimePoint opened_at_ = t0;
    Duration open_total_{0};
    int backoffs_ = 0;
    int door_violations_ = 0;
};

double seconds(Duration d) {
    return std::chrono::duration<double>(d).count();
}

}  // namespace

TEST_CASE("pacing: a crash loop of any width starts one worker a second, the door shut between") {
    for (int n : {1, 2, 4, 16}) {
        INFO(n, " slots");
        Sim sim(n, [](int, TimePoint) { return Fate{std::nullopt, 5ms, false}; });
        sim.run_until(t0 + 1h);
        const auto& starts = sim.starts();
        // Each slot: its first start and the first failure's immediate retry; then paced.
        REQUIRE(starts.size() > static_cast<std::size_t>(2 * n));
        std::vector<double> gaps;
        for (std::size_t i = static_cast<std::size_t>(2 * n) + 1; i < starts.size(); ++i)
            gaps.push_back(
                seconds(std::chrono::duration_cast<Duration>(starts[i] - starts[i - 1])));
        CHECK(*std::min_element(gaps.begin(), gaps.end()) >= 0.999);
        CHECK(*std::max_element(gaps.begin(), gaps.end()) <= 1.01);  // never fewer either
        CHECK(starts.size() < 3600 + static_cast<std::size_t>(2 * n) + 2);
        // Open only around the starts: about 5 ms a second.
        CHECK(seconds(sim.open_time()) < 0.02 * 3600);
        CHECK(sim.door_violations() == 0);
        CHECK(sim.shut());
        // Every slot gets its turn.
        for (int k = 0; k < n; ++k) CHECK(sim.slot(k).restarts > 3600 / n / 2);
    }
}

TEST_CASE("pacing: a crash loop's starts stay a second apart whatever each failing run lasts") {
    // Real failing workers take from a millisecond to most of a second to exit (exec, a slow
    // host); the pace counts from starts, so the exits' spread never widens a start's gap,
    // also with backoff.max close to the pace (2 s against 1 s).
    for (Duration max : {Duration{2s}, Duration{5s}}) {
        for (int n : {2, 3, 8}) {
            INFO(n, " slots, backoff.max ", seconds(max));
            std::mt19937 rng(static_cast<unsigned>(n));
            std::uniform_int_distribution<int> run_ms(1, 900);
            Sim sim(
                n,
                [&](int, TimePoint) {
                    return Fate{std::nullopt, Duration{std::chrono::milliseconds(run_ms(rng))},
                                false};
                },
                max);
            sim.run_until(t0 + 10min);
            const auto& starts = sim.starts();
            REQUIRE(starts.size() > static_cast<std::size_t>(2 * n) + 100);
            std::vector<double> gaps;
            for (std::size_t i = static_cast<std::size_t>(2 * n) + 1; i < starts.size(); ++i)
                gaps.push_back(
                    seconds(std::chrono::duration_cast<Duration>(starts[i] - starts[i - 1])));
            CHECK(*std::min_element(gaps.begin(), gaps.end()) >= 0.999);
            CHECK(*std::max_element(gaps.begin(), gaps.end()) <= 1.01);
        }
    }
}

TEST_CASE("pacing: while nothing serves, next_try shows the slots taking their turns") {
    Sim sim(4, [](int, TimePoint) { return Fate{std::nullopt, 5ms, false}; });
    sim.run_until(t0 + 100s + 500ms);
    auto all = sim.states();
    std::vector<TimePoint> tries;
    for (std::size_t i = 0; i < all.size(); ++i) {
        auto at = pacing::next_try(sim.pace(), all, i);
        REQUIRE(at.has_value());
        CHECK(*at >= sim.now());
        tries.push_back(*at);
    }
    std::sort(tries.begin(), tries.end());
    for (std::size_t i = 1; i < tries.size(); ++i) CHECK(tries[i] - tries[i - 1] >= 999ms);
    // And the first of them is when the next start really happens.
    std::size_t before = sim.starts().size();
    sim.run_until(tries[0] + 1ms);
    REQUIRE(sim.starts().size() == before + 1);
    CHECK(sim.starts().back() - tries[0] < 5ms);
}

TEST_CASE("pacing: after a kill storm a worker serves within a second, then all at once") {
    // For 15 s every worker is killed 1 ms after it starts; afterwards they come up in 5 ms.
    const TimePoint storm_end = t0 + 15s;
    Sim sim(4, [&](int, TimePoint at) {
        if (at < storm_end) return Fate{5ms, 1ms, true};
        return Fate{5ms, std::nullopt, true};
    });
    sim.run_until(storm_end);
    std::size_t during = sim.starts().size();
    CHECK(during <= 15 + 2 * 4 + 1);  // paced to one a second after the first failures
    TimePoint first_ready{};
    TimePoint all_ready{};
    for (TimePoint t = storm_end; t < storm_end + 10s; t += 1ms) {
        sim.run_until(t);
        if (first_ready == TimePoint{} && sim.ready_count() >= 1) first_ready = t;
        if (sim.ready_count() == 4) {
            all_ready = t;
            break;
        }
    }
    REQUIRE(first_ready != TimePoint{});
    REQUIRE(all_ready != TimePoint{});
    CHECK(first_ready - storm_end <= 1006ms);
    CHECK(all_ready - first_ready <= 6ms);  // the others retry the moment one is ready
}

TEST_CASE("pacing: kills of healthy workers never back off, whatever the schedule") {
    Sim sim(2, [](int, TimePoint) { return Fate{5ms, std::nullopt, true}; });
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> slot(0, 1);
    std::uniform_int_distribution<int> gap_ms(1100, 3000);
    TimePoint t = t0 + 2s;
    int kills = 0;
    while (t < t0 + 2h) {
        sim.run_until(t);
        int k = slot(rng);
        // Only workers that have been ready for min_uptime: these are healthy runs.
        if (sim.slot(k).state == SlotState::ready && t - sim.slot(k).ready_at >= 1s) {
            sim.kill(k);
            ++kills;
            CHECK(sim.slot(k).state == SlotState::starting);  // at once
        }
        t += std::chrono::milliseconds(gap_ms(rng));
    }
    CHECK(kills > 2000);
    CHECK(sim.entered_backoff() == 0);
    CHECK(sim.slot(0).failures == 0);
    CHECK(sim.slot(1).failures == 0);
}

TEST_CASE("pacing: an outage of a minute: the slots back off, then all serve within a second") {
    const TimePoint from = t0 + 10s;
    const TimePoint until = t0 + 70s;
    Sim sim(8, [&](int, TimePoint at) {
        if (at >= from && at < until) return Fate{std::nullopt, 20ms, false};  // fails at start
        return Fate{5ms, std::nullopt, true};
    });
    sim.run_until(from);
    CHECK(sim.ready_count() == 8);
    for (int k = 0; k < 8; ++k) sim.kill(k);  // the outage takes every worker down
    sim.run_until(until);
    CHECK(sim.ready_count() == 0);
    CHECK(sim.shut());
    std::size_t during = sim.starts().size();
    sim.run_until(until + 1030ms);
    CHECK(sim.ready_count() == 8);
    CHECK(sim.door_violations() == 0);
    CHECK(sim.starts().size() - during == 8);
}

TEST_CASE("pacing: the door of a stopped program shuts only once its workers have exited") {
    pacing::Pace pace;
    Slot a;
    a.state = SlotState::stopping;
    a.pid = 100;
    Slot b;
    b.state = SlotState::stopped;
    // A worker told to stop may still be accepting until it reads its signal.
    CHECK(pacing::door(pace, {&a, &b}, t0) == pacing::Door::keep);
    a.state = SlotState::stopped;
    a.pid = 0;
    CHECK(pacing::door(pace, {&a, &b}, t0) == pacing::Door::shut);
}

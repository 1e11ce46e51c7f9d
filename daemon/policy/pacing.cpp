#include "daemon/policy/pacing.hpp"

#include <algorithm>
#include <utility>

namespace clusterd::pacing {

namespace {

bool in_backoff(const Slot* s) {
    return s->state == SlotState::backoff && s->deadline.has_value();
}

// The slot in backoff whose deadline comes first (ties: the lower slot).
std::optional<std::size_t> earliest(const std::vector<const Slot*>& slots) {
    std::optional<std::size_t> best;
    for (std::size_t i = 0; i < slots.size(); ++i)
        if (in_backoff(slots[i]) && (!best || *slots[i]->deadline < *slots[*best]->deadline))
            best = i;
    return best;
}

bool any_in(const std::vector<const Slot*>& slots, SlotState state) {
    return std::any_of(slots.begin(), slots.end(),
                       [state](const Slot* s) { return s->state == state; });
}

}  // namespace

std::optional<TimePoint> hold(const Pace& pace, TimePoint now) {
    if (pace.serving || now >= pace.next_probe) return std::nullopt;
    return pace.next_probe;
}

void spawned(Pace& pace, TimePoint now) {
    if (!pace.serving) pace.next_probe = now + kProbeInterval;
}

Plan after_change(Pace& pace, const std::vector<const Slot*>& slots, bool rolling, TimePoint now) {
    Plan plan;
    if (any_in(slots, SlotState::ready)) {
        if (pace.serving) return plan;
        pace.serving = true;
        if (!rolling)
            for (std::size_t i = 0; i < slots.size(); ++i)
                if (slots[i]->state == SlotState::backoff) plan.wake.push_back(i);
        return plan;
    }
    pace.serving = false;
    auto first = earliest(slots);
    if (any_in(slots, SlotState::starting) || !first) return plan;
    TimePoint at = std::max(now, pace.next_probe);
    if (*slots[*first]->deadline <= at) return plan;  // its own deadline comes first
    if (pace.probe_at != TimePoint{} && pace.probe_at <= at) return plan;
    pace.probe_at = at;
    plan.probe = at;
    return plan;
}

std::optional<std::size_t> probe_pick(Pace& pace, const std::vector<const Slot*>& slots) {
    pace.probe_at = {};
    if (pace.serving || any_in(slots, SlotState::starting)) return std::nullopt;
    return earliest(slots);
}

std::optional<TimePoint> next_try(const Pace& pace, const std::vector<const Slot*>& slots,
                                  std::size_t i) {
    const Slot* s = slots.at(i);
    if (!in_backoff(s)) return std::nullopt;
    if (pace.serving) return s->deadline;
    int rank = 0;
    for (std::size_t j = 0; j < slots.size(); ++j)
        if (j != i && in_backoff(slots[j]) &&
            std::pair(*slots[j]->deadline, j) < std::pair(*s->deadline, i))
            ++rank;
    TimePoint at = std::max(*s->deadline, pace.next_probe + rank * kProbeInterval);
    if (rank == 0 && pace.probe_at != TimePoint{}) at = std::min(at, pace.probe_at);
    return at;
}

Door door(const Pace& pace, const std::vector<const Slot*>& workers, TimePoint now) {
    bool up = false;
    bool soon = false;
    std::optional<TimePoint> backoff_end;  // the earliest end of a backoff
    for (const Slot* s : workers) {
        if (in_backoff(s)) {
            if (!backoff_end || *s->deadline < *backoff_end) backoff_end = s->deadline;
            continue;
        }
        soon = soon || coming(*s, now);
        // A worker told to stop may not have read its signal yet: shutting its socket under
        // it would fail its accept() and turn a requested stop into an error exit. The door
        // shuts once it is gone.
        soon = soon || (s->state == SlotState::stopping && s->pid != 0);
        up = up || s->state == SlotState::ready || s->state == SlotState::starting;
    }
    // A backoff counts by when it really ends: pacing may hold it past its deadline.
    if (backoff_end && !pace.serving) {
        backoff_end = std::max(*backoff_end, pace.next_probe);
        if (pace.probe_at != TimePoint{}) backoff_end = std::min(*backoff_end, pace.probe_at);
    }
    soon = soon || (backoff_end && *backoff_end <= now + kSoon);
    if (up) return Door::open;
    return soon ? Door::keep : Door::shut;
}

}  // namespace clusterd::pacing

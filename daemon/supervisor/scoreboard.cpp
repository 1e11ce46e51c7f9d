// The scoreboard (worker/scoreboard.hpp): a record per worker process in a memfd per program,
// where the built-in worker and the SDK keep their heartbeat and figures. Nothing here runs
// when a worker writes: the master reads the records when asked (status, /metrics) and when
// its program's one board timer is due, at the earliest deadline of the workers that
// heartbeat there (instead of a datagram and a timer per heartbeat per worker).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "daemon/net/listeners_bpf.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

std::optional<std::uint32_t> Supervisor::Impl::board_record(Worker* w) {
    Program& prog = *w->program;
    if (!prog.board && !prog.board_failed) {
        try {
            prog.board = std::make_shared<Scoreboard>(prog.name);
        } catch (const std::system_error& e) {
            prog.board_failed = true;
            spdlog::warn("{}: no scoreboard ({}): its workers report by datagram only", prog.name,
                         e.what());
        }
    }
    if (!prog.board) return std::nullopt;
    auto index = prog.board->take();
    if (!index)
        spdlog::warn("{}: scoreboard full ({} records in use): pid of slot {} reports by datagram",
                     prog.name, prog.board->in_use(), w->slot);
    return index;
}

void Supervisor::Impl::board_heartbeat(Worker* w) {
    if (!w->board_beats || !w->board_index || !w->program->board) return;
    BoardReading r = w->program->board->read(*w->board_index);
    if (r.pid != w->sm.pid || r.alive_ns == 0) return;
    TimePoint at{std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(r.alive_ns))};
    if (at > w->sm.last_heartbeat) dispatch(w, event::Heartbeat{at});
}

void Supervisor::Impl::board_figures(Worker* w) {
    if (!w->board_figures || !w->board_index || !w->program->board) return;
    BoardReading r = w->program->board->read(*w->board_index);
    if (r.pid != w->sm.pid) return;
    auto put = [&](const char* name, std::uint64_t v) { w->fields[name] = std::to_string(v); };
    put("LOOP_LAG_US", r.loop_lag_us);
    put("CONNECTIONS", r.connections);
    put("REQUESTS", r.requests);
    put("BYTES_IN", r.bytes_in);
    put("BYTES_OUT", r.bytes_out);
    put("HTTP_REJECTED", r.rejected);
    put("HTTP_TIMEOUTS", r.timeouts);
    if (r.status && !r.status->empty()) w->status = *r.status;
}

void Supervisor::Impl::read_boards() {
    std::vector<std::uint64_t> ids;
    for (const auto& [id, w] : workers)
        if (w->board_index) ids.push_back(id);
    for (std::uint64_t id : ids) {
        auto it = workers.find(id);  // a heartbeat may end another worker's spare
        if (it == workers.end()) continue;
        board_heartbeat(it->second.get());
        it = workers.find(id);
        if (it != workers.end()) board_figures(it->second.get());
    }
}

void Supervisor::Impl::refresh_for_reader() {
    read_boards();
    if (identity_steering_unavailable().empty()) check_all_listeners();
}

void Supervisor::Impl::schedule_board(Program& prog, TimePoint at) {
    if (prog.board_due && *prog.board_due <= at) return;  // it fires earlier and re-arms
    if (!prog.board_timer) prog.board_timer = exec.make_timer();
    prog.board_due = at;
    Program* p = &prog;
    prog.board_timer->arm(at, [this, p] {
        // The program may be gone (removed, its workers all stopped): look it up.
        for (auto& q : programs)
            if (q.get() == p) return check_board(*q);
    });
}

void Supervisor::Impl::check_board(Program& prog) {
    prog.board_due.reset();
    ++prog.board_checks;
    TimePoint t = now();
    std::vector<std::uint64_t> ids;
    for (const auto& [id, w] : workers)
        if (w->program == &prog && w->board_beats && w->sm.state == SlotState::ready &&
            w->sm.deadline)
            ids.push_back(id);
    // Every worker whose deadline is near has its record read (those far off need nothing
    // yet): one that stored a newer heartbeat moves its deadline; one whose deadline has come
    // is late, or hung.
    Duration watchdog = prog.spec->policy.watchdog;
    for (std::uint64_t id : ids) {
        auto it = workers.find(id);
        if (it == workers.end()) continue;
        Worker* w = it->second.get();
        if (!w->sm.deadline || *w->sm.deadline > t + watchdog / 4) continue;
        board_heartbeat(w);
        it = workers.find(id);
        if (it == workers.end()) continue;
        w = it->second.get();
        if (w->board_beats && w->sm.state == SlotState::ready && w->sm.deadline &&
            *w->sm.deadline <= t)
            on_deadline(w);
    }
    std::optional<TimePoint> next;
    for (const auto& [id, w] : workers)
        if (w->program == &prog && w->board_beats && w->sm.state == SlotState::ready &&
            w->sm.deadline && (!next || *w->sm.deadline < *next))
            next = w->sm.deadline;
    if (next) schedule_board(prog, *next);
}

}  // namespace clusterd

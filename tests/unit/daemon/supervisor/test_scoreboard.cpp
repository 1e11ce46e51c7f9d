// The scoreboard on simulated time: workers that heartbeat by stores into their records are
// checked by one timer per program, whatever their number, and a hang is still caught when
// its watchdog says.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>

#include "tests/unit/daemon/supervisor/rig.hpp"

using namespace clusterd;
using namespace clusterd::test;
using namespace std::chrono_literals;

namespace {

Behaviour on_board() {
    Behaviour b;
    b.board = true;
    return b;
}

int count_exits(Program& p, ExitCause cause) {
    auto it = p.exits.find(cause);
    return it == p.exits.end() ? 0 : it->second;
}

}  // namespace

TEST_CASE("scoreboard: 1,000 workers heartbeating there cost one timer, and a hang is caught") {
    // Each simulated worker has a real notify socket: as many as this process's soft fd limit
    // allows once raised to its hard limit (1,000 where it may hold them).
    rlimit lim{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &lim) == 0);
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &lim) == 0);
    // (Each takes one now, and two more are kept free for its output pipe and the next.)
    const int n = static_cast<int>(std::min<rlim_t>(1000, (lim.rlim_cur - 100) / 3));
    REQUIRE(n >= 200);
    MESSAGE(n << " workers (RLIMIT_NOFILE " << lim.rlim_cur << ")");
    Rig rig("  web:\n    command: [\"/bin/true\"]\n    cores: " + std::to_string(n) +
                "\n    watchdog: 1s\n",
            [](const FakeProcess&) { return on_board(); });
    rig.run(2s);
    CHECK(rig.ready("web") == n);
    Program& p = rig.program("web");
    REQUIRE(p.board);
    CHECK(p.board->in_use() == static_cast<std::uint32_t>(n));
    for (const Worker* w : p.slots) REQUIRE(w->board_beats);

    // A minute at rest: every worker stores a heartbeat every 250 ms (4 a second each), none is
    // late or killed, and the master wakes for them a few times a second in all.
    std::uint64_t checks = p.board_checks;
    rig.run(60s);
    std::uint64_t woke = p.board_checks - checks;
    MESSAGE("board timer fired " << woke << " times in 60 s for " << n << " workers");
    CHECK(woke <= 4 * 60 + 1);
    CHECK(woke >= 60);
    CHECK(rig.ready("web") == n);
    CHECK(p.exits.empty());
    for (const Worker* w : p.slots) CHECK_FALSE(w->sm.late);

    // The middle slot hangs: no store after its last one. Late 1.5 heartbeats later (steered
    // around, a spare starts), aborted 1 s after it, as with datagrams.
    Worker* hung = p.slots[static_cast<std::size_t>(n / 2)];
    pid_t pid = hung->sm.pid;
    rig.ex.process(pid)->hung = true;
    // Its last store, as the record has it (the master reads it only near its deadline).
    TimePoint last{std::chrono::duration_cast<Clock::duration>(
        std::chrono::nanoseconds(sdk::board_load(rig.record(pid)->alive_ns)))};
    auto until = [&](TimePoint at) { rig.run(std::chrono::ceil<Duration>(at - rig.ex.now())); };
    until(last + 370ms);
    CHECK_FALSE(hung->sm.late);
    until(last + 400ms);
    CHECK(hung->sm.late);
    until(last + 990ms);
    CHECK(rig.ex.process(pid)->signals.empty());
    until(last + 1010ms);
    // SIGABRT at its watchdog (then, once it is gone, SIGKILL to what it left in its group).
    REQUIRE_FALSE(rig.ex.process(pid)->signals.empty());
    CHECK(rig.ex.process(pid)->signals.front() == SIGABRT);
    rig.run(5s);
    CHECK(count_exits(p, ExitCause::watchdog) == 1);
    CHECK(rig.ready("web") == n);
    CHECK(p.board->in_use() >= static_cast<std::uint32_t>(n));
}

TEST_CASE("scoreboard: a record goes with its process, and is zeroed for the next") {
    Rig rig(R"(  web:
    command: ["/bin/true"]
    cores: 2
    watchdog: 1s
    min_uptime: 0s
)",
            [](const FakeProcess&) { return on_board(); });
    rig.run(1s);
    Program& p = rig.program("web");
    REQUIRE(p.board);
    CHECK(p.board->in_use() == 2);
    pid_t first = p.slots[0]->sm.pid;
    std::uint32_t index = *p.slots[0]->board_index;
    sdk::ScoreboardRecord* rec = rig.record(first);
    REQUIRE(rec != nullptr);
    CHECK(sdk::board_load(rec->pid) == first);
    sdk::board_store(rec->requests, std::uint64_t{42});
    rig.command("status", "");  // reads the records
    CHECK(p.slots[0]->fields.at("REQUESTS") == "42");

    rig.ex.exit(*rig.ex.process(first), W_EXITCODE(0, SIGKILL), 0ms);
    rig.run(500ms);
    pid_t second = p.slots[0]->sm.pid;
    REQUIRE(second != first);
    CHECK(p.slots[0]->sm.state == SlotState::ready);
    CHECK(p.board->in_use() == 2);
    // The slot's new process got the freed record back, zeroed, with its own pid.
    CHECK(*p.slots[0]->board_index == index);
    CHECK(sdk::board_load(rec->pid) == second);
    CHECK(sdk::board_load(rec->requests) == 0);
}

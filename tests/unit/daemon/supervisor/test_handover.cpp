// The state an upgrade hands from one image of the master to the next (handover.hpp): its
// format, and a round trip of a supervisor in the middle of faults, on simulated time.
#include <doctest/doctest.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>

#include "tests/unit/daemon/supervisor/rig.hpp"

using namespace clusterd;
using namespace clusterd::test;
using namespace std::chrono_literals;

namespace {

const char* kApp = R"(  app:
    command: ["/bin/true"]
    cores: 4
    watchdog: 2s
    start_timeout: 5s
    stop_timeout: 3s
    abort_timeout: 1s
    min_uptime: 100ms
    backoff: {initial: 400ms, max: 2s}
)";

struct SlotView {
    SlotState state;
    pid_t pid;
    int restarts, failures;
    std::optional<TimePoint> deadline;
    bool operator==(const SlotView&) const = default;
};

std::vector<SlotView> slots(Rig& rig) {
    std::vector<SlotView> out;
    for (const Worker* w : rig.program("app").slots)
        out.push_back({w->sm.state, w->sm.pid, w->sm.restarts, w->sm.failures, w->sm.deadline});
    return out;
}

// The new image: the old one's state through its bytes, its fds taken over (dup'd here,
// since the old Impl closes its own when it is destroyed).
void hand_over(Rig& rig) {
    HandoverState state = decode_handover(encode_handover(rig.sup->save(-1)));
    auto dup = [](int& fd) { fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 3); };
    for (auto& p : state.programs)
        for (auto* list : {&p.workers, &p.others})
            for (auto& w : *list) {
                if (w.notify_fd >= 0) dup(w.notify_fd);
                for (int& fd : w.capture_fds) dup(fd);
            }
    Config config = load_config_file(rig.path);
    rig.sup.reset();
    rig.sup = std::make_unique<Supervisor::Impl>(rig.io, rig.ex, config, rig.path, "/bin/true",
                                                 std::vector<std::string>{});
    rig.sup->resume(state, nullptr, "");
}

}  // namespace

TEST_CASE("the state's format is checked before anything is read") {
    HandoverState s;
    s.version = "1.2.3";
    s.control_fd = 5;
    std::string bytes = encode_handover(s);
    CHECK(bytes.starts_with("clusterd-state 1\n"));
    CHECK(decode_handover(bytes).version == "1.2.3");

    std::string future = bytes;
    future.replace(15, 1, "2");
    CHECK_THROWS_WITH_AS(decode_handover(future),
                         "state format 2 is not one this clusterd reads (it reads 1)",
                         HandoverError);
    CHECK_THROWS_AS(decode_handover("not a state"), HandoverError);
    CHECK_THROWS_AS(decode_handover(bytes.substr(0, bytes.size() / 2)), HandoverError);
    // A field missing is not defaulted: the image that wrote it is not one this reads.
    std::string missing = bytes;
    auto at = missing.find("\"control_fd\"");
    REQUIRE(at != std::string::npos);
    missing.replace(at, 12, "\"control_xx\"");
    CHECK_THROWS_AS(decode_handover(missing), HandoverError);
    // A socket table whose rows do not match its entries.
    HandoverProgram p;
    p.name = "web";
    p.workers.resize(2);
    p.workers[1].slot = 1;
    p.sockets.shared = {-1};
    p.sockets.activated = {false};
    p.sockets.group_order = {{}};
    p.sockets.sockarray = {-1};
    p.sockets.keys = {{}};
    p.sockets.per_slot = {{3}};  // one row for two slots
    s.programs = {p};
    CHECK_THROWS_WITH_AS(decode_handover(encode_handover(s)),
                         "program web: its socket table does not match", HandoverError);
}

TEST_CASE("a worker's Node channel travels in the state; a state from before it still reads") {
    HandoverState s;
    HandoverProgram p;
    p.name = "web";
    p.sockets.per_slot = {{}, {}};
    p.workers.resize(2);
    p.workers[0].ipc_fd = 7;
    p.workers[0].ipc_input = R"({"cmd":"NODE_CLUSTER","act":"list)";  // a line begun
    p.workers[1].slot = 1;
    s.programs = {p};
    std::string bytes = encode_handover(s);
    HandoverState back = decode_handover(bytes);
    REQUIRE(back.programs.at(0).workers.size() == 2);
    CHECK(back.programs[0].workers[0].ipc_fd == 7);
    CHECK(back.programs[0].workers[0].ipc_input == p.workers[0].ipc_input);
    CHECK(back.programs[0].workers[1].ipc_fd == -1);
    auto fds = back.fds();
    CHECK(std::find(fds.begin(), fds.end(), 7) != fds.end());  // kept open across the exec
    // A worker without a channel writes no such keys (worker 1 read back above without them,
    // as every worker of an image from before Node channels is), and an image from before
    // reads past them.
    auto first = bytes.find("\"ipc_fd\"");
    REQUIRE(first != std::string::npos);
    CHECK(bytes.find("\"ipc_fd\"", first + 1) == std::string::npos);
}

TEST_CASE("the state travels through a sealed memfd, read from offset 0") {
    std::string bytes = encode_handover(HandoverState{});
    UniqueFd fd(write_handover_memfd(bytes));
    CHECK(read_handover_fd(fd.get()) == bytes);
    CHECK(read_handover_fd(fd.get()) == bytes);  // pread: a second reader sees it all
    CHECK(::write(fd.get(), "x", 1) < 0);        // sealed
    CHECK_THROWS_AS(read_handover_fd(-1), HandoverError);
}

TEST_CASE("an upgrade in the middle of a crash loop and a hang changes nothing that follows") {
    // slot 0 serves; slot 1 crash-loops (backoff); slot 2 hangs every time (watchdog, then
    // abandoned and killed after abort_timeout); slot 3 serves. Two masters run the same
    // script on the same simulated clock; one of them is upgraded in the middle of it, and
    // from then on both must do exactly the same things at exactly the same times.
    auto script = [](const FakeProcess& p) {
        Behaviour b;
        if (p.label == "app[1]") b = Behaviour::failing(50ms);
        if (p.label == "app[2]") b.hang_after = Duration{600};
        return b;
    };
    Rig plain(kApp, script);
    Rig upgraded(kApp, script);
    plain.run(2500ms);
    upgraded.run(2500ms);
    auto before = slots(upgraded);
    REQUIRE(before[0].state == SlotState::ready);
    REQUIRE(before[1].state == SlotState::backoff);
    REQUIRE(before[1].deadline.has_value());
    REQUIRE(before[2].state == SlotState::ready);
    int spawns = upgraded.ex.spawns;

    hand_over(upgraded);

    CHECK(slots(upgraded) == before);  // states, pids, counters, deadlines to the nanosecond
    CHECK(upgraded.sup->upgrades == 1);
    CHECK(upgraded.ex.spawns == spawns);  // nothing was started by the handover
    for (int step = 0; step < 100; ++step) {
        plain.run(50ms);
        upgraded.run(50ms);
        REQUIRE(slots(upgraded) == slots(plain));
        REQUIRE(upgraded.ex.spawns == plain.ex.spawns);
        INFO("step " << step << " abandoned " << plain.sup->abandoned.size() << "/"
                     << upgraded.sup->abandoned.size());
        REQUIRE(upgraded.ex.reaps == plain.ex.reaps);
        REQUIRE(upgraded.program("app").exits == plain.program("app").exits);
        REQUIRE(upgraded.sup->abandoned.size() == plain.sup->abandoned.size());
    }
    // It did go on: slot 1 restarted out of backoff, slot 2 was abandoned and killed.
    CHECK(upgraded.ex.spawns > spawns + 2);
    CHECK(upgraded.program("app").exits[ExitCause::watchdog] >= 2);
    CHECK(upgraded.program("app").slots[0]->sm.pid == before[0].pid);  // heartbeats accepted
    CHECK(upgraded.program("app").slots[3]->sm.pid == before[3].pid);
    CHECK(upgraded.ex.violations.empty());
}

TEST_CASE("an upgrade is refused while a rolling restart runs, and carries a stopped program") {
    Rig rig(kApp, [](const FakeProcess&) { return Behaviour::ready_in(1000ms); });
    rig.run(1500ms);
    auto roll = rig.command("restart", "app", {{"rolling", true}});
    rig.run(100ms);
    auto up = rig.command({{"cmd", "upgrade"}, {"binary", "/bin/true"}});
    REQUIRE(up->finishes == 1);
    CHECK_FALSE(up->ok());
    CHECK(up->reply.value("busy", false));
    CHECK(up->message().find("app: a rolling restart is in progress") != std::string::npos);
    rig.run(10s);
    CHECK(roll->ok());
    CHECK(rig.sup->upgrade_busy().empty());

    auto stop = rig.command("stop", "app");
    rig.run(5s);
    CHECK(stop->ok());
    hand_over(rig);
    CHECK(rig.program("app").stopped);
    rig.run(5s);
    CHECK(rig.live("app") == 0);
    auto start = rig.command("start", "app");
    rig.run(3s);
    CHECK(start->ok());
    CHECK(rig.ready("app") == 4);
}

TEST_CASE("upgrades at random moments of random fault storms change nothing that follows") {
    // Each process is scripted from (seed, pid): it serves, crashes early or late, hangs, or
    // ignores SIGTERM. Two masters run each seed; one is upgraded at random moments (each
    // 100 ms step with probability 1/4) and must stay step for step the same as the other.
    int handovers = 0;
    int busy = 0;     // moments an upgrade would have been refused
    int carried = 0;  // upgrades that carried a worker outside its slot (spare, leaving)
    int steps = 0;
    for (std::uint64_t seed = 1; seed <= 12; ++seed) {
        auto script = [seed](const FakeProcess& p) {
            std::uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(p.pid);
            x ^= x >> 31;
            x *= 0xBF58476D1CE4E5B9ull;
            x ^= x >> 29;
            Behaviour b;
            switch (x % 6) {
                case 0:
                    b = Behaviour::failing(Duration{static_cast<int>(20 + x / 7 % 200)});
                    break;
                case 1:
                    b.hang_after = Duration{static_cast<int>(100 + x / 11 % 3000)};
                    break;
                case 2:
                    b.exit_after = Duration{static_cast<int>(200 + x / 13 % 4000)};
                    b.exit_status = W_EXITCODE(0, SIGSEGV);
                    break;
                case 3:
                    b.ignores_term = true;
                    break;
                default:
                    break;
            }
            return b;
        };
        Rig plain(kApp, script);
        Rig upgraded(kApp, script);
        std::uint64_t r = seed;
        for (int step = 0; step < 120; ++step) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            if ((r >> 33) % 4 == 0) {
                if (!upgraded.sup->upgrade_busy().empty()) {
                    ++busy;
                } else {
                    carried += upgraded.sup->workers.size() > 4;
                    hand_over(upgraded);
                    ++handovers;
                }
            }
            plain.run(100ms);
            upgraded.run(100ms);
            ++steps;
            INFO("seed " << seed << " step " << step);
            REQUIRE(slots(upgraded) == slots(plain));
            REQUIRE(upgraded.ex.spawns == plain.ex.spawns);
            REQUIRE(upgraded.ex.reaps == plain.ex.reaps);
            REQUIRE(upgraded.sup->workers.size() == plain.sup->workers.size());
            REQUIRE(upgraded.sup->abandoned.size() == plain.sup->abandoned.size());
            REQUIRE(upgraded.program("app").exits == plain.program("app").exits);
        }
        CHECK(upgraded.ex.violations.empty());
    }
    MESSAGE(handovers << " upgrades (" << carried << " with a spare or a leaving worker; " << busy
                      << " refused as busy) over " << steps << " steps of 100 ms");
    CHECK(handovers > 200);
    CHECK(carried > 10);
    CHECK(busy == 0);  // faults alone never keep an upgrade waiting
}

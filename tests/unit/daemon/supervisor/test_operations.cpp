// Operations on one program, and how a later command composes with an earlier one, on
// simulated time (see daemon/supervisor/operations.hpp for the table this checks).
#include <doctest/doctest.h>

#include <chrono>

#include "tests/unit/daemon/supervisor/rig.hpp"

using namespace clusterd;
using namespace clusterd::test;
using namespace std::chrono_literals;

namespace {

const char* kApp = R"(  app:
    command: ["/bin/true"]
    cores: 3
    watchdog: 2s
    start_timeout: 5s
    stop_timeout: 3s
    max_surge: 1
    min_uptime: 100ms
    backoff: {initial: 100ms, max: 2s}
    env: {MARK: "one"}
)";

std::string app(int cores, const std::string& mark, int surge = 1) {
    std::string s = kApp;
    s.replace(s.find("cores: 3"), 8, "cores: " + std::to_string(cores));
    s.replace(s.find("max_surge: 1"), 12, "max_surge: " + std::to_string(surge));
    s.replace(s.find("\"one\""), 5, "\"" + mark + "\"");
    return s;
}

// Processes of a generation marked "broken" exit 1 before they are ready.
Behaviour broken_marks(const FakeProcess& p) {
    if (p.env_value("MARK") == "broken") return Behaviour::failing(Duration{30});
    return Behaviour{};
}

}  // namespace

TEST_CASE("a rolling restart of 64 slots replaces every worker, one surge at a time") {
    Rig rig(app(64, "one", 4));
    rig.run(1s);
    REQUIRE(rig.ready("app") == 64);
    auto started = std::chrono::steady_clock::now();
    auto r = rig.command("restart", "app", {{"rolling", true}});
    rig.run(30s);
    auto took = std::chrono::steady_clock::now() - started;
    CHECK(r->ok());
    CHECK(rig.program("app").spec->generation == 2);
    CHECK(rig.ready("app") == 64);
    CHECK(rig.live("app") == 64);
    CHECK(rig.sup->workers.size() == 64);
    CHECK(rig.ex.violations.empty());
    MESSAGE("64-slot rolling restart: " << rig.ex.events << " events in "
                                        << std::chrono::duration<double, std::milli>(took).count()
                                        << " ms of real time");
}

TEST_CASE("stop during a rolling restart leaves the program stopped") {
    Rig rig(app(2, "one"));
    rig.run(1s);
    // Slow starts: the roll is still on its first slot when stop comes.
    rig.behave = [](const FakeProcess&) { return Behaviour::ready_in(Duration{2000}); };
    auto roll = rig.command("restart", "app", {{"rolling", true}});
    rig.run(500ms);
    auto stop = rig.command("stop", "app");
    CHECK(stop->ok());
    rig.run(30s);
    CHECK(roll->finishes == 1);
    CHECK_FALSE(roll->ok());
    CHECK(roll->message().find("stop") != std::string::npos);
    CHECK(rig.live("app") == 0);
    for (const Worker* w : rig.program("app").slots) CHECK(w->sm.state == SlotState::stopped);
    CHECK(rig.sup->workers.size() == 2);
    // Started again, it runs the generation the roll was going to.
    auto start = rig.command("start", "app");
    rig.run(10s);
    CHECK(start->ok());
    CHECK(rig.ready("app") == 2);
    CHECK(rig.program("app").spec->generation == 2);
    CHECK(rig.ex.violations.empty());
}

TEST_CASE("scale during a rolling restart ends with that many workers of the new generation") {
    for (int n : {1, 2, 5}) {
        CAPTURE(n);
        Rig rig(app(3, "one"));
        rig.run(1s);
        rig.behave = [](const FakeProcess&) { return Behaviour::ready_in(Duration{1000}); };
        auto roll = rig.command("restart", "app", {{"rolling", true}});
        rig.run(300ms);
        auto scale = rig.command("scale", "app", {{"workers", n}});
        rig.run(60s);
        CHECK(scale->ok());
        CHECK(roll->ok());
        CHECK(rig.program("app").slots.size() == static_cast<std::size_t>(n));
        CHECK(rig.ready("app") == n);
        CHECK(rig.program("app").spec->generation == 2);
        CHECK(rig.live("app") == n);
        CHECK(rig.ex.violations.empty());
    }
}

TEST_CASE("a reload during a reload is refused, never interleaved") {
    Rig rig(app(2, "one"));
    rig.run(1s);
    rig.behave = [](const FakeProcess&) { return Behaviour::ready_in(Duration{1000}); };
    rig.write(app(2, "two"));
    auto first = rig.command("reload", "");
    auto second = rig.command("reload", "");  // while the file is read
    CHECK(second->finishes == 1);
    CHECK_FALSE(second->ok());
    rig.run(100ms);
    auto third = rig.command("reload", "");  // while the roll runs
    CHECK_FALSE(third->ok());
    CHECK(third->message().find("in progress") != std::string::npos);
    rig.run(30s);
    CHECK(first->ok());
    CHECK(rig.ready("app") == 2);
    CHECK(rig.program("app").spec->config.env.at("MARK") == "two");
}

TEST_CASE("a reload that changes cores and never gets ready keeps the old count and config") {
    for (int to : {1, 5}) {
        CAPTURE(to);
        Rig rig(app(3, "one"));
        rig.behave = broken_marks;
        rig.run(1s);
        REQUIRE(rig.ready("app") == 3);
        rig.write(app(to, "broken"));
        auto r = rig.command("reload", "");
        rig.run(60s);
        CHECK(r->finishes == 1);
        CHECK_FALSE(r->ok());
        CHECK(rig.program("app").slots.size() == 3);
        CHECK(rig.ready("app") == 3);
        CHECK(rig.live("app") == 3);
        CHECK(rig.program("app").spec->config.env.at("MARK") == "one");
        CHECK(rig.sup->config.programs[0].workers == 3);
        // Nothing is left crash-looping on the rejected config.
        std::uint64_t spawns = rig.ex.spawns;
        rig.run(30s);
        CHECK(rig.ex.spawns == spawns);
        CHECK(rig.ex.violations.empty());
    }
}

TEST_CASE(
    "a stopped program stays stopped through scale and reload, then starts on its new config") {
    Rig rig(app(2, "one"));
    rig.run(1s);
    CHECK(rig.command("stop", "app")->ok());
    rig.run(10s);
    REQUIRE(rig.live("app") == 0);
    CHECK(rig.command("scale", "app", {{"workers", 4}})->ok());
    rig.write(app(4, "two"));
    auto reload = rig.command("reload", "");
    rig.run(30s);
    CHECK(reload->ok());
    CHECK(rig.live("app") == 0);
    auto rolling = rig.command("restart", "app", {{"rolling", true}});
    CHECK_FALSE(rolling->ok());
    CHECK(rolling->message().find("stopped") != std::string::npos);
    auto start = rig.command("start", "app");
    rig.run(10s);
    CHECK(rig.ready("app") == 4);
    CHECK(rig.program("app").spec->config.env.at("MARK") == "two");
    CHECK(rig.ex.violations.empty());
}

TEST_CASE("a hung worker is replaced first and killed after, on simulated time") {
    int spawned = 0;
    Rig rig(app(2, "one"), [&](const FakeProcess&) {
        Behaviour b;
        if (spawned++ == 0) b.hang_after = Duration{3000};
        return b;
    });
    rig.run(1s);
    REQUIRE(rig.ready("app") == 2);
    rig.run(10s);
    CHECK(rig.ready("app") == 2);
    CHECK(rig.live("app") == 2);
    CHECK(rig.program("app").exits[ExitCause::watchdog] == 1);
    CHECK(rig.ex.violations.empty());
}

TEST_CASE("a roll that fails part way rolls the slots it replaced back to the kept config") {
    Rig rig(app(3, "one"));
    rig.run(1s);
    int second = 0;
    rig.behave = [&](const FakeProcess& p) {
        if (p.env_value("MARK") == "two" && second++ > 0) return Behaviour::failing(Duration{30});
        return Behaviour{};
    };
    rig.write(app(3, "two"));
    auto r = rig.command("reload", "");
    rig.run(30s);
    CHECK_FALSE(r->ok());
    CHECK(r->message().find("go back") != std::string::npos);
    Program& p = rig.program("app");
    CHECK(p.spec->config.env.at("MARK") == "one");
    for (const Worker* w : p.slots) CHECK(w->spec->config.env.at("MARK") == "one");
    CHECK(rig.ready("app") == 3);
    CHECK(rig.live("app") == 3);
    CHECK_FALSE(p.rollout.has_value());
    CHECK(rig.ex.violations.empty());
}

// max_age, depends_on and hooks on simulated time: hours of recycling, a start order, a stop
// order and a crash storm's hooks in milliseconds.
#include <doctest/doctest.h>

#include <chrono>

#include "tests/unit/daemon/supervisor/rig.hpp"

using namespace clusterd;
using namespace clusterd::test;
using namespace std::chrono_literals;

namespace {

// Workers of `prog` being recycled now: a replacement starting, or a replaced one draining.
int recycling(Rig& rig, const std::string& name) {
    Program* prog = &rig.program(name);
    int n = 0;
    for (const auto& [id, w] : rig.sup->workers)
        if (w->program == prog && (w->replacing || (w->retiring && w->sm.pid != 0))) ++n;
    return n;
}

}  // namespace

TEST_CASE(
    "max_age recycles every worker over hours, one slot at a time, never losing a ready one") {
    Rig rig(R"(  web:
    command: ["/bin/true"]
    cores: 8
    max_age: 10m
    max_age_jitter: 5m
    stop_timeout: 3s
)");
    rig.run(1s);
    REQUIRE(rig.ready("web") == 8);
    int lowest = 8;
    for (int step = 0; step < 2 * 3600 * 10; ++step) {  // 2 hours, every 100 ms
        rig.run(100ms);
        lowest = std::min(lowest, rig.ready("web"));
        // A replacement starting beside the worker it replaces, and nothing else.
        CHECK(recycling(rig, "web") <= 2);
    }
    CHECK(lowest == 8);
    // Every slot came due at least 10 times in 2 hours (max_age 10 min, at most 5 min early).
    int recycled = rig.program("web").exits[ExitCause::max_age];
    CHECK(recycled >= 8 * 10);
    CHECK(recycled <= 8 * 24 + 8);
    CHECK(rig.program("web").exits[ExitCause::crashed] == 0);
    CHECK(rig.live("web") == 8);
    CHECK(rig.ex.violations.empty());
}

TEST_CASE("max_age: slots started together come due apart, spread over the jitter") {
    Rig rig(R"(  web:
    command: ["/bin/true"]
    cores: 4
    max_age: 60s
    max_age_jitter: 40s
)");
    rig.run(1s);
    std::vector<TimePoint> first(4, TimePoint::max());
    for (int step = 0; step < 700; ++step) {
        rig.run(100ms);
        for (const auto& [id, w] : rig.sup->workers)
            if (w->replacing && first[w->slot] == TimePoint::max()) first[w->slot] = rig.ex.now();
    }
    for (int s = 0; s < 4; ++s) REQUIRE(first[s] != TimePoint::max());
    // Slot i comes due 40s * i / 4 early: slot 3 first, 10 s apart.
    CHECK(first[3] < first[2]);
    CHECK(first[2] < first[1]);
    CHECK(first[1] < first[0]);
    CHECK(first[0] - first[3] >= 25s);
}

TEST_CASE("depends_on: api starts once db is ready, and stops before db") {
    Rig rig(
        R"(  db:
    command: ["/bin/true"]
    cores: 1
    stop_timeout: 3s
    env: {ROLE: db}
  api:
    command: ["/bin/true"]
    cores: 2
    depends_on: [db]
    stop_timeout: 3s
    env: {ROLE: api}
)",
        [](const FakeProcess& p) {
            Behaviour b;
            if (p.env_value("ROLE") == "db") b.ready_after = Duration{5000};
            if (p.env_value("ROLE") == "api") b.ignores_term = true;
            return b;
        });
    rig.run(4900ms);
    CHECK(rig.live("db") == 1);
    CHECK(rig.live("api") == 0);
    CHECK(rig.program("api").waiting_for == "db");
    rig.run(200ms);
    CHECK(rig.ready("db") == 1);
    CHECK(rig.program("api").waiting_for.empty());
    rig.run(100ms);
    CHECK(rig.ready("api") == 2);
    // db crashes: api keeps running (it is not stopped with it).
    pid_t db = rig.program("db").slots[0]->sm.pid;
    rig.ex.exit(*rig.ex.process(db), W_EXITCODE(0, SIGSEGV), 0ms);
    rig.run(10ms);
    CHECK(rig.ready("api") == 2);
    rig.run(6s);
    REQUIRE(rig.ready("db") == 1);
    // The stop: api ignores TERM and is killed after its 3 s stop_timeout; db is told to
    // stop only then.
    rig.ex.signal_master(SIGTERM);
    rig.run(2900ms);
    CHECK(rig.live("api") == 2);
    CHECK(rig.live("db") == 1);
    pid_t db_now = rig.program("db").slots[0]->sm.pid;
    CHECK(rig.ex.process(db_now)->signals.empty());
    rig.run(200ms);
    CHECK(rig.live("api") == 0);
    rig.run(100ms);
    CHECK(rig.live("db") == 0);
    CHECK(rig.ex.process(db_now)->signals == std::vector<int>{SIGTERM});
}

namespace {

const char* kStorm = R"(  app:
    command: ["/bin/true"]
    cores: 4
    min_uptime: 1s
    backoff: {initial: 0s, max: 100ms}
)";

Behaviour crashes_soon(const FakeProcess&) {
    Behaviour b = Behaviour::ready_in(Duration{10});
    b.exit_after = Duration{30};
    return b;
}

}  // namespace

TEST_CASE("hooks: a crash storm runs them one at a time, bounded, and delays no restart") {
    // The same storm without hooks, for the count of restarts it makes.
    Rig bare(kStorm, crashes_soon);
    bare.run(60s);
    int bare_exits = bare.program("app").exits[ExitCause::exited];

    Rig rig(std::string(kStorm) + R"(    hooks:
      - on: [exited, restarted]
        command: ["/bin/hook"]
        timeout: 2s
)",
            crashes_soon);
    rig.hook_runs_for.reset();  // every hook hangs until its timeout
    rig.run(60s);
    Program& app = rig.program("app");
    int exits = app.exits[ExitCause::exited];
    CHECK(exits > 200);
    CHECK(exits == bare_exits);  // not one restart later for the hooks
    // One hook at a time, each killed at its 2 s timeout: 30 in 60 s.
    CHECK(rig.hooks.size() == 30);
    CHECK(app.hook_runs["timeout"] == 29);
    CHECK(app.hook_pid != 0);
    // The queue keeps the latest kMaxQueuedHooks; the rest are counted as dropped.
    CHECK(app.hook_queue.size() == kMaxQueuedHooks);
    CHECK(app.hook_runs["dropped"] > 300);
    for (std::size_t i = 0; i + 1 < rig.hooks.size(); ++i) {
        FakeProcess* h = rig.ex.process(rig.hooks[i]);
        CHECK(h->exited);
        CHECK(h->signals == std::vector<int>{SIGKILL});
        CHECK(h->env_value("CLUSTERD_PROGRAM") == "app");
    }
    CHECK(rig.ex.violations.empty());
}

TEST_CASE("hooks: each run gets its event in its environment, in order") {
    Rig rig(R"(  app:
    command: ["/bin/true"]
    cores: 1
    hooks:
      - on: ready
        command: ["/bin/hook", "ready"]
      - on: exited
        command: ["/bin/hook", "exited"]
)");
    rig.run(1s);
    REQUIRE(rig.ready("app") == 1);
    pid_t pid = rig.program("app").slots[0]->sm.pid;
    rig.ex.exit(*rig.ex.process(pid), W_EXITCODE(3, 0), 0ms);
    rig.run(1s);
    REQUIRE(rig.hooks.size() == 3);  // ready, exited, ready again
    FakeProcess* exited = rig.ex.process(rig.hooks[1]);
    CHECK(exited->env_value("CLUSTERD_EVENT") == "exited");
    CHECK(exited->env_value("CLUSTERD_PID") == std::to_string(pid));
    CHECK(exited->env_value("CLUSTERD_EXIT_CODE") == "3");
    CHECK(exited->env_value("CLUSTERD_CAUSE") == "exited");
    CHECK(exited->env_value("CLUSTERD_SLOT") == "0");
    CHECK(exited->env_value("CLUSTERD_SIGNAL").empty());
    CHECK(rig.ex.process(rig.hooks[0])->env_value("CLUSTERD_EVENT") == "ready");
    CHECK(rig.ex.process(rig.hooks[2])->env_value("CLUSTERD_EVENT") == "ready");
    CHECK(rig.program("app").hook_runs["ok"] == 3);
}

TEST_CASE("max_age switched on, then off, by reloads: running workers follow at once") {
    const std::string base = R"(  web:
    command: ["/bin/true"]
    cores: 3
)";
    Rig rig(base);
    rig.run(1s);
    REQUIRE(rig.ready("web") == 3);
    rig.write(base + "    max_age: 10s\n");
    auto r = rig.command("reload", "");
    rig.run(1s);
    REQUIRE(r->ok());
    rig.run(40s);
    int recycled = rig.program("web").exits[ExitCause::max_age];
    CHECK(recycled >= 6);
    CHECK(rig.ready("web") == 3);
    rig.write(base);
    r = rig.command("reload", "");
    rig.run(1s);
    REQUIRE(r->ok());
    int after_off = rig.program("web").exits[ExitCause::max_age];
    rig.run(60s);
    CHECK(rig.program("web").exits[ExitCause::max_age] == after_off);
    CHECK(after_off - recycled <= 3);  // at most the recycles under way when it was switched off
}

TEST_CASE("a reload that drops a program's depends_on starts it") {
    const std::string db = R"(  db:
    command: ["/bin/true"]
    cores: 1
    start_timeout: 1h
    env: {ROLE: db}
)";
    const std::string api = R"(  api:
    command: ["/bin/true"]
    cores: 1
)";
    Rig rig(db + api + "    depends_on: [db]\n", [](const FakeProcess& p) {
        Behaviour b;
        if (p.env_value("ROLE") == "db") b.ready_after.reset();  // never ready
        return b;
    });
    rig.run(5s);
    REQUIRE(rig.program("api").waiting_for == "db");
    CHECK(rig.live("api") == 0);
    rig.write(db + api);
    auto r = rig.command("reload", "");
    rig.run(1s);
    CHECK(r->ok());
    CHECK(rig.program("api").waiting_for.empty());
    CHECK(rig.ready("api") == 1);
}

TEST_CASE("a hook outlives its program's removal only until its timeout") {
    const std::string keep = R"(  keep:
    command: ["/bin/true"]
    cores: 1
)";
    Rig rig(keep + R"(  gone:
    command: ["/bin/true"]
    cores: 1
    hooks:
      - {on: ready, command: ["/bin/hook"], timeout: 5s}
)");
    rig.hook_runs_for.reset();  // it hangs
    rig.run(1s);
    REQUIRE(rig.hooks.size() == 1);
    rig.write(keep);
    auto r = rig.command("reload", "");
    rig.run(2s);
    CHECK(r->ok());
    FakeProcess* hook = rig.ex.process(rig.hooks[0]);
    CHECK_FALSE(hook->exited);
    rig.run(3s);
    CHECK(hook->exited);
    CHECK(hook->signals == std::vector<int>{SIGKILL});
    CHECK(rig.sup->hooks.empty());
}

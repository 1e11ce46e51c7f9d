// The config diff behind a reload: each kind of change, table-driven.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <functional>
#include <string>
#include <vector>

#include "daemon/policy/reload_plan.hpp"

using namespace clusterd;
using namespace std::chrono_literals;

namespace {

Config base() {
    Config c;
    ProgramConfig web;
    web.name = "web";
    web.workers = 2;
    web.watchdog = 10s;
    web.listen.push_back({"http", "127.0.0.1", 8080, true, 4096});
    c.programs.push_back(web);
    ProgramConfig api = web;
    api.name = "api";
    api.listen[0].port = 9090;
    c.programs.push_back(api);
    return c;
}

struct Row {
    const char* change;
    std::function<void(ProgramConfig&)> edit;
    bool restart;
    bool in_place;
    bool scale;
};

const std::vector<Row> rows = {
    {"command", [](auto& p) { p.command = {"/bin/app"}; }, true, false, false},
    {"env", [](auto& p) { p.env["A"] = "1"; }, true, false, false},
    {"inherit_env", [](auto& p) { p.inherit_env = true; }, true, false, false},
    {"user", [](auto& p) { p.user = "nobody"; }, true, false, false},
    {"group", [](auto& p) { p.group = "nogroup"; }, true, false, false},
    {"cwd", [](auto& p) { p.cwd = "/srv"; }, true, false, false},
    {"umask", [](auto& p) { p.umask = 022; }, true, false, false},
    {"rlimits",
     [](auto& p) {
         p.rlimits.push_back({"nofile", RLIMIT_NOFILE, 1024, 4096});
     },
     true, false, false},
    {"listen", [](auto& p) { p.listen[0].port = 8081; }, true, false, false},
    {"listen", [](auto& p) { p.listen[0].backlog = 10; }, true, false, false},
    {"output", [](auto& p) { p.output = "/var/log/x"; }, true, false, false},
    {"cpu_affinity", [](auto& p) { p.cpu_affinity = true; }, true, false, false},
    {"watchdog", [](auto& p) { p.watchdog = 5s; }, true, false, false},   // shorter
    {"watchdog", [](auto& p) { p.watchdog = 20s; }, false, true, false},  // longer
    {"watchdog", [](auto& p) { p.watchdog = 0s; }, false, true, false},   // off
    {"ready", [](auto& p) { p.ready = ReadyMode::started; }, false, true, false},
    {"start_time", [](auto& p) { p.start_time = 2s; }, false, true, false},
    {"start_timeout", [](auto& p) { p.start_timeout = 5s; }, false, true, false},
    {"restart", [](auto& p) { p.restart = RestartMode::never; }, false, true, false},
    {"backoff", [](auto& p) { p.backoff.max = 1s; }, false, true, false},
    {"stop_signal", [](auto& p) { p.stop_signal = 2; }, false, true, false},
    {"stop_timeout", [](auto& p) { p.stop_timeout = 1s; }, false, true, false},
    {"max_surge", [](auto& p) { p.max_surge = 2; }, false, true, false},
    {"memory_limit", [](auto& p) { p.memory_limit = 1 << 20; }, false, true, false},
    {"max_age", [](auto& p) { p.max_age = 6h; }, false, true, false},
    {"max_age_jitter", [](auto& p) { p.max_age_jitter = 1min; }, false, true, false},
    {"depends_on", [](auto& p) { p.depends_on = {"api"}; }, false, true, false},
    {"hooks",
     [](auto& p) {
         p.hooks.push_back({{"exited"}, {"/bin/true"}, 10s});
     },
     false, true, false},
    {"cores", [](auto& p) { p.workers = 4; }, false, false, true},
};

}  // namespace

TEST_CASE("reload plan: each field of a program, restart vs in place vs scale") {
    for (const auto& row : rows) {
        Config next = base();
        row.edit(next.programs[0]);
        ReloadPlan plan = plan_reload(base(), next);
        INFO(row.change);
        REQUIRE(plan.programs.size() == 2);
        const ProgramPlan& web = plan.programs[0];
        CHECK(web.kind == ProgramPlan::Kind::keep);
        CHECK(web.restart == row.restart);
        CHECK(web.in_place == row.in_place);
        CHECK(web.scale.has_value() == row.scale);
        CHECK(web.changed == std::vector<std::string>{row.change});
        CHECK_FALSE(plan.programs[1].changes_anything());  // api untouched
    }
}

TEST_CASE("reload plan: no change, added, removed, scale with a restart") {
    CHECK(plan_reload(base(), base()).summary() == "no changes");

    Config next = base();
    next.programs.erase(next.programs.begin() + 1);  // api removed
    ProgramConfig worker = next.programs[0];
    worker.name = "jobs";
    next.programs.push_back(worker);  // jobs added
    next.programs[0].workers = 3;
    next.programs[0].env["B"] = "2";
    ReloadPlan plan = plan_reload(base(), next);
    REQUIRE(plan.programs.size() == 3);
    CHECK(plan.programs[0].name == "api");
    CHECK(plan.programs[0].kind == ProgramPlan::Kind::remove);
    CHECK(plan.programs[1].name == "web");
    CHECK(plan.programs[1].restart);
    CHECK(plan.programs[1].scale == 3);
    CHECK(plan.programs[2].name == "jobs");
    CHECK(plan.programs[2].kind == ProgramPlan::Kind::add);
    CHECK(plan.summary() == "api: removed; web: rolling restart (env, cores); jobs: added");
}

TEST_CASE("reload plan: a changed soft limit alone is a rolling restart") {
    Config current = base();
    current.programs[0].rlimits.push_back({"nofile", RLIMIT_NOFILE, 1024, 4096});
    Config next = current;
    CHECK_FALSE(plan_reload(current, next).programs[0].changes_anything());
    next.programs[0].rlimits[0].soft = 2048;
    ReloadPlan plan = plan_reload(current, next);
    CHECK(plan.programs[0].restart);
    CHECK(plan.summary() == "web: rolling restart (rlimits)");
}

TEST_CASE("reload plan: env files count by the variables they give, not as written") {
    Config current = base();
    current.programs[0].env = {{"A", "1"}};
    current.programs[0].env_files = {{"/etc/app.env", false}};
    Config next = current;
    next.programs[0].env_files = {{"/etc/app.env", true}, {"/etc/empty.env", false}};
    CHECK_FALSE(plan_reload(current, next).programs[0].changes_anything());
    next.programs[0].env["A"] = "2";  // the file changed
    ReloadPlan plan = plan_reload(current, next);
    CHECK(plan.programs[0].restart);
    CHECK(plan.summary() == "web: rolling restart (env)");
}

TEST_CASE("reload plan: a changed hook's timeout is applied in place") {
    Config current = base();
    current.programs[0].hooks = {{{"exited"}, {"/bin/true"}, 10s}};
    Config next = current;
    next.programs[0].hooks[0].timeout = 20s;
    ReloadPlan plan = plan_reload(current, next);
    CHECK(plan.summary() == "web: in place (hooks)");
}

TEST_CASE("reload plan: daemon fields are reported") {
    Config next = base();
    next.daemon.log_level = "debug";
    next.daemon.shutdown_timeout = 5s;
    ReloadPlan plan = plan_reload(base(), next);
    CHECK(plan.daemon_changed == std::vector<std::string>{"log_level", "shutdown_timeout"});
    CHECK(plan.summary() == "daemon: log_level, shutdown_timeout");
}

// The reload diff as a table: one changed key -> what the program needs.
#include <doctest/doctest.h>

#include <string>

#include "common/config.hpp"
#include "daemon/reload_plan.hpp"

using namespace clusterd;

namespace {

Config load(const std::string& web_extra, const std::string& more = "") {
    return load_config_string("programs:\n  web:\n    cores: 2\n" + web_extra + more, "t.yaml");
}

}  // namespace

TEST_CASE("reload plan: each changed key is classified (table)") {
    struct Row {
        const char* yaml;   // lines added to program web of the new config
        const char* field;  // the change reported
        bool rolling;       // worker-visible
    };
    const Row rows[] = {
        {"    command: [/bin/true]\n", "command", true},
        {"    env: {A: b}\n", "env", true},
        {"    inherit_env: true\n", "inherit_env", true},
        {"    cwd: /tmp\n", "cwd", true},
        {"    umask: \"0077\"\n", "umask", true},
        {"    rlimits: {nofile: 4096}\n", "rlimits", true},
        {"    output: /tmp/out.log\n", "output", true},
        {"    cpu_affinity: true\n", "cpu_affinity", true},
        {"    watchdog: 3s\n", "watchdog", true},
        {"    listen: [{address: \"127.0.0.1:9999\"}]\n", "listen", true},
        {"    stop_timeout: 1s\n", "stop_timeout", false},
        {"    start_timeout: 5s\n", "start_timeout", false},
        {"    restart: never\n", "restart", false},
        {"    backoff: {max: 5s}\n", "backoff", false},
        {"    stop_signal: INT\n", "stop_signal", false},
        {"    max_surge: 2\n", "max_surge", false},
    };
    Config before = load("");
    for (const auto& row : rows) {
        CAPTURE(row.yaml);
        auto plan = plan_reload(before, load(row.yaml));
        REQUIRE(plan.size() == 1);
        const ProgramDiff& d = plan[0];
        CHECK(d.name == "web");
        CHECK(d.changed == std::vector<std::string>{row.field});
        CHECK(d.rolling_restart == row.rolling);
        CHECK(d.in_place == !row.rolling);
        CHECK_FALSE(d.scale);
        CHECK(d.new_sockets == (std::string(row.field) == "listen"));
    }
}

TEST_CASE("reload plan: rlimits soft/hard and order of entries matter") {
    Config a = load("    rlimits: {nofile: {soft: 1024, hard: 4096}}\n");
    CHECK(plan_reload(a, a).empty());
    auto plan = plan_reload(a, load("    rlimits: {nofile: {soft: 2048, hard: 4096}}\n"));
    REQUIRE(plan.size() == 1);
    CHECK(plan[0].rolling_restart);
}

TEST_CASE("reload plan: added, removed and scaled programs; unchanged ones are left out") {
    Config before = load("", "  old:\n    cores: 1\n  same:\n    cores: 1\n");
    Config after = load("", "  same:\n    cores: 1\n  fresh:\n    cores: 1\n");
    after.programs[0].workers = 3;
    after.programs[0].cores_auto = false;
    auto plan = plan_reload(before, after);
    REQUIRE(plan.size() == 3);
    CHECK(plan[0].name == "web");
    CHECK(plan[0].scale);
    CHECK(plan[0].workers_before == 2);
    CHECK(plan[0].workers_after == 3);
    CHECK_FALSE(plan[0].rolling_restart);
    CHECK(plan[1].name == "fresh");
    CHECK(plan[1].added);
    CHECK(plan[2].name == "old");
    CHECK(plan[2].removed);
}

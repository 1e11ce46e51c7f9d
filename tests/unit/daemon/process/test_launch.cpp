// make_spawn_spec: what one slot's worker is started with.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <algorithm>

#include "common/config.hpp"
#include "daemon/process/launch.hpp"

using namespace clusterd;

namespace {

ProgramConfig program(const std::string& yaml) {
    return load_config_string("programs:\n  web:\n    cores: 2\n" + yaml, "t.yaml").programs.at(0);
}

bool has(const std::vector<std::string>& env, const std::string& entry) {
    return std::find(env.begin(), env.end(), entry) != env.end();
}

}  // namespace

TEST_CASE("launch: {listen.NAME.fd} in command is the fd the slot's worker gets the socket on") {
    auto p = program(
        "    command: [/bin/sh, -c, 'exec app --http-fd={listen.http.fd} "
        "--admin={listen.admin.fd}']\n"
        "    listen:\n"
        "      - {name: http, address: '127.0.0.1:18080'}\n"
        "      - {name: admin, address: '127.0.0.1:18081'}\n");
    auto plan = LaunchPlan::resolve(p, "/bin/false", {});
    SlotContext slot;
    slot.slot = 1;
    slot.workers = 2;
    slot.listen_fds = {10, 11};
    slot.listen_names = "http:admin";
    slot.notify_socket = "@x";
    SpawnSpec spec = make_spawn_spec(p, plan, slot);
    REQUIRE(spec.argv.size() == 3);
    CHECK(spec.argv[2] == "exec app --http-fd=3 --admin=4");
    CHECK(spec.pass_fds == std::vector<int>{10, 11});
    CHECK(has(spec.env, "LISTEN_FDS=2"));
    CHECK(has(spec.env, "LISTEN_FDNAMES=http:admin"));
    CHECK(has(spec.env, "CLUSTERD_WORKER_ID=1"));
    CHECK(plan.argv[2].find("{listen.http.fd}") != std::string::npos);  // the plan is untouched
}

TEST_CASE("launch: rlimits travel from the config to the spawn spec") {
    auto p = program("    command: [/bin/true]\n    rlimits: {nofile: 1024, core: 0}\n");
    auto plan = LaunchPlan::resolve(p, "/bin/false", {});
    SpawnSpec spec = make_spawn_spec(p, plan, SlotContext{});
    REQUIRE(spec.rlimits.size() == 2);
    CHECK(spec.rlimits[0].resource == RLIMIT_NOFILE);
    CHECK(spec.rlimits[0].hard == 1024);
    CHECK(spec.rlimits[1].resource == RLIMIT_CORE);
}

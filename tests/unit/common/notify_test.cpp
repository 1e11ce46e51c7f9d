// The notify parser's caps: what one datagram can make the master keep.
#include <doctest/doctest.h>

#include <string>

#include "common/config.hpp"
#include "common/notify.hpp"

using namespace clusterd;

TEST_CASE("parse_notify reads the keys clusterd acts on") {
    auto m = parse_notify("READY=1\nWATCHDOG=1\nSTATUS=serving\nX_CLUSTERD_LOOP_LAG_US=12\njunk");
    CHECK(m.ready);
    CHECK(m.watchdog);
    CHECK(m.status == "serving");
    CHECK(m.fields.at("LOOP_LAG_US") == "12");
    CHECK(m.fields_dropped == 0);
    CHECK_FALSE(m.status_truncated);
}

TEST_CASE("STATUS is cut at kNotifyMaxStatus and flagged") {
    auto m = parse_notify("STATUS=" + std::string(kNotifyMaxStatus + 100, 's'));
    REQUIRE(m.status);
    CHECK(m.status->size() == kNotifyMaxStatus);
    CHECK(m.status_truncated);
    auto exact = parse_notify("STATUS=" + std::string(kNotifyMaxStatus, 's'));
    CHECK(exact.status->size() == kNotifyMaxStatus);
    CHECK_FALSE(exact.status_truncated);
}

TEST_CASE("a field whose name or value is over its limit is dropped and counted") {
    std::string long_key = "X_CLUSTERD_" + std::string(kNotifyMaxKey + 1, 'K') + "=1\n";
    std::string max_key = "X_CLUSTERD_" + std::string(kNotifyMaxKey, 'K') + "=1\n";
    std::string long_value = "X_CLUSTERD_V=" + std::string(kNotifyMaxValue + 1, 'v') + "\n";
    std::string max_value = "X_CLUSTERD_W=" + std::string(kNotifyMaxValue, 'v') + "\n";
    auto m = parse_notify(long_key + max_key + long_value + max_value + "WATCHDOG=1");
    CHECK(m.fields.size() == 2);
    CHECK(m.fields.count(std::string(kNotifyMaxKey, 'K')) == 1);
    CHECK(m.fields.at("W").size() == kNotifyMaxValue);
    CHECK(m.fields_dropped == 2);
    CHECK(m.watchdog);  // the rest of the datagram still counts
}

TEST_CASE("one datagram keeps at most kNotifyMaxFields names") {
    std::string d;
    for (std::size_t i = 0; i < kNotifyMaxFields + 10; ++i)
        d += "X_CLUSTERD_F" + std::to_string(i) + "=" + std::to_string(i) + "\n";
    d += "X_CLUSTERD_F0=again\n";  // a known name is updated, not dropped
    auto m = parse_notify(d);
    CHECK(m.fields.size() == kNotifyMaxFields);
    CHECK(m.fields_dropped == 10);
    CHECK(m.fields.at("F0") == "again");
}

TEST_CASE("a worker keeps at most kNotifyMaxFields names across messages") {
    std::map<std::string, std::string> kept;
    std::size_t dropped = 0;
    for (int round = 0; round < 1000; ++round) {
        std::map<std::string, std::string> in{{"R" + std::to_string(round), "x"}, {"R0", "y"}};
        dropped += merge_notify_fields(kept, in);
    }
    CHECK(kept.size() == kNotifyMaxFields);
    CHECK(dropped == 1000 - kNotifyMaxFields);
    CHECK(kept.at("R0") == "y");  // still updated after the cap is reached
    CHECK(merge_notify_fields(kept, {{"NEW", "1"}}, kNotifyMaxFields + 1) == 0);
    CHECK(kept.size() == kNotifyMaxFields + 1);
}

TEST_CASE("notify_access: all by default, main on request, anything else an error") {
    Config c = load_config_string("programs: {web: {cores: 1}}", "inline");
    CHECK(c.programs.at(0).notify_access == NotifyAccess::all);
    c = load_config_string("programs: {web: {cores: 1, notify_access: main}}", "inline");
    CHECK(c.programs.at(0).notify_access == NotifyAccess::main);
    CHECK_THROWS_WITH_AS(
        load_config_string("programs:\n  web:\n    notify_access: none\n", "inline"),
        doctest::Contains("inline:3"), ConfigError);
}

TEST_CASE("ipc: node for a node command unless said otherwise; ready: listening by default then") {
    auto program = [](const std::string& yaml) {
        return load_config_string("programs:\n  web:\n" + yaml, "inline").programs.at(0);
    };
    ProgramConfig p =
        program("    command: [node, app.js]\n    listen: [{address: \"127.0.0.1:8080\"}]\n");
    CHECK(p.ipc == IpcMode::node);
    CHECK(p.ready == ReadyMode::listening);
    CHECK(program("    command: [node, consumer.js]\n").ready == ReadyMode::started);
    CHECK_FALSE(p.shutdown_message);
    CHECK(program("    command: [/usr/local/bin/nodejs, app.js]\n").ipc == IpcMode::node);
    p = program("    command: [node, app.js]\n    ready: notify\n    shutdown_message: true\n");
    CHECK(p.ready == ReadyMode::notify);
    CHECK(p.shutdown_message);
    p = program("    command: [node, app.js]\n    ipc: none\n");
    CHECK(p.ipc == IpcMode::none);
    CHECK(p.ready == ReadyMode::notify);
    p = program("    command: [/usr/bin/env, node, app.js]\n    ipc: node\n");
    CHECK(p.ipc == IpcMode::node);
    CHECK(program("    command: [python3, app.py]\n").ipc == IpcMode::none);
    CHECK(program("    command: [nodes]\n").ipc == IpcMode::none);
    // What needs the channel, without it, is an error at its place.
    CHECK_THROWS_WITH_AS(program("    command: [python3]\n    ready: listening\n"),
                         doctest::Contains("inline:4:12: programs.web.ready: \"listening\" "
                                           "needs ipc: node"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(program("    command: [node]\n    ipc: none\n    shutdown_message: yes\n"),
                         doctest::Contains("inline:5:23: programs.web.shutdown_message: needs "
                                           "ipc: node"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(program("    command: [node]\n    ipc: deno\n"),
                         doctest::Contains("inline:4:10"), ConfigError);
    // Node's channel variables are clusterd's to set.
    CHECK_THROWS_WITH_AS(program("    command: [node]\n    env: {NODE_CHANNEL_FD: \"3\"}\n"),
                         doctest::Contains("NODE_CHANNEL_FD"), ConfigError);
}

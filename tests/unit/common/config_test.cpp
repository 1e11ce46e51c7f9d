#include "common/config.hpp"

#include <doctest/doctest.h>

#include <csignal>

#include "common/cpus.hpp"

using namespace std::chrono_literals;
using clusterd::Config;
using clusterd::ConfigError;
using clusterd::ReadyMode;
using clusterd::RestartMode;

namespace {

std::string config_fixture(const std::string& name) {
    return std::string(CLUSTERD_FIXTURES) + "/config/" + name;
}
}  // namespace

TEST_CASE("a config with every key loads with the written values") {
    Config c = clusterd::load_config_file(config_fixture("valid/full.yaml"));
    CHECK(c.source == config_fixture("valid/full.yaml"));
    CHECK(c.daemon.control == "/tmp/clusterd-test/control.sock");
    CHECK(c.daemon.log_level == "debug");
    CHECK(c.daemon.log_file == "/var/log/clusterd.log");
    CHECK(c.daemon.metrics == "127.0.0.1:9464");
    CHECK(c.daemon.shutdown_timeout == 90s);

    REQUIRE(c.programs.size() == 2);
    CHECK(c.programs[0].name == "web");  // file order
    CHECK(c.programs[1].name == "queue.worker-2");

    const auto& web = c.programs[0];
    CHECK(web.command == std::vector<std::string>{"/usr/bin/app", "--port", "8080", ""});
    CHECK_FALSE(web.cores_auto);
    CHECK(web.workers == 3);
    REQUIRE(web.listen.size() == 2);
    CHECK(web.listen[0].name == "http");
    CHECK(web.listen[0].host == "0.0.0.0");
    CHECK(web.listen[0].port == 8080);
    CHECK_FALSE(web.listen[0].reuseport);
    CHECK(web.listen[0].backlog == 128);
    CHECK(web.listen[0].address() == "0.0.0.0:8080");
    CHECK(web.listen[1].name == "listen1");
    CHECK(web.listen[1].host == "::1");
    CHECK(web.listen[1].port == 8443);
    CHECK(web.listen[1].reuseport);
    CHECK(web.listen[1].backlog == 4096);
    CHECK(web.listen[1].address() == "[::1]:8443");
    CHECK(web.env == std::map<std::string, std::string>{
                         {"APP_ENV", "production"}, {"PORT", "8080"}, {"_EMPTY", ""}});
    CHECK(web.inherit_env);
    CHECK(web.user == "www-data");
    CHECK(web.group == "33");
    CHECK(web.cwd == "/var/www");
    CHECK(web.umask == 0027u);
    CHECK(web.ready == ReadyMode::started);
    CHECK(web.start_time == 500ms);
    CHECK(web.start_timeout == 5s);
    CHECK(web.watchdog == 2s);
    CHECK(web.restart == RestartMode::on_failure);
    CHECK(web.backoff.initial == 100ms);
    CHECK(web.backoff.max == 1min);
    CHECK(web.min_uptime == 2min);
    CHECK(web.abort_timeout == 3s);
    CHECK(web.stop_signal == SIGINT);
    CHECK(web.stop_timeout == 3s);
    CHECK(web.cpu_affinity);
    CHECK(web.output == "/var/log/web.log");
    REQUIRE(web.rlimits.size() == 2);
    CHECK(web.rlimits[0].name == "nofile");
    CHECK(web.rlimits[0].soft == 4096);
    CHECK(web.rlimits[1].soft == 0);
    CHECK(web.rlimits[1].hard == clusterd::RLimit::kUnlimited);

    const auto& queue = c.programs[1];
    CHECK(queue.command == std::vector<std::string>{"/usr/bin/queue"});
    CHECK(queue.cores_auto);
    CHECK(queue.workers == clusterd::available_cpus());
    CHECK(queue.restart == RestartMode::never);
    CHECK(queue.stop_signal == SIGQUIT);
    CHECK(queue.umask == 0077u);
    CHECK(queue.listen.empty());
}

TEST_CASE("a program with no keys gets every default") {
    Config c = clusterd::load_config_file(config_fixture("valid/minimal.yaml"));
    clusterd::DaemonConfig d;
    CHECK(c.daemon.control == clusterd::default_paths().control);
    CHECK(c.daemon.log_level == d.log_level);
    CHECK(c.daemon.log_file.empty());
    CHECK(c.daemon.metrics.empty());
    CHECK(c.daemon.shutdown_timeout == 30s);
    REQUIRE(c.programs.size() == 1);
    const auto& p = c.programs[0];
    CHECK(p.name == "web");
    CHECK(p.command.empty());
    CHECK(p.cores_auto);
    CHECK(p.workers == clusterd::available_cpus());
    CHECK(p.listen.empty());
    CHECK(p.env.empty());
    CHECK_FALSE(p.inherit_env);
    CHECK_FALSE(p.user.has_value());
    CHECK_FALSE(p.group.has_value());
    CHECK_FALSE(p.cwd.has_value());
    CHECK_FALSE(p.umask.has_value());
    CHECK(p.ready == ReadyMode::notify);
    CHECK(p.start_time == 1s);
    CHECK(p.start_timeout == 30s);
    CHECK(p.watchdog == 0ms);
    CHECK(p.restart == RestartMode::always);
    CHECK(p.backoff.initial == 0ms);
    CHECK(p.backoff.max == 5s);
    CHECK(p.min_uptime == 1s);
    CHECK(p.abort_timeout == 2s);
    CHECK(p.stop_signal == SIGTERM);
    CHECK(p.stop_timeout == 10s);
    CHECK_FALSE(p.cpu_affinity);
    CHECK(p.output == "capture");
}

TEST_CASE("the example etc/clusterd.yaml loads and states the defaults") {
    Config c =
        clusterd::load_config_file(std::string(CLUSTERD_FIXTURES) + "/../../etc/clusterd.yaml");
    Config defaults = clusterd::load_config_file(config_fixture("valid/minimal.yaml"));
    CHECK(c.daemon.control == defaults.daemon.control);
    CHECK(c.daemon.log_level == defaults.daemon.log_level);
    CHECK(c.daemon.log_file == defaults.daemon.log_file);
    CHECK(c.daemon.metrics == defaults.daemon.metrics);
    CHECK(c.daemon.shutdown_timeout == defaults.daemon.shutdown_timeout);
    REQUIRE(c.programs.size() == 1);
    const auto& p = c.programs[0];
    const auto& d = defaults.programs[0];
    CHECK(p.name == "web");
    CHECK(p.command == d.command);
    CHECK(p.cores_auto == d.cores_auto);
    CHECK(p.workers == d.workers);
    REQUIRE(p.listen.size() == 1);
    CHECK(p.listen[0].name == "http");
    CHECK(p.listen[0].address() == "127.0.0.1:8080");
    CHECK(p.listen[0].reuseport == clusterd::ListenConfig{}.reuseport);
    CHECK(p.listen[0].backlog == clusterd::ListenConfig{}.backlog);
    CHECK(p.env == d.env);
    CHECK(p.inherit_env == d.inherit_env);
    CHECK(p.ready == d.ready);
    CHECK(p.start_time == d.start_time);
    CHECK(p.start_timeout == d.start_timeout);
    CHECK(p.watchdog == d.watchdog);
    CHECK(p.restart == d.restart);
    CHECK(p.backoff.initial == d.backoff.initial);
    CHECK(p.backoff.max == d.backoff.max);
    CHECK(p.min_uptime == d.min_uptime);
    CHECK(p.stop_signal == d.stop_signal);
    CHECK(p.stop_timeout == d.stop_timeout);
    CHECK(p.cpu_affinity == d.cpu_affinity);
    CHECK(p.output == d.output);
}

TEST_CASE("the built-in default config serves the built-in worker on 127.0.0.1:8080") {
    Config c = clusterd::default_config();
    CHECK(c.source == "<built-in>");
    CHECK(c.daemon.control == clusterd::default_paths().control);
    REQUIRE(c.programs.size() == 1);
    const auto& web = c.programs[0];
    CHECK(web.name == "web");
    CHECK(web.command.empty());
    CHECK(web.cores_auto);
    CHECK(web.workers == clusterd::available_cpus());
    CHECK(web.watchdog == 10s);
    REQUIRE(web.listen.size() == 1);
    CHECK(web.listen[0].name == "http");
    CHECK(web.listen[0].address() == "127.0.0.1:8080");
}

TEST_CASE("load_config_string names its source in diagnostics") {
    Config c = clusterd::load_config_string("programs: {web: {cores: 2}}", "inline");
    CHECK(c.source == "inline");
    CHECK(c.programs.at(0).workers == 2);
    try {
        clusterd::load_config_string("programs: {web: {cores: 0}}", "inline");
        FAIL("expected a ConfigError");
    } catch (const ConfigError& e) {
        CHECK(std::string(e.what()).starts_with("inline:1:25: programs.web.cores: "));
    }
}

TEST_CASE("IPv6 addresses are stored canonically and printed in brackets") {
    Config c = clusterd::load_config_string(
        "programs: {web: {listen: [{address: '[0:0::0:1]:80'}, {address: '[::]:81'}]}}", "x");
    const auto& listen = c.programs.at(0).listen;
    REQUIRE(listen.size() == 2);
    CHECK(listen[0].host == "::1");
    CHECK(listen[0].address() == "[::1]:80");
    CHECK(listen[1].address() == "[::]:81");
}

TEST_CASE("the same port on IPv4 and IPv6 wildcards is not a conflict") {
    CHECK_NOTHROW(clusterd::load_config_string(
        "programs: {web: {listen: [{address: '0.0.0.0:80'}, {address: '[::]:80'}]}}", "x"));
}

TEST_CASE("a missing config file is a ConfigError naming the file") {
    try {
        clusterd::load_config_file(config_fixture("does-not-exist.yaml"));
        FAIL("expected a ConfigError");
    } catch (const ConfigError& e) {
        REQUIRE(e.diagnostics().size() == 1);
        CHECK(e.diagnostics()[0].file == config_fixture("does-not-exist.yaml"));
        CHECK(std::string(e.what()).find("No such file") != std::string::npos);
    }
}

TEST_CASE("Diagnostic::to_string is file:line:col: message") {
    CHECK(clusterd::Diagnostic{"a.yaml", 7, 12, "boom"}.to_string() == "a.yaml:7:12: boom");
    CHECK(clusterd::Diagnostic{"a.yaml", 0, 0, "boom"}.to_string() == "a.yaml: boom");
}

TEST_CASE("ConfigError::what joins every diagnostic with newlines") {
    ConfigError e({{"a.yaml", 1, 2, "one"}, {"a.yaml", 3, 4, "two"}});
    CHECK(std::string(e.what()) == "a.yaml:1:2: one\na.yaml:3:4: two");
    CHECK(e.diagnostics().size() == 2);
}

TEST_CASE("a second YAML document in the file is an error") {
    try {
        clusterd::load_config_string("programs: {web: {}}\n---\nprograms: {api: {}}\n", "x");
        FAIL("expected a ConfigError");
    } catch (const ConfigError& e) {
        REQUIRE(e.diagnostics().size() == 1);
        CHECK(e.diagnostics()[0].to_string().starts_with("x:2:1: expected one YAML document"));
    }
}

TEST_CASE("umask reads as octal whether written plain, quoted or with 0o") {
    auto umask_of = [](const std::string& value) {
        return clusterd::load_config_string("programs: {web: {umask: " + value + "}}", "x")
            .programs.at(0)
            .umask;
    };
    CHECK(umask_of("0022") == 0022u);
    CHECK(umask_of("'0022'") == 0022u);
    CHECK(umask_of("22") == 0022u);
    CHECK(umask_of("0o777") == 0777u);
    CHECK(umask_of("0") == 0u);
    CHECK_THROWS_AS(umask_of("01000"), ConfigError);
    CHECK_THROWS_AS(umask_of("-1"), ConfigError);
}

TEST_CASE("booleans accept the YAML 1.1 spellings") {
    auto reuseport_of = [](const std::string& value) {
        return clusterd::load_config_string(
                   "programs: {web: {listen: [{address: '127.0.0.1:1', reuseport: " + value +
                       "}]}}",
                   "x")
            .programs.at(0)
            .listen.at(0)
            .reuseport;
    };
    CHECK(reuseport_of("true"));
    CHECK(reuseport_of("yes"));
    CHECK(reuseport_of("on"));
    CHECK_FALSE(reuseport_of("false"));
    CHECK_FALSE(reuseport_of("No"));
    CHECK_FALSE(reuseport_of("off"));
    CHECK_THROWS_AS(reuseport_of("1"), ConfigError);
}

TEST_CASE("addresses: brackets only around IPv6, a port from 1 to 65535") {
    auto load = [](const std::string& address) {
        return clusterd::load_config_string(
            "programs: {web: {listen: [{address: '" + address + "'}]}}", "x");
    };
    CHECK_NOTHROW(load("10.0.0.1:1"));
    CHECK_NOTHROW(load("[fe80::1]:65535"));
    for (const char* bad :
         {"10.0.0.1:0", "10.0.0.1", "10.0.0.1:", ":8080", "[10.0.0.1]:80", "::1:80", "[::1]80",
          "[::1:80", "10.0.0.1:80x", "10.0.0.256:80", "example.com:80", "10.0.0.1:+80"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(load(bad), ConfigError);
    }
}

// Every invalid fixture under tests/fixtures/config/invalid/ with the exact position and a
// fragment of the message it must produce.
#include "common/config.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using clusterd::ConfigError;
using clusterd::Diagnostic;

namespace {

std::string invalid_fixture(const std::string& name) {
    return std::string(CLUSTERD_FIXTURES) + "/config/invalid/" + name;
}

std::vector<Diagnostic> errors_of(const std::string& name) {
    try {
        clusterd::load_config_file(invalid_fixture(name));
    } catch (const ConfigError& e) {
        return e.diagnostics();
    }
    FAIL(name << " loaded without an error");
    return {};
}

/// `d` is at `line`:`column` of fixture `name` and its message contains `fragment`.
void check_diagnostic(const Diagnostic& d, const std::string& name, int line, int column,
                      const std::string& fragment) {
    std::string prefix =
        invalid_fixture(name) + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
    CAPTURE(d.to_string());
    CHECK(d.to_string().starts_with(prefix));
    CHECK(d.message.find(fragment) != std::string::npos);
}

/// The fixture yields exactly one diagnostic, at `line`:`column`, containing `fragment`.
void expect_error(const std::string& name, int line, int column, const std::string& fragment) {
    auto errors = errors_of(name);
    REQUIRE(errors.size() == 1);
    check_diagnostic(errors[0], name, line, column, fragment);
}

}  // namespace

TEST_CASE("invalid config: an unknown key is named, with a suggestion and the valid keys") {
    expect_error("unknown_key.yaml", 3, 5,
                 "programs.web: unknown key \"corse\" (did you mean \"cores\"?); valid keys: "
                 "command, cores, listen");
}

TEST_CASE("invalid config: an unknown top-level key") {
    expect_error("unknown_top_level.yaml", 1, 1,
                 "unknown key \"deamon\" (did you mean \"daemon\"?); valid keys: daemon, programs");
}

TEST_CASE("invalid config: listen given as a map instead of a sequence") {
    expect_error("wrong_type.yaml", 4, 7, "programs.web.listen: expected a sequence of");
}

TEST_CASE("invalid config: the document is a sequence, not a map") {
    expect_error("not_a_map.yaml", 1, 1, "expected a map, got a sequence");
}

TEST_CASE("invalid config: a duration with words") {
    expect_error("bad_duration.yaml", 3, 19,
                 "programs.web.stop_timeout: expected a duration like 250ms, 10s, 1m or 1h30m, "
                 "got \"10 seconds\"");
}

TEST_CASE("invalid config: cores 0") {
    expect_error("cores_zero.yaml", 3, 12,
                 "programs.web.cores: expected \"auto\" or an integer from 1 to 4096, got \"0\"");
}

TEST_CASE("invalid config: cores \"lots\"") {
    expect_error("cores_lots.yaml", 6, 12,
                 "programs.web.cores: expected \"auto\" or an integer from 1 to 4096, got "
                 "\"lots\"");
}

TEST_CASE("invalid config: a port above 65535") {
    expect_error("bad_port.yaml", 4, 31, "the port must be from 1 to 65535");
}

TEST_CASE("invalid config: a host name instead of a numeric address") {
    expect_error("hostname.yaml", 4, 18, "programs.web.listen[0].address: expected \"host:port\"");
    expect_error("hostname.yaml", 4, 18, "\"localhost\" is not a numeric IPv4 address");
}

TEST_CASE("invalid config: \"*\" as the host") {
    expect_error("wildcard_host.yaml", 4, 18, "use 0.0.0.0 or [::] for every interface");
}

TEST_CASE("invalid config: a duplicate key in a program") {
    expect_error("duplicate_key.yaml", 5, 5,
                 "programs.web: duplicate key \"cores\" (first at " +
                     invalid_fixture("duplicate_key.yaml") + ":3:5)");
}

TEST_CASE("invalid config: a duplicate program name") {
    expect_error("duplicate_program.yaml", 4, 3, "programs: duplicate key \"web\"");
}

TEST_CASE("invalid config: the same listen address in two programs names both positions") {
    expect_error("duplicate_address.yaml", 7, 30,
                 "programs.api.listen[0].address: 127.0.0.1:8080 is already used by "
                 "programs.web.listen[0] at " +
                     invalid_fixture("duplicate_address.yaml") + ":4:18");
}

TEST_CASE("invalid config: a wildcard and a specific address on the same port overlap") {
    expect_error("overlapping_address.yaml", 5, 18,
                 "127.0.0.1:8080 overlaps 0.0.0.0:8080 of programs.web.listen[0] at " +
                     invalid_fixture("overlapping_address.yaml") + ":4:18");
}

TEST_CASE("invalid config: a listener on the metrics address") {
    expect_error("metrics_clash.yaml", 5, 24, "is already used by daemon.metrics at");
}

TEST_CASE("invalid config: command as a shell string") {
    expect_error("command_string.yaml", 3, 14,
                 R"(programs.web.command: expected a sequence of strings (argv), e.g. )"
                 R"(["/usr/bin/app", "--port", "8080"], got "/usr/bin/app --port 8080")");
}

TEST_CASE("invalid config: an empty command") {
    expect_error("command_empty.yaml", 3, 14,
                 "programs.web.command: expected a non-empty sequence of strings (argv)");
}

TEST_CASE("invalid config: a reserved env key") {
    expect_error("reserved_env.yaml", 5, 7, "programs.web.env: CLUSTERD_WORKER_ID is reserved");
}

TEST_CASE("invalid config: an env key that is not a variable name") {
    expect_error("bad_env_name.yaml", 3, 11, "\"MY-VAR\" is not a valid environment variable name");
}

TEST_CASE("invalid config: an unknown stop signal") {
    expect_error("bad_signal.yaml", 3, 18,
                 "programs.web.stop_signal: expected a signal name or number");
}

TEST_CASE("invalid config: an unknown restart mode") {
    expect_error("bad_restart.yaml", 3, 14,
                 "programs.web.restart: expected \"always\", \"on-failure\" or \"never\", got "
                 "\"sometimes\"");
}

TEST_CASE("invalid config: malformed YAML reports the parser's position") {
    expect_error("malformed.yaml", 4, 10, "invalid YAML: end of sequence flow not found");
}

TEST_CASE("invalid config: bad indentation is malformed YAML") {
    expect_error("bad_indent.yaml", 4, 4, "invalid YAML");
}

TEST_CASE("invalid config: no programs key") {
    expect_error("no_programs.yaml", 1, 1, "missing required key \"programs\"");
}

TEST_CASE("invalid config: an empty programs map") {
    expect_error("empty_programs.yaml", 3, 11, "programs: expected at least one program");
}

TEST_CASE("invalid config: an empty file") {
    expect_error("empty.yaml", 1, 1, "the config is empty");
}

TEST_CASE("invalid config: a relative cwd") {
    expect_error("relative_cwd.yaml", 3, 10,
                 "programs.web.cwd: expected an absolute directory path, got \"srv/www\"");
}

TEST_CASE("invalid config: a umask that is not octal") {
    expect_error("bad_umask.yaml", 3, 12,
                 "programs.web.umask: expected an octal umask from 0 to 0777");
}

TEST_CASE("invalid config: backoff max below initial") {
    expect_error("backoff_max.yaml", 5, 12,
                 "programs.web.backoff.max: expected max to be at least initial (1m), got 30s");
}

TEST_CASE("invalid config: backoff.reset_after, replaced by min_uptime, says so") {
    expect_error("backoff_reset_after.yaml", 5, 20,
                 "programs.web.backoff.reset_after: backoff.reset_after is gone: a run that "
                 "stays ready for the program's min_uptime (default 1s) now resets the failure "
                 "count; set min_uptime instead");
}

TEST_CASE("invalid config: a program name with a space") {
    expect_error("bad_program_name.yaml", 2, 3, "invalid program name \"my web\"");
}

TEST_CASE("invalid config: an unknown log level") {
    expect_error("bad_log_level.yaml", 2, 14,
                 "daemon.log_level: expected \"trace\", \"debug\", \"info\", \"warn\" or "
                 "\"error\", got \"verbose\"");
}

TEST_CASE("invalid config: a boolean that is not true or false") {
    expect_error("bad_bool.yaml", 3, 19, "programs.web.cpu_affinity: expected true or false");
}

TEST_CASE("invalid config: backlog 0") {
    expect_error("bad_backlog.yaml", 4, 41,
                 "programs.web.listen[0].backlog: expected an integer from 1 to 65535, got \"0\"");
}

TEST_CASE("invalid config: two listen entries with the same name") {
    expect_error("duplicate_listen_name.yaml", 5, 16,
                 "programs.web.listen[1].name: duplicate listen name \"http\"");
}

TEST_CASE("invalid config: a listen entry without an address") {
    expect_error("missing_address.yaml", 4, 9,
                 "programs.web.listen[0]: missing required key \"address\"");
}

TEST_CASE("invalid config: a relative output path") {
    expect_error("relative_output.yaml", 3, 13,
                 "programs.web.output: expected \"inherit\", \"capture\" or an absolute file path");
}

TEST_CASE("invalid config: start_time not below start_timeout with ready: started") {
    expect_error("start_time.yaml", 4, 17, "programs.web.start_time: must be less than");
}

TEST_CASE("invalid config: every error of a file is reported, in file order") {
    const std::string name = "multi.yaml";
    auto errors = errors_of(name);
    REQUIRE(errors.size() == 9);
    check_diagnostic(errors[0], name, 2, 12, "daemon.control: expected an absolute socket path");
    check_diagnostic(errors[1], name, 3, 14, "daemon.log_level: expected \"trace\"");
    check_diagnostic(errors[2], name, 6, 14, "programs.web.command: expected a sequence");
    check_diagnostic(errors[3], name, 7, 12, "programs.web.cores: expected \"auto\"");
    check_diagnostic(errors[4], name, 10, 11, "NOTIFY_SOCKET is reserved");
    check_diagnostic(errors[5], name, 11, 14, "programs.web.restart: expected \"always\"");
    check_diagnostic(errors[6], name, 14, 16, "programs.api.listen[0].name: expected a name");
    check_diagnostic(errors[7], name, 14, 32,
                     "127.0.0.1:8080 is already used by programs.web.listen[0]");
    check_diagnostic(errors[8], name, 15, 19, "programs.api.stop_timeout: expected a duration");
    std::string what = ConfigError(errors).what();
    CHECK(std::count(what.begin(), what.end(), '\n') == 8);
}

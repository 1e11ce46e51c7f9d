// {listen.NAME.fd} in command arguments: expansion, and the loader's errors.
#include "common/placeholders.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace clusterd;

namespace {

std::vector<ListenConfig> listeners() {
    return {ListenConfig{.name = "http", .host = "127.0.0.1", .port = 8080},
            ListenConfig{.name = "admin", .host = "127.0.0.1", .port = 8081}};
}

std::string expand(const std::string& arg) {
    std::string problem;
    auto out = expand_placeholders(arg, listeners(), problem);
    return out ? *out : "ERROR: " + problem;
}

std::string error_of(const std::string& fixture) {
    std::string path = std::string(CLUSTERD_FIXTURES) + "/config/invalid/" + fixture;
    try {
        load_config_file(path);
    } catch (const ConfigError& e) {
        REQUIRE(e.diagnostics().size() == 1);
        return e.diagnostics()[0].to_string().substr(path.size() + 1);
    }
    FAIL(fixture << " loaded without an error");
    return {};
}

}  // namespace

TEST_CASE("placeholders: {listen.NAME.fd} becomes 3 + the listener's index") {
    CHECK(expand("{listen.http.fd}") == "3");
    CHECK(expand("--admin-fd={listen.admin.fd}") == "--admin-fd=4");
    CHECK(expand("{listen.http.fd},{listen.admin.fd},{listen.http.fd}") == "3,4,3");
    CHECK(expand("no placeholder {here} {listen}") == "no placeholder {here} {listen}");
    CHECK(expand("") == "");
}

TEST_CASE("placeholders: an unknown name or a malformed placeholder is an error") {
    CHECK(expand("{listen.web.fd}") ==
          "ERROR: unknown listener \"web\" in {listen.web.fd} (listeners: http, admin)");
    CHECK(expand("{listen.http}") ==
          "ERROR: malformed placeholder \"{listen.http}\": expected {listen.NAME.fd}");
    CHECK(expand("{listen.http.fd") ==
          "ERROR: malformed placeholder \"{listen.http.fd\": expected {listen.NAME.fd}");
    CHECK(expand("{listen.fd}").starts_with("ERROR: malformed"));
    std::string problem;
    CHECK_FALSE(expand_placeholders("{listen.http.fd}", {}, problem));
    CHECK(problem.find("the program has no listen entries") != std::string::npos);
}

TEST_CASE("placeholders: the loader checks them with the argument's line and column") {
    CHECK(error_of("placeholder_unknown_listener.yaml") ==
          "3:25: programs.web.command[1]: unknown listener \"admin\" in {listen.admin.fd} "
          "(listeners: http)");
    CHECK(error_of("placeholder_malformed.yaml") ==
          "5:9: programs.web.command[1]: malformed placeholder \"{listen.http}\": expected "
          "{listen.NAME.fd}");
    auto c = load_config_string(
        "programs:\n  web:\n    cores: 1\n    command: [/bin/app, '{listen.b.fd}']\n"
        "    listen: [{name: a, address: '127.0.0.1:1'}, {name: b, address: '127.0.0.1:2'}]\n",
        "t.yaml");
    CHECK(c.programs[0].command[1] == "{listen.b.fd}");  // expanded per spawn, not at load
}

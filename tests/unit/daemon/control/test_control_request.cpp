// The control request decoder: every request the CLI sends, and what a client gets wrong.
#include <doctest/doctest.h>

#include <string>
#include <variant>

#include "daemon/control/control_request.hpp"

using namespace clusterd;

namespace control_request_test {

ControlRequest ok(const std::string& line) {
    auto r = decode_control_request(line);
    if (auto* e = std::get_if<ControlDecodeError>(&r))
        FAIL("rejected " << line << ": " << e->message);
    return std::get<ControlRequest>(r);
}

std::string error(const std::string& line) {
    auto r = decode_control_request(line);
    REQUIRE_MESSAGE(std::holds_alternative<ControlDecodeError>(r), "accepted " << line);
    return std::get<ControlDecodeError>(r).message;
}

}  // namespace control_request_test

using control_request_test::error;
using control_request_test::ok;

TEST_CASE("control request: every command the CLI sends decodes, and re-encodes the same") {
    const char* lines[] = {
        R"({"cmd":"version"})",
        R"({"cmd":"status"})",
        R"({"cmd":"status","program":"web"})",
        R"({"cmd":"reload"})",
        R"({"cmd":"restart","program":"web","rolling":false})",
        R"({"cmd":"restart","program":"web","rolling":true})",
        R"({"cmd":"scale","program":"web","workers":4})",
        R"({"cmd":"stop","program":"web"})",
        R"({"cmd":"start","program":"web"})",
        R"({"cmd":"signal","program":"web","signal":"HUP"})",
        R"({"cmd":"log-level","level":"debug"})",
        R"({"cmd":"upgrade"})",
        R"({"cmd":"upgrade","binary":"/usr/bin/clusterd"})",
    };
    for (const char* line : lines) {
        CAPTURE(line);
        ControlRequest r = ok(line);
        CHECK(r.to_json() == nlohmann::json::parse(line));
    }
    ControlRequest scale = ok(R"({"workers":4096,"program":"api","cmd":"scale"})"
                              "\r");
    CHECK(scale.cmd == ControlCommand::scale);
    CHECK(scale.program == "api");
    CHECK(scale.workers == 4096);
    CHECK(ok(R"({"cmd":"restart","program":"web"})").rolling == false);
    CHECK(to_string(ControlCommand::log_level) == "log-level");
}

TEST_CASE("control request: errors say where and what") {
    CHECK(error("").find("not JSON") != std::string::npos);
    CHECK(error(R"({"cmd":"status",)") ==
          "request is not JSON (byte 17): expected one JSON object per line");
    // Found by fuzz_control: a number too large for a double threw out of the decoder.
    CHECK(error("99990E990\t").find("number out of range") != std::string::npos);
    CHECK(error(R"({"cmd":"scale","program":"web","workers":1E999})").find("number out of range") !=
          std::string::npos);
    CHECK(error(R"(["status"])") == "request is an array: expected one JSON object per line");
    CHECK(error(R"({"program":"web"})").starts_with("request has no \"cmd\" (known: version, "));
    CHECK(error(R"({"cmd":7})") == "\"cmd\" is a number: expected a string");
    CHECK(error(R"({"cmd":"explode"})").starts_with("unknown command \"explode\" (known: "));
    CHECK(error(R"({"cmd":"reload","program":"web"})") == "reload: unknown key \"program\"");
    CHECK(error(R"({"cmd":"status","verbose":true})") == "status: unknown key \"verbose\"");
    CHECK(error(R"({"cmd":"status","program":["web"]})") ==
          "status: \"program\" is an array: expected a string");
    CHECK(error(R"({"cmd":"stop"})") == "stop: \"program\" is required");
    CHECK(error(R"({"cmd":"stop","program":""})") == "stop: \"program\" is required");
    CHECK(error(R"({"cmd":"restart","program":"web","rolling":"yes"})") ==
          "restart: \"rolling\" is a string: expected true or false");
    for (const char* w : {"0", "4097", "-1", "2.5", "\"4\"", "18446744073709551615", "[1]"}) {
        CAPTURE(w);
        CHECK(error(std::string(R"({"cmd":"scale","program":"web","workers":)") + w + "}")
                  .starts_with("scale: \"workers\" must be an integer from 1 to 4096, not "));
    }
    CHECK(error(R"({"cmd":"scale","program":"web","workers":[[1]]})") ==
          "scale: \"workers\" must be an integer from 1 to 4096, not an array");
    CHECK(error(R"({"cmd":"scale","program":"web"})") ==
          "scale: \"workers\" must be an integer from 1 to 4096");
    CHECK(error(R"({"cmd":"signal","program":"web"})") ==
          "signal: \"signal\" is required, e.g. HUP or USR1");
    CHECK(error(R"({"cmd":"log-level","level":"loud"})") ==
          "log-level: \"level\" must be one of trace, debug, info, warn, error, not \"loud\"");
    CHECK(error(R"({"cmd":"upgrade","binary":"clusterd"})") ==
          "upgrade: \"binary\" must be an absolute path, not \"clusterd\"");
    CHECK(error(R"({"cmd":"upgrade","binary":7})") ==
          "upgrade: \"binary\" is a number: expected a string");
    CHECK(error(R"({"cmd":"upgrade","program":"web"})") == "upgrade: unknown key \"program\"");
    // A client's text comes back escaped and cut short.
    std::string junk = error(R"({"cmd":"\u0001)" + std::string(200, 'x') + "\"}");
    CHECK(junk.starts_with("unknown command \"\\u0001xxx"));
    CHECK(junk.find("...") != std::string::npos);
    CHECK(junk.size() < 200);
}

TEST_CASE("control request: size and nesting limits") {
    std::string big =
        R"({"cmd":"status","program":")" + std::string(kMaxControlRequestBytes, 'a') + "\"}";
    CHECK(error(big).starts_with("request of "));
    // Deep nesting, as deep as a request line allows, parses without recursion and is
    // rejected by type, never copied or dumped (both recurse once per level).
    const std::size_t levels = (kMaxControlRequestBytes - 64) / 2;
    std::string deep = R"({"cmd":"scale","program":"web","workers":)" + std::string(levels, '[') +
                       std::string(levels, ']') + "}";
    REQUIRE(deep.size() <= kMaxControlRequestBytes);
    CHECK(error(deep) == "scale: \"workers\" must be an integer from 1 to 4096, not an array");
}

TEST_CASE("control request: events and logs, their lines and follow") {
    ControlRequest e = ok(R"({"cmd":"events","lines":20,"follow":true})");
    CHECK(e.cmd == ControlCommand::events);
    CHECK(e.lines == 20);
    CHECK(e.follow);
    CHECK(e.program.empty());
    ControlRequest l = ok(R"({"cmd":"logs","program":"web"})");
    CHECK(l.cmd == ControlCommand::logs);
    CHECK(l.lines == 0);
    CHECK_FALSE(l.follow);
    CHECK(ok(l.to_json().dump()).program == "web");
    CHECK(error(R"({"cmd":"logs","lines":10001})") ==
          "logs: \"lines\" must be an integer from 0 to 10000, not \"10001\"");
    CHECK(error(R"({"cmd":"events","lines":-1})") ==
          "events: \"lines\" must be an integer from 0 to 10000, not \"-1\"");
    CHECK(error(R"({"cmd":"events","lines":[1]})") ==
          "events: \"lines\" must be an integer from 0 to 10000, not an array");
    CHECK(error(R"({"cmd":"events","follow":"yes"})") ==
          "events: \"follow\" is a string: expected true or false");
    CHECK(error(R"({"cmd":"logs","workers":1})") == "logs: unknown key \"workers\"");
}

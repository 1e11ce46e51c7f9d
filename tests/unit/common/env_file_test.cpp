// The env file parser (common/env_file.cpp): systemd's EnvironmentFile= syntax.
#include "common/env_file.hpp"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/config.hpp"
#include "common/limits.hpp"

using clusterd::ConfigError;
using clusterd::Diagnostic;
using clusterd::parse_env_file;

namespace {

using Vars = std::vector<std::pair<std::string, std::string>>;

Vars parse(const std::string& text) {
    return parse_env_file(text, "/etc/app.env");
}

std::vector<Diagnostic> errors_of(const std::string& text) {
    try {
        parse_env_file(text, "/etc/app.env");
    } catch (const ConfigError& e) {
        return e.diagnostics();
    }
    FAIL("parsed without an error: " << text);
    return {};
}

/// The text yields exactly one diagnostic, "/etc/app.env:<at>: ..." containing `fragment`.
void expect_error(const std::string& text, const std::string& at, const std::string& fragment) {
    auto errors = errors_of(text);
    REQUIRE(errors.size() == 1);
    CAPTURE(errors[0].to_string());
    CHECK(errors[0].to_string().starts_with("/etc/app.env:" + at + ": "));
    CHECK(errors[0].message.find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("env file: KEY=VALUE lines, in file order") {
    CHECK(parse("A=1\nB=two\n") == Vars{{"A", "1"}, {"B", "two"}});
    CHECK(parse("A=1") == Vars{{"A", "1"}});  // no newline at the end
    CHECK(parse("") == Vars{});
    CHECK(parse("\n\n  \n\t\n") == Vars{});
}

TEST_CASE("env file: comments start with # or ; at the start of a line") {
    CHECK(parse("# a comment\nA=1\n; another\n  # indented\nB=2\n") ==
          Vars{{"A", "1"}, {"B", "2"}});
    // Not at the start of a line: part of the value.
    CHECK(parse("A=1 # not a comment\n") == Vars{{"A", "1 # not a comment"}});
    // A trailing backslash does not continue a comment (systemd since v254).
    CHECK(parse("# comment \\\nA=1\n") == Vars{{"A", "1"}});
}

TEST_CASE("env file: blanks around the key and before the value are ignored") {
    CHECK(parse("  A = 1\n\tB\t=\t2\n") == Vars{{"A", "1"}, {"B", "2"}});
}

TEST_CASE("env file: unquoted values lose their trailing blanks, keep the inner ones") {
    CHECK(parse("A=a b   c   \nB=x\t\n") == Vars{{"A", "a b   c"}, {"B", "x"}});
}

TEST_CASE("env file: a backslash takes the next character; at the line end it continues") {
    CHECK(parse("A=a\\ b\\\\c\\\"d\n") == Vars{{"A", "a b\\c\"d"}});
    CHECK(parse("A=x\\ \n") == Vars{{"A", "x "}});  // an escaped blank is kept
    CHECK(parse("A=first \\\nsecond\nB=2\n") == Vars{{"A", "first second"}, {"B", "2"}});
    CHECK(parse("A=\\\nsecond\n") == Vars{{"A", "second"}});
    CHECK(parse("A=end\\") == Vars{{"A", "end"}});
}

TEST_CASE("env file: double quotes unescape \\\" \\\\ \\` \\$, keep other backslashes") {
    CHECK(parse(R"(A="a \"b\" \\ \` \$c \q \n")"
                "\n") == Vars{{"A", R"(a "b" \ ` $c \q \n)"}});
    CHECK(parse("A=\"  spaced  \"\n") == Vars{{"A", "  spaced  "}});
    CHECK(parse("A=\"line one\nline two\"\n") == Vars{{"A", "line one\nline two"}});
    CHECK(parse("A=\"joined \\\nhere\"\n") == Vars{{"A", "joined here"}});
    CHECK(parse("A=\"# not a comment; either\"\n") == Vars{{"A", "# not a comment; either"}});
}

TEST_CASE("env file: single quotes are literal") {
    CHECK(parse(R"(A='a \"b\" $c \\')"
                "\n") == Vars{{"A", R"(a \"b\" $c \\)"}});
    CHECK(parse("A='two\nlines'\n") == Vars{{"A", "two\nlines"}});
}

TEST_CASE("env file: quoted and unquoted parts are joined as systemd does") {
    CHECK(parse("A=\"a\"'b'c\n") == Vars{{"A", "abc"}});
    // Blanks between quoted parts are dropped; trailing blanks of the unquoted tail trimmed.
    CHECK(parse("A=\"a\"  'b'  c d  \n") == Vars{{"A", "abc d"}});
    // A quote after an unquoted start is an ordinary character.
    CHECK(parse("A=a\"b\"\n") == Vars{{"A", "a\"b\""}});
    CHECK(parse("A=it's\n") == Vars{{"A", "it's"}});
}

TEST_CASE("env file: an empty value") {
    CHECK(parse("A=\nB=   \nC=\"\"\nD=''\nE=") ==
          Vars{{"A", ""}, {"B", ""}, {"C", ""}, {"D", ""}, {"E", ""}});
}

TEST_CASE("env file: a key given twice keeps its place and takes the later value") {
    CHECK(parse("A=1\nB=2\nA=3\n") == Vars{{"A", "3"}, {"B", "2"}});
}

TEST_CASE("env file: CRLF line ends") {
    CHECK(parse("# comment\r\nA=1\r\nB = two  \r\n\r\nC=\"q\"\r\n") ==
          Vars{{"A", "1"}, {"B", "two"}, {"C", "q"}});
    CHECK(parse("A=1\rB=2\r") == Vars{{"A", "1"}, {"B", "2"}});  // CR alone ends a line too
}

TEST_CASE("env file: a line without '=' is an error at its line") {
    expect_error("A=1\n\n  oops here\nB=2\n", "3:3", "expected NAME=VALUE, got \"oops here\"");
    expect_error("A=1\nexport", "2:1", "(no '=')");
}

TEST_CASE("env file: an invalid variable name") {
    expect_error("A=1\n1ABC=x\n", "2:1", "\"1ABC\" is not a valid environment variable name");
    expect_error("MY-VAR=x\n", "1:1", "\"MY-VAR\" is not a valid environment variable name");
    expect_error("MY VAR=x\n", "1:1", "\"MY VAR\" is not a valid environment variable name");
    expect_error("  =x\n", "1:3", "\"\" is not a valid environment variable name");
    expect_error("export A=x\n", "1:1", "\"export A\" is not a valid environment variable name");
}

TEST_CASE("env file: a reserved name") {
    expect_error("A=1\nLISTEN_FDS=3\n", "2:1", "LISTEN_FDS is reserved: clusterd sets it");
    expect_error("CLUSTERD_WORKER_ID=1\n", "1:1", "CLUSTERD_WORKER_ID is reserved");
}

TEST_CASE("env file: an unterminated quote is an error at the opening quote") {
    expect_error("A=1\nB=\"open\nmore\n", "2:3", "unterminated double quote");
    expect_error("A='open", "1:3", "unterminated single quote");
    expect_error("A=\"ends in a backslash\\", "1:3", "unterminated double quote");
}

TEST_CASE("env file: every error of the file is reported") {
    auto errors = errors_of("1A=x\nok=1\nnoequals\nNOTIFY_SOCKET=/x\n");
    REQUIRE(errors.size() == 3);
    CHECK(errors[0].line == 1);
    CHECK(errors[1].line == 3);
    CHECK(errors[2].line == 4);
}

TEST_CASE("env file: columns count characters, not bytes") {
    expect_error("A=\"\u00e9\u00e9\"'open\n", "1:7", "unterminated single quote");
}

TEST_CASE("env file: a NUL byte and invalid UTF-8 are refused") {
    expect_error(std::string("A=1\nB=x\0y\n", 10), "2:4", "contains a NUL byte");
    expect_error("A=1\nB=\xff\n", "2:3", "invalid UTF-8");
}

TEST_CASE("env file: the size and variable limits") {
    std::string big(clusterd::limits::kMaxEnvFileBytes + 1, '#');
    auto errors = errors_of(big);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].to_string() == "/etc/app.env: is 1048577 bytes, more than the 1 MiB limit");

    std::string many;
    for (std::size_t i = 0; i < clusterd::limits::kMaxEnvFileVars; ++i)
        many += "V" + std::to_string(i) + "=x\n";
    CHECK(parse(many).size() == clusterd::limits::kMaxEnvFileVars);
    CHECK(parse(many + "V0=again\n").size() == clusterd::limits::kMaxEnvFileVars);
    expect_error(many + "ONE_MORE=x\n",
                 std::to_string(clusterd::limits::kMaxEnvFileVars + 1) + ":1",
                 "more than 4096 variables");
}

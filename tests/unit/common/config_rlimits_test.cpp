// `rlimits:`: accepted forms, and every invalid fixture at its exact position.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <string>

#include "common/config.hpp"

using namespace clusterd;

namespace {

ProgramConfig load_program(const std::string& rlimits) {
    std::string text = "programs:\n  web:\n    cores: 1\n    rlimits: " + rlimits + "\n";
    return load_config_string(text, "test.yaml").programs.at(0);
}

std::string error_of(const std::string& fixture) {
    std::string path = std::string(CLUSTERD_FIXTURES) + "/config/invalid/" + fixture;
    try {
        load_config_file(path);
    } catch (const ConfigError& e) {
        REQUIRE(e.diagnostics().size() == 1);
        std::string text = e.diagnostics()[0].to_string();
        REQUIRE(text.starts_with(path + ":"));
        return text.substr(path.size() + 1);
    }
    FAIL(fixture << " loaded without an error");
    return {};
}

}  // namespace

TEST_CASE("rlimits: integers, sizes, unlimited and soft/hard pairs, in file order") {
    auto p = load_program(
        "{nofile: 65536, core: unlimited, as: 2G, stack: 8M, nproc: {soft: 512, hard: 1024}, "
        "cpu: 3600, memlock: {soft: 64K, hard: unlimited}, fsize: 1000, data: 32M}");
    REQUIRE(p.rlimits.size() == 9);
    CHECK(p.rlimits[0] == RLimit{"nofile", RLIMIT_NOFILE, 65536, 65536});
    CHECK(p.rlimits[1] == RLimit{"core", RLIMIT_CORE, RLimit::kUnlimited, RLimit::kUnlimited});
    CHECK(p.rlimits[2] == RLimit{"as", RLIMIT_AS, 2ull << 30, 2ull << 30});
    CHECK(p.rlimits[3] == RLimit{"stack", RLIMIT_STACK, 8ull << 20, 8ull << 20});
    CHECK(p.rlimits[4] == RLimit{"nproc", RLIMIT_NPROC, 512, 1024});
    CHECK(p.rlimits[5] == RLimit{"cpu", RLIMIT_CPU, 3600, 3600});
    CHECK(p.rlimits[6] == RLimit{"memlock", RLIMIT_MEMLOCK, 64 << 10, RLimit::kUnlimited});
    CHECK(p.rlimits[7] == RLimit{"fsize", RLIMIT_FSIZE, 1000, 1000});
    CHECK(p.rlimits[8] == RLimit{"data", RLIMIT_DATA, 32u << 20, 32u << 20});
    CHECK(load_program("{}").rlimits.empty());
    CHECK(load_config_string("programs:\n  web:\n    cores: 1\n", "t").programs[0].rlimits.empty());
}

TEST_CASE("rlimits: a size suffix only where the limit is in bytes") {
    CHECK_THROWS_AS(load_program("{nofile: 64K}"), ConfigError);
    CHECK_THROWS_AS(load_program("{nofile: -1}"), ConfigError);
    CHECK_THROWS_AS(load_program("{core: 9223372036854775808}"), ConfigError);
    CHECK(load_program("{core: 9223372036854775807}").rlimits[0].hard == 9223372036854775807ull);
}

TEST_CASE("rlimits: invalid fixtures name file:line:column and what was expected") {
    CHECK(error_of("rlimit_unknown.yaml") ==
          "4:7: programs.web.rlimits: unknown key \"nofiles\" (did you mean \"nofile\"?); valid "
          "keys: nofile, core, nproc, memlock, stack, as, fsize, cpu, data");
    CHECK(error_of("rlimit_not_a_number.yaml") ==
          "3:23: programs.web.rlimits.nofile: expected a non-negative integer or \"unlimited\", "
          "got \"lots\"");
    CHECK(error_of("rlimit_bad_size.yaml") ==
          "4:11: programs.web.rlimits.as: expected a size like 65536, 512K, 64M or 2G, or "
          "\"unlimited\", got \"2X\"");
    CHECK(error_of("rlimit_soft_above_hard.yaml") ==
          "4:22: programs.web.rlimits.nofile.soft: the soft limit (4096) must not exceed the "
          "hard limit (1024)");
    CHECK(error_of("rlimit_missing_hard.yaml") ==
          "4:13: programs.web.rlimits.core: expected both \"soft\" and \"hard\"");
    CHECK(error_of("rlimit_not_a_map.yaml") ==
          "3:14: programs.web.rlimits: expected a map, got a sequence");
}

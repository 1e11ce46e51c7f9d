#include "common/duration.hpp"

#include <doctest/doctest.h>

#include <cstdint>

using namespace std::chrono_literals;
using clusterd::format_duration;
using clusterd::parse_duration;
using clusterd::parse_size;

TEST_CASE("parse_duration accepts unit groups and a bare zero") {
    struct Case {
        const char* text;
        std::chrono::milliseconds expected;
    };
    const Case cases[] = {
        {"0", 0ms},
        {"0s", 0ms},
        {"0ms", 0ms},
        {"250ms", 250ms},
        {"10s", 10s},
        {"1m", 1min},
        {"1h", 1h},
        {"1h30m", 90min},
        {"1m30s", 90s},
        {"1s500ms", 1500ms},
        {"2h3m4s5ms", 2h + 3min + 4s + 5ms},
        {"90s", 90s},
        {"100000h", 100000h},
    };
    for (const auto& c : cases) {
        CAPTURE(c.text);
        REQUIRE(parse_duration(c.text).has_value());
        CHECK(*parse_duration(c.text) == c.expected);
    }
}

TEST_CASE("parse_duration rejects negative, empty, unitless, unknown units and overflow") {
    const char* bad[] = {"",
                         "-1s",
                         "10",
                         "s",
                         "1.5s",
                         "10 s",
                         " 10s",
                         "10s ",
                         "1d",
                         "1us",
                         "1S",
                         "1sec",
                         "ms",
                         "1h-5m",
                         "+1s",
                         "99999999999999999999s",
                         "9223372036854775807h",
                         "5000000000000h"};
    for (const char* text : bad) {
        CAPTURE(text);
        CHECK_FALSE(parse_duration(text).has_value());
    }
}

TEST_CASE("parse_size reads K/M/G/T as powers of 1024 with optional B or iB") {
    struct Case {
        const char* text;
        std::uint64_t expected;
    };
    const Case cases[] = {
        {"0", 0},
        {"1024", 1024},
        {"1024B", 1024},
        {"1K", 1024},
        {"1k", 1024},
        {"4KB", 4096},
        {"4KiB", 4096},
        {"512M", 512ull << 20},
        {"512MiB", 512ull << 20},
        {"2G", 2ull << 30},
        {"2GB", 2ull << 30},
        {"3T", 3ull << 40},
        {"16777215T", 16777215ull << 40},
    };
    for (const auto& c : cases) {
        CAPTURE(c.text);
        REQUIRE(parse_size(c.text).has_value());
        CHECK(*parse_size(c.text) == c.expected);
    }
}

TEST_CASE("parse_size rejects fractions, unknown units, negatives and overflow") {
    const char* bad[] = {"",    "M",    "1.5G", "-1",  "1P",        "1iB",
                         "1Mi", "1MBB", "1 M",  "10b", "16777216T", "18446744073709551616"};
    for (const char* text : bad) {
        CAPTURE(text);
        CHECK_FALSE(parse_size(text).has_value());
    }
}

TEST_CASE("format_duration prints the shortest human form") {
    CHECK(format_duration(0ms) == "0s");
    CHECK(format_duration(250ms) == "250ms");
    CHECK(format_duration(1s) == "1s");
    CHECK(format_duration(1500ms) == "1.5s");
    CHECK(format_duration(1250ms) == "1.25s");
    CHECK(format_duration(10s) == "10s");
    CHECK(format_duration(2min + 3s) == "2m3s");
    CHECK(format_duration(2min) == "2m");
    CHECK(format_duration(1h + 2min) == "1h2m");
    CHECK(format_duration(1h + 30s) == "1h30s");
    CHECK(format_duration(-1500ms) == "-1.5s");
}

TEST_CASE("format_duration output parses back when it has no fraction") {
    for (auto d : {250ms, 1000ms, 61000ms, 3600000ms, 3723000ms}) {
        CAPTURE(d.count());
        CHECK(parse_duration(format_duration(d)) == d);
    }
}

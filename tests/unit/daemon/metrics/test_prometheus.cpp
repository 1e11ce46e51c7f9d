// The Prometheus text format: escaping, value formatting and the naming rules.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "daemon/metrics/prometheus.hpp"

using namespace clusterd::prometheus;

TEST_CASE("prometheus: a counter and a gauge family, HELP and TYPE first") {
    std::vector<Family> families;
    families.push_back(counter("clusterd_worker_restarts_total", "Workers restarted.")
                           .add({{"program", "web"}, {"slot", "0"}}, 3)
                           .add({{"program", "web"}, {"slot", "1"}}, 0));
    families.push_back(gauge("clusterd_workers", "Workers by state.")
                           .add({{"program", "web"}, {"state", "ready"}}, 2));
    families.push_back(gauge("clusterd_up", "Always 1.").add({}, 1));
    CHECK(format(families) ==
          "# HELP clusterd_worker_restarts_total Workers restarted.\n"
          "# TYPE clusterd_worker_restarts_total counter\n"
          "clusterd_worker_restarts_total{program=\"web\",slot=\"0\"} 3\n"
          "clusterd_worker_restarts_total{program=\"web\",slot=\"1\"} 0\n"
          "# HELP clusterd_workers Workers by state.\n"
          "# TYPE clusterd_workers gauge\n"
          "clusterd_workers{program=\"web\",state=\"ready\"} 2\n"
          "# HELP clusterd_up Always 1.\n"
          "# TYPE clusterd_up gauge\n"
          "clusterd_up 1\n");
}

TEST_CASE("prometheus: label values escape backslash, quote and newline; HELP escapes two") {
    CHECK(escape_label_value(R"(a\b"c)"
                             "\n"
                             "d") == R"(a\\b\"c\nd)");
    CHECK(escape_label_value("plain ü") == "plain ü");
    CHECK(escape_help("a\\b \"q\"\nc") == "a\\\\b \"q\"\\nc");
    std::string out;
    append_family(out, gauge("x", "h").add({{"path", "/a\"b"}}, 1));
    CHECK(out == "# HELP x h\n# TYPE x gauge\nx{path=\"/a\\\"b\"} 1\n");
}

TEST_CASE("prometheus: values") {
    CHECK(format_value(0) == "0");
    CHECK(format_value(42) == "42");
    CHECK(format_value(-7) == "-7");
    CHECK(format_value(0.25) == "0.25");
    CHECK(format_value(1e-6) == "1e-06");
    CHECK(format_value(1.5e300) == "1.5e+300");
    CHECK(format_value(std::numeric_limits<double>::infinity()) == "+Inf");
    CHECK(format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
    CHECK(format_value(std::nan("")) == "NaN");
    CHECK(std::stod(format_value(0.1 + 0.2)) == 0.1 + 0.2);
}

TEST_CASE("prometheus: names") {
    CHECK(valid_metric_name("clusterd_up"));
    CHECK(valid_metric_name("ns:rule_name"));
    CHECK(valid_metric_name("_x9"));
    CHECK_FALSE(valid_metric_name(""));
    CHECK_FALSE(valid_metric_name("9x"));
    CHECK_FALSE(valid_metric_name("a-b"));
    CHECK(valid_label_name("program"));
    CHECK_FALSE(valid_label_name("__name__"));
    CHECK_FALSE(valid_label_name("a:b"));
    CHECK_FALSE(valid_label_name("1a"));
}

TEST_CASE("prometheus: bad families are errors naming the family") {
    std::string out;
    CHECK_THROWS_WITH_AS(append_family(out, counter("clusterd_restarts", "h")),
                         doctest::Contains("clusterd_restarts"), std::invalid_argument);
    CHECK_THROWS_AS(append_family(out, gauge("clusterd_uptime_milliseconds", "h")),
                    std::invalid_argument);
    CHECK_THROWS_AS(append_family(out, counter("clusterd_sent_kilobytes_total", "h")),
                    std::invalid_argument);
    CHECK_THROWS_AS(append_family(out, gauge("bad-name", "h")), std::invalid_argument);
    CHECK_THROWS_AS(append_family(out, gauge("x", "h").add({{"__x", "1"}}, 1)),
                    std::invalid_argument);
    CHECK_THROWS_AS(append_family(out, gauge("x", "h").add({{"a", "1"}, {"a", "2"}}, 1)),
                    std::invalid_argument);
    CHECK_THROWS_AS(format({gauge("x", "h"), gauge("x", "h")}), std::invalid_argument);
    CHECK_NOTHROW(append_family(out, gauge("clusterd_start_time_seconds", "h")));
}

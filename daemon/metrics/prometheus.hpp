// The Prometheus text exposition format, version 0.0.4, for the master's /metrics.
//
// A family is `# HELP name text`, `# TYPE name counter|gauge|untyped`, then one line per
// sample: `name{label="value",...} value`. Label values escape \ " and newline; HELP text
// escapes \ and newline. Names follow the Prometheus conventions, checked here so that a
// bad name fails in a unit test rather than in someone's scrape: [a-zA-Z_:][a-zA-Z0-9_:]*,
// counters end in `_total`, and quantities are in base units (`_seconds`, `_bytes`, never
// `_milliseconds` or `_kilobytes`).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace clusterd::prometheus {

/// The Content-Type of a /metrics response.
inline constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

/// How Prometheus treats a family's values.
enum class MetricType { counter, gauge, untyped };

/// One label: name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`) and value (any UTF-8).
using Label = std::pair<std::string, std::string>;

/// One line of a family: its labels and its value.
struct Sample {
    std::vector<Label> labels;
    double value = 0;
};

/// A metric family: every sample shares the name, help and type.
struct Family {
    std::string name;
    std::string help;
    MetricType type = MetricType::gauge;
    std::vector<Sample> samples;

    /// Adds a sample; returns *this for chaining.
    Family& add(std::vector<Label> labels, double value);
};

/// A counter family; `name` must end in `_total`.
Family counter(std::string name, std::string help);
/// A gauge family.
Family gauge(std::string name, std::string help);

/// True for a valid metric name.
bool valid_metric_name(std::string_view name);
/// True for a valid label name (reserved `__` prefixes are invalid).
bool valid_label_name(std::string_view name);
/// `value` with \ " and newline escaped, for inside the quotes of a label.
std::string escape_label_value(std::string_view value);
/// `text` with \ and newline escaped, for a HELP line.
std::string escape_help(std::string_view text);
/// A sample value: integers without exponent or fraction ("42"), "+Inf", "-Inf", "NaN",
/// else the shortest text that reads back as the same double.
std::string format_value(double value);

/// Appends one family to `out`. Throws std::invalid_argument naming the family for a bad
/// metric or label name, a counter not ending in `_total`, a non-base unit suffix, or a
/// label name repeated within a sample. A family without samples still gets HELP and TYPE.
void append_family(std::string& out, const Family& family);
/// All families, in order; the same family name twice is std::invalid_argument.
std::string format(const std::vector<Family>& families);

}  // namespace clusterd::prometheus

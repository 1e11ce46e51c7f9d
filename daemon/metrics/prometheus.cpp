#include "daemon/metrics/prometheus.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <unordered_set>

namespace clusterd::prometheus {

namespace {

bool name_char(char c, bool first, bool colon) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
    if (colon && c == ':') return true;
    return !first && c >= '0' && c <= '9';
}

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Scaled units Prometheus asks us not to use: expose seconds and bytes.
constexpr std::string_view non_base_units[] = {
    "_milliseconds", "_microseconds", "_nanoseconds", "_ms",        "_us",
    "_minutes",      "_hours",        "_kilobytes",   "_megabytes", "_gigabytes",
};

[[noreturn]] void invalid(const Family& f, const std::string& what) {
    throw std::invalid_argument("metric family \"" + f.name + "\": " + what);
}

void check(const Family& f) {
    if (!valid_metric_name(f.name)) invalid(f, "not a valid metric name");
    if (f.type == MetricType::counter && !ends_with(f.name, "_total"))
        invalid(f, "a counter's name must end in _total");
    std::string_view base = f.name;
    if (ends_with(base, "_total")) base.remove_suffix(6);
    for (auto unit : non_base_units)
        if (ends_with(base, unit))
            invalid(f, "use base units (seconds, bytes), not " + std::string(unit.substr(1)));
}

void append_sample(std::string& out, const Family& f, const Sample& s) {
    out += f.name;
    if (!s.labels.empty()) {
        out += '{';
        for (std::size_t i = 0; i < s.labels.size(); ++i) {
            const auto& [name, value] = s.labels[i];
            if (!valid_label_name(name)) invalid(f, "not a valid label name: \"" + name + "\"");
            for (std::size_t j = 0; j < i; ++j)
                if (s.labels[j].first == name) invalid(f, "label \"" + name + "\" repeated");
            if (i > 0) out += ',';
            out += name;
            out += "=\"";
            out += escape_label_value(value);
            out += '"';
        }
        out += '}';
    }
    out += ' ';
    out += format_value(s.value);
    out += '\n';
}

}  // namespace

Family& Family::add(std::vector<Label> labels, double value) {
    samples.push_back({std::move(labels), value});
    return *this;
}

Family counter(std::string name, std::string help) {
    return {std::move(name), std::move(help), MetricType::counter, {}};
}

Family gauge(std::string name, std::string help) {
    return {std::move(name), std::move(help), MetricType::gauge, {}};
}

bool valid_metric_name(std::string_view name) {
    if (name.empty()) return false;
    for (std::size_t i = 0; i < name.size(); ++i)
        if (!name_char(name[i], i == 0, true)) return false;
    return true;
}

bool valid_label_name(std::string_view name) {
    if (name.empty() || name.starts_with("__")) return false;
    for (std::size_t i = 0; i < name.size(); ++i)
        if (!name_char(name[i], i == 0, false)) return false;
    return true;
}

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

std::string escape_help(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

std::string format_value(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
    char buf[32];
    // Integral values within 2^53 print as integers: counters and counts read naturally.
    if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0) {
        auto end = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(value)).ptr;
        return {buf, end};
    }
    // The shortest text that reads back as the same double (fmt's, as std::to_chars would
    // give, without pulling libstdc++'s floating to_chars and with it libm into the binary).
    return fmt::format("{}", value);
}

void append_family(std::string& out, const Family& family) {
    check(family);
    out += "# HELP ";
    out += family.name;
    out += ' ';
    out += escape_help(family.help);
    out += "\n# TYPE ";
    out += family.name;
    switch (family.type) {
        case MetricType::counter:
            out += " counter\n";
            break;
        case MetricType::gauge:
            out += " gauge\n";
            break;
        case MetricType::untyped:
            out += " untyped\n";
            break;
    }
    for (const auto& s : family.samples) append_sample(out, family, s);
}

std::string format(const std::vector<Family>& families) {
    std::string out;
    std::unordered_set<std::string_view> seen;
    for (const auto& f : families) {
        if (!seen.insert(f.name).second) invalid(f, "exposed twice");
        append_family(out, f);
    }
    return out;
}

}  // namespace clusterd::prometheus

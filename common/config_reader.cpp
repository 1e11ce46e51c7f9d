#include "common/config_reader.hpp"

#include <algorithm>
#include <charconv>
#include <map>

#include "common/duration.hpp"
#include "common/limits.hpp"

namespace clusterd::detail {

namespace {

char lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

/// Edit distance, to suggest the key a typo meant.
std::size_t distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t above = row[j];
            std::size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string unknown_key_message(std::string_view key,
                                std::initializer_list<std::string_view> valid) {
    std::string message = "unknown key \"" + std::string(key) + "\"";
    std::string_view best;
    std::size_t best_distance = 3;  // suggest only close misspellings
    for (auto name : valid) {
        std::size_t d = distance(key, name);
        if (d < best_distance) {
            best = name;
            best_distance = d;
        }
    }
    if (!best.empty()) message += " (did you mean \"" + std::string(best) + "\"?)";
    message += "; valid keys: ";
    bool first = true;
    for (auto name : valid) {
        message += first ? "" : ", ";
        message += name;
        first = false;
    }
    return message;
}

}  // namespace

void ConfigReader::error(const YAML::Mark& mark, const std::string& path,
                         const std::string& message) {
    Diagnostic d;
    d.file = file_;
    d.line = mark.line >= 0 ? mark.line + 1 : 0;
    d.column = mark.column >= 0 ? mark.column + 1 : 0;
    d.message = path.empty() ? message : path + ": " + message;
    diagnostics_.push_back(std::move(d));
}

void ConfigReader::expected(const Item& item, const std::string& what) {
    error(item.mark, item.path, "expected " + what + ", got " + describe(item.node));
}

std::string ConfigReader::position(const YAML::Mark& mark) const {
    return file_ + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

bool ConfigReader::fields(const Item& item, std::initializer_list<std::string_view> valid,
                          const Handler& on_key) {
    return entries(item, [&](const YAML::Node& key, const Item& value) {
        const std::string& name = key.Scalar();
        if (std::find(valid.begin(), valid.end(), name) == valid.end()) {
            error(key.Mark(), item.path, unknown_key_message(name, valid));
            return;
        }
        on_key(name, value);
    });
}

bool ConfigReader::entries(
    const Item& item,
    const std::function<void(const YAML::Node& key, const Item& value)>& on_entry) {
    if (item.node.IsNull()) return true;
    if (!item.node.IsMap()) {
        expected(item, "a map");
        return false;
    }
    // yaml-cpp keeps duplicate keys and answers lookups with the first: report the others.
    std::map<std::string, YAML::Mark> seen;
    for (auto it = item.node.begin(); it != item.node.end(); ++it) {
        const YAML::Node key = it->first;  // a copy: `it->` yields a temporary proxy
        if (!key.IsScalar()) {
            error(key.Mark(), item.path, "expected a string key, got " + describe(key));
            continue;
        }
        auto [first, inserted] = seen.emplace(key.Scalar(), key.Mark());
        if (!inserted) {
            error(key.Mark(), item.path,
                  "duplicate key \"" + key.Scalar() + "\" (first at " + position(first->second) +
                      ")");
            continue;
        }
        on_entry(key, child(item.path, key, it->second));
    }
    return true;
}

std::optional<std::vector<Item>> ConfigReader::sequence(const Item& item, const std::string& what) {
    std::vector<Item> items;
    if (item.node.IsNull()) return items;
    if (!item.node.IsSequence()) {
        expected(item, what);
        return std::nullopt;
    }
    std::size_t index = 0;
    for (const auto& value : item.node) items.push_back(element(item.path, index++, value));
    return items;
}

std::optional<std::string> ConfigReader::string(const Item& item) {
    if (item.node.IsScalar()) return item.node.Scalar();
    expected(item, "a string");
    return std::nullopt;
}

std::optional<bool> ConfigReader::boolean(const Item& item) {
    if (item.node.IsScalar()) {
        std::string text = item.node.Scalar();
        std::transform(text.begin(), text.end(), text.begin(), lower);
        if (text == "true" || text == "yes" || text == "on") return true;
        if (text == "false" || text == "no" || text == "off") return false;
    }
    expected(item, "true or false");
    return std::nullopt;
}

std::optional<long long> ConfigReader::integer(const Item& item, long long min, long long max) {
    if (item.node.IsScalar()) {
        const std::string& text = item.node.Scalar();
        long long value = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec == std::errc{} && end == text.data() + text.size() && !text.empty() &&
            value >= min && value <= max) {
            return value;
        }
    }
    expected(item, "an integer from " + std::to_string(min) + " to " + std::to_string(max));
    return std::nullopt;
}

std::optional<Duration> ConfigReader::duration(const Item& item, bool allow_zero) {
    if (item.node.IsScalar()) {
        if (auto d = parse_duration(item.node.Scalar())) {
            if (*d > limits::kMaxDuration) {
                expected(item, "a duration of at most " + format_duration(limits::kMaxDuration));
                return std::nullopt;
            }
            if (allow_zero || d->count() > 0) return *d;
            expected(item, "a duration greater than 0");
            return std::nullopt;
        }
    }
    expected(item, "a duration like 250ms, 10s, 1m or 1h30m");
    return std::nullopt;
}

std::string describe(const YAML::Node& node) {
    if (!node.IsDefined() || node.IsNull()) return "nothing";
    if (node.IsMap()) return "a map";
    if (node.IsSequence()) return "a sequence";
    const std::string& text = node.Scalar();
    if (text.size() > 60) {
        // Cut at a character boundary: messages go out as JSON, which must be UTF-8.
        std::size_t cut = 57;
        while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
        return "\"" + text.substr(0, cut) + "...\"";
    }
    return "\"" + text + "\"";
}

Item child(const std::string& parent_path, const YAML::Node& key, const YAML::Node& value) {
    // An empty value ("cores:") has the position of whatever follows it: point at the key.
    return Item{value, value.IsNull() ? key.Mark() : value.Mark(),
                parent_path.empty() ? key.Scalar() : parent_path + "." + key.Scalar()};
}

Item element(const std::string& parent_path, std::size_t index, const YAML::Node& value) {
    return Item{value, value.Mark(), parent_path + "[" + std::to_string(index) + "]"};
}

/// The length of the UTF-8 sequence that starts `text` at `i`, or 0 when it is not valid
/// (overlong forms, surrogates and code points above U+10FFFF included).
std::size_t utf8_length(std::string_view text, std::size_t i) {
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
    unsigned char c = byte(i);
    if (c < 0x80) return 1;
    std::size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (n == 0 || c > 0xF4 || i + n > text.size()) return 0;
    for (std::size_t k = 1; k < n; ++k)
        if ((byte(i + k) & 0xC0) != 0x80) return 0;
    unsigned char c1 = byte(i + 1);
    if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
    if (c == 0xED && c1 >= 0xA0) return 0;  // UTF-16 surrogate
    if (c == 0xF0 && c1 < 0x90) return 0;   // overlong
    if (c == 0xF4 && c1 >= 0x90) return 0;  // above U+10FFFF
    return n;
}

bool is_simple_name(std::string_view name) {
    if (name.empty()) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    });
}

}  // namespace clusterd::detail

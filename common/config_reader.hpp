// Private to the config loader: walks a yaml-cpp document, converts scalars and collects a
// Diagnostic for every problem instead of stopping at the first.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.hpp"

namespace clusterd::detail {

/// A value in the document: the node, where to report it, and its dotted path.
struct Item {
    YAML::Node node;
    YAML::Mark mark;   // the value's position; the key's when the value is empty
    std::string path;  // "programs.web.cores"
};

/// Collects diagnostics while reading one config document.
class ConfigReader {
  public:
    using Handler = std::function<void(const std::string& key, const Item& value)>;

    explicit ConfigReader(std::string file) : file_(std::move(file)) {}

    /// Records "path: message" at `mark`.
    void error(const YAML::Mark& mark, const std::string& path, const std::string& message);

    /// Records "item.path: expected <what>, got <item's value>".
    void expected(const Item& item, const std::string& what);

    /// Positions "line L, column C" of `mark`, for messages that point back.
    std::string position(const YAML::Mark& mark) const;

    /// The file this reader reports in.
    const std::string& file() const { return file_; }

    bool ok() const { return diagnostics_.empty(); }
    std::vector<Diagnostic>& diagnostics() { return diagnostics_; }

    /// Walks a map with a fixed set of keys: reports a non-map, unknown keys (listing
    /// `valid`) and duplicates, and calls `on_key` for the first occurrence of each valid
    /// key. Returns false when `item` is not a map.
    bool fields(const Item& item, std::initializer_list<std::string_view> valid,
                const Handler& on_key);

    /// Walks a map with free-form keys (program names, env): reports a non-map, non-string
    /// keys and duplicates; calls `on_entry` with the key's mark in `value.mark` when the
    /// value is empty. Returns false when `item` is not a map.
    bool entries(const Item& item,
                 const std::function<void(const YAML::Node& key, const Item& value)>& on_entry);

    /// The elements of a sequence, or nullopt (reported) when `item` is not one.
    std::optional<std::vector<Item>> sequence(const Item& item, const std::string& what);

    std::optional<std::string> string(const Item& item);
    std::optional<bool> boolean(const Item& item);
    std::optional<long long> integer(const Item& item, long long min, long long max);
    std::optional<Duration> duration(const Item& item, bool allow_zero = true);

    /// One of `choices` ("notify" -> ReadyMode::notify).
    template <class T>
    std::optional<T> choice(const Item& item,
                            std::initializer_list<std::pair<std::string_view, T>> choices) {
        if (item.node.IsScalar()) {
            for (const auto& [name, value] : choices) {
                if (item.node.Scalar() == name) return value;
            }
        }
        std::string names;
        std::size_t i = 0;
        for (const auto& choice : choices) {
            if (i > 0) names += i + 1 == choices.size() ? " or " : ", ";
            names += '"' + std::string(choice.first) + '"';
            ++i;
        }
        expected(item, names);
        return std::nullopt;
    }

  private:
    std::string file_;
    std::vector<Diagnostic> diagnostics_;
};

/// How a value reads in a message: "\"lots\"", "a map", "a sequence", "nothing".
std::string describe(const YAML::Node& node);

/// The item for `value` under `key` of a map at `parent_path`.
Item child(const std::string& parent_path, const YAML::Node& key, const YAML::Node& value);

/// The item for element `index` of a sequence at `parent_path`.
Item element(const std::string& parent_path, std::size_t index, const YAML::Node& value);

/// A program as read, with the positions of what the whole-config checks look at.
struct ParsedProgram {
    ProgramConfig config;
    std::vector<YAML::Mark> listen_marks;  // one per config.listen entry
    std::vector<Item> env_file_items;      // one per config.env_files entry
    std::vector<Item> depends_items;       // one per config.depends_on entry
};

/// Reads one entry of `programs:`; problems go to `reader`. `folder`: the folder of the file
/// it is in, which relative `env_file:` paths are resolved against. The env files are not read
/// here: `config.env` holds `env:` only.
ParsedProgram read_program(ConfigReader& reader, const YAML::Node& key, const Item& value,
                           const std::string& folder);

/// The text of a regular file of at most `max_bytes` (see read_config_file, which this is with
/// limits::kMaxConfigBytes). `missing_ok`: nullopt when it does not exist. Throws ConfigError.
std::optional<std::string> read_regular_file(const std::string& path, std::size_t max_bytes,
                                             bool missing_ok = false);

/// `path` made absolute against `folder` (when it is relative) and lexically normal.
std::string resolve_path(const std::string& folder, const std::string& path);

/// Reads `rlimits:` (common/config_rlimits.cpp).
void read_rlimits(ConfigReader& reader, const Item& item, ProgramConfig& program);

/// Splits "host:port" / "[v6]:port" with a numeric host into the canonical host (as
/// inet_ntop prints it) and port. On failure returns false and says why in `problem`.
bool parse_host_port(std::string_view text, std::string& host, std::uint16_t& port,
                     std::string& problem);

/// The length of the UTF-8 sequence that starts `text` at `i`, or 0 when it is not valid
/// (overlong forms, surrogates and code points above U+10FFFF included).
std::size_t utf8_length(std::string_view text, std::size_t i);

/// True for names that may go into an env var value or an fd name: [A-Za-z0-9_.-]+.
bool is_simple_name(std::string_view name);

}  // namespace clusterd::detail

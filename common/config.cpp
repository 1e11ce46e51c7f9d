#include "common/config.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <filesystem>
#include <optional>
#include <set>
#include <system_error>
#include <tuple>

#include "common/config_reader.hpp"
#include "common/env_file.hpp"
#include "common/fd.hpp"
#include "common/limits.hpp"

namespace clusterd {

namespace {

using detail::ConfigReader;
using detail::Item;

std::string join(const std::vector<Diagnostic>& diagnostics) {
    std::string text;
    for (const auto& d : diagnostics) {
        if (!text.empty()) text += '\n';
        text += d.to_string();
    }
    return text;
}

/// A socket the config binds, for the whole-config overlap check.
struct Endpoint {
    std::string host;
    std::uint16_t port;
    YAML::Mark mark;
    std::string path;      // "programs.web.listen[0].address", where a conflict is reported
    std::string owner;     // "programs.web.listen[0]", how the other side names it
    ConfigReader* reader;  // of the file it is in
};

bool is_wildcard(const std::string& host) {
    return host == "0.0.0.0" || host == "::";
}

bool is_ipv6(const std::string& host) {
    return host.find(':') != std::string::npos;
}

/// Two sockets that cannot both be bound: the same address, or a wildcard and an address
/// of the same family on the same port (with SO_REUSEPORT the kernel would even accept
/// both and split one program's connections with another's).
bool overlaps(const Endpoint& a, const Endpoint& b) {
    if (a.port != b.port) return false;
    if (a.host == b.host) return true;
    return is_ipv6(a.host) == is_ipv6(b.host) && (is_wildcard(a.host) || is_wildcard(b.host));
}

std::string address_of(const Endpoint& e) {
    return ListenConfig{.name = {}, .host = e.host, .port = e.port}.address();
}

void check_endpoints(const std::vector<Endpoint>& endpoints) {
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
            const Endpoint& later = endpoints[i];
            const Endpoint& earlier = endpoints[j];
            if (!overlaps(later, earlier)) continue;
            std::string what = address_of(later) == address_of(earlier)
                                   ? " is already used by "
                                   : " overlaps " + address_of(earlier) + " of ";
            later.reader->error(later.mark, later.path,
                                address_of(later) + what + earlier.owner + " at " +
                                    earlier.reader->position(earlier.mark));
            break;
        }
    }
}

void read_daemon(ConfigReader& r, const Item& item, DaemonConfig& d,
                 std::vector<Endpoint>& endpoints) {
    r.fields(item,
             {"control", "control_group", "state_dir", "log_level", "log_file", "metrics",
              "shutdown_timeout"},
             [&](const std::string& key, const Item& v) {
                 if (key == "control") {
                     auto s = r.string(v);
                     // sun_path holds 108 bytes including the terminating NUL.
                     if (s && (!s->starts_with("/") || s->size() > 107)) {
                         r.expected(v, "an absolute socket path of at most 107 bytes");
                     } else if (s) {
                         d.control = *s;
                     }
                 } else if (key == "control_group") {
                     if (auto s = r.string(v)) d.control_group = *s;
                 } else if (key == "state_dir") {
                     auto s = r.string(v);
                     if (s && !s->starts_with("/")) {
                         r.expected(v, "an absolute directory path");
                     } else if (s) {
                         d.state_dir = *s;
                     }
                 } else if (key == "log_level") {
                     auto level = r.choice<std::string_view>(v, {{"trace", "trace"},
                                                                 {"debug", "debug"},
                                                                 {"info", "info"},
                                                                 {"warn", "warn"},
                                                                 {"error", "error"}});
                     if (level) d.log_level = std::string(*level);
                 } else if (key == "log_file") {
                     if (auto s = r.string(v)) d.log_file = *s;
                 } else if (key == "metrics") {
                     auto s = r.string(v);
                     if (!s || s->empty()) {
                         if (s) d.metrics.clear();
                         return;
                     }
                     Endpoint e{{}, 0, v.mark, v.path, v.path, &r};
                     std::string problem;
                     if (!detail::parse_host_port(*s, e.host, e.port, problem)) {
                         r.error(v.mark, v.path,
                                 R"(expected "" or "host:port" like "127.0.0.1:9464", got )" +
                                     detail::describe(v.node) + " (" + problem + ")");
                         return;
                     }
                     d.metrics = address_of(e);
                     endpoints.push_back(std::move(e));
                 } else if (key == "shutdown_timeout") {
                     if (auto t = r.duration(v)) d.shutdown_timeout = *t;
                 }
             });
}

[[noreturn]] void fail(const std::string& file, int line, int column, const std::string& what) {
    throw ConfigError({Diagnostic{file, line, column, what}});
}

std::string system_message(int error) {
    return std::error_code(error, std::system_category()).message();
}

/// Refuses what YAML cannot hold or yaml-cpp would misreport: more than the size limit, a NUL
/// byte, bytes that are not UTF-8. Positions count characters, as yaml-cpp's do.
void check_text(const std::string& text, const std::string& source) {
    if (text.size() > limits::kMaxConfigBytes)
        fail(source, 0, 0,
             "is " + std::to_string(text.size()) + " bytes, more than the " +
                 std::to_string(limits::kMaxConfigBytes >> 20) + " MiB limit");
    int line = 1;
    int column = 1;
    for (std::size_t i = 0; i < text.size();) {
        if (text[i] == '\0')
            fail(source, line, column,
                 "contains a NUL byte at " + std::to_string(line) + ":" + std::to_string(column) +
                     " (a config is UTF-8 text)");
        std::size_t n = detail::utf8_length(text, i);
        if (n == 0)
            fail(source, line, column,
                 "invalid UTF-8 at " + std::to_string(line) + ":" + std::to_string(column) +
                     " (a config is UTF-8 text)");
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
        i += n;
    }
}

/// Reports the first node nested deeper than kMaxConfigDepth (iteratively: the check must
/// not itself recurse as deep as the input).
void check_depth(ConfigReader& r, const YAML::Node& root) {
    std::vector<std::pair<YAML::Node, int>> stack{{root, 1}};
    std::size_t visited = 0;
    while (!stack.empty()) {
        auto [node, depth] = stack.back();
        stack.pop_back();
        // Aliases are walked at every use: a few lines can name a billion nodes.
        if (++visited > limits::kMaxConfigNodes) {
            r.error(node.Mark(), "",
                    "more than " + std::to_string(limits::kMaxConfigNodes) +
                        " YAML nodes (aliases count at every use)");
            return;
        }
        if (!node.IsMap() && !node.IsSequence()) continue;
        if (depth > limits::kMaxConfigDepth) {
            r.error(node.Mark(), "",
                    "nesting deeper than " + std::to_string(limits::kMaxConfigDepth) +
                        " levels at " + std::to_string(node.Mark().line + 1) + ":" +
                        std::to_string(node.Mark().column + 1));
            return;
        }
        for (auto it = node.begin(); it != node.end(); ++it) {
            if (node.IsMap()) {
                stack.emplace_back(it->first, depth + 1);
                stack.emplace_back(it->second, depth + 1);
            } else {
                stack.emplace_back(*it, depth + 1);
            }
        }
    }
}

struct DocumentLines {
    int first_content = -1;    // 0-based line of the first line that is not blank or a comment
    int second_document = -1;  // 0-based line of a "---" that starts a second document
};

/// Where the document starts, and whether a "---" after it starts another one.
DocumentLines scan_lines(std::string_view text) {
    DocumentLines out;
    int line = 0;
    while (!text.empty()) {
        auto end = text.find('\n');
        std::string_view l = text.substr(0, end);
        bool marker =
            l.starts_with("---") && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
        if (marker && out.first_content >= 0 && out.second_document < 0) out.second_document = line;
        auto first = l.find_first_not_of(" \t\r");
        if (out.first_content < 0 && !marker && first != std::string_view::npos &&
            l[first] != '#' && l[first] != '%')
            out.first_content = line;
        if (end == std::string_view::npos) break;
        text.remove_prefix(end + 1);
        ++line;
    }
    return out;
}

/// Records the position of every value down to the depth the config's keys go (a hook's
/// programs.NAME.hooks[I].command[J] is the deepest). `file`: "" for the main config file.
void record_positions(const YAML::Node& root, const std::string& file,
                      std::map<std::string, Position>& out) {
    std::vector<std::pair<Item, int>> stack{{Item{root, root.Mark(), ""}, 0}};
    while (!stack.empty()) {
        auto [item, depth] = stack.back();
        stack.pop_back();
        if (!item.path.empty()) out[item.path] = {item.mark.line + 1, item.mark.column + 1, file};
        if (depth >= 6) continue;
        if (item.node.IsMap()) {
            for (auto it = item.node.begin(); it != item.node.end(); ++it) {
                const YAML::Node key = it->first;
                if (key.IsScalar())
                    stack.emplace_back(detail::child(item.path, key, it->second), depth + 1);
            }
        } else if (item.node.IsSequence()) {
            std::size_t index = 0;
            for (const auto& value : item.node)
                stack.emplace_back(detail::element(item.path, index++, value), depth + 1);
        }
    }
}

/// The document of one config file, checked (size, encoding, one document, depth), or nullopt
/// with the problems in `r`. `included`: a file `include:` matched, which may be empty.
std::optional<YAML::Node> parse_document(ConfigReader& r, const std::string& text, bool included) {
    try {
        check_text(text, r.file());
    } catch (const ConfigError& e) {
        for (const Diagnostic& d : e.diagnostics()) r.diagnostics().push_back(d);
        return std::nullopt;
    }
    // One document only, read with YAML::Load: yaml-cpp 0.7's LoadAll loops for ever (and
    // grows without bound) on inputs as short as ", *a". A second document is found below.
    YAML::Node document;
    try {
        document = YAML::Load(text);
    } catch (const YAML::DeepRecursion& e) {
        r.error(e.mark, "",
                "nesting deeper than " + std::to_string(limits::kMaxConfigDepth) + " levels at " +
                    std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1));
        return std::nullopt;
    } catch (const YAML::ParserException& e) {
        r.error(e.mark, "", "invalid YAML: " + e.msg);
        return std::nullopt;
    }
    DocumentLines lines = scan_lines(text);
    if (document.IsNull() && !(included && lines.first_content < 0)) {
        YAML::Mark at;
        at.line = std::max(lines.first_content, 0);
        at.column = 0;
        r.error(at, "",
                lines.first_content < 0
                    ? "the config is empty: expected a map with a \"programs\" key"
                    : "expected a map with a \"programs\" key, found no value");
        return std::nullopt;
    }
    if (lines.second_document >= 0) {
        YAML::Mark at;
        at.line = lines.second_document;
        at.column = 0;
        r.error(at, "", "expected one YAML document, found another");
    }
    check_depth(r, document);
    if (!r.ok()) return std::nullopt;
    return document;
}

/// `file` made absolute (against the working directory) and lexically normal.
std::string absolute_of(const std::string& file) {
    std::error_code ec;
    std::filesystem::path path = std::filesystem::absolute(file, ec);
    if (ec) path = file;
    return path.lexically_normal().string();
}

/// The folder relative paths in `file` are resolved against.
std::string folder_of(const std::string& file) {
    return std::filesystem::path(absolute_of(file)).parent_path().string();
}

/// What one load shares across its files: where the other files come from, what was read,
/// the programs so far, and a reader (diagnostics) per config file.
class Loader {
  public:
    Loader(const std::string& source, const ConfigFiles* snapshot)
        : snapshot_(snapshot), main_path_(absolute_of(source)) {
        readers_.emplace_back(source);
    }

    Config load(const std::string& text);

  private:
    /// Where a program was read, for the checks made once every file is read.
    struct Site {
        ConfigReader* reader;
        YAML::Mark key_mark;
        std::string path;  // "programs.web"
        std::vector<Item> depends_items;
    };
    /// An env file as read and parsed, once per load however many programs name it.
    struct EnvFile {
        bool ok = false;  // false: missing (and optional), or its problems are reported
        std::vector<std::pair<std::string, std::string>> vars;
    };

    bool read_programs(ConfigReader& r, const Item& item, const std::string& folder);
    void read_env_files(ConfigReader& r, const detail::ParsedProgram& parsed, ProgramConfig& p);
    const EnvFile& env_file(ConfigReader& r, const EnvFileRef& ref, const Item& item);
    void read_includes(const Item& item);
    std::vector<std::string> matches(ConfigReader& r, const Item& item, const std::string& pattern);
    void read_included(const std::string& path);
    void check_dependencies();
    std::vector<Diagnostic> diagnostics();

    const ConfigFiles* snapshot_;
    std::string main_path_;
    Config config_;
    std::deque<ConfigReader> readers_;  // the main file's first, then each included file's
    std::vector<std::pair<std::string, YAML::Node>> roots_;  // included files, to record positions
    ConfigFiles files_;
    std::map<std::string, EnvFile> env_files_;
    std::vector<std::string> env_order_;  // env files in the order read
    std::vector<Endpoint> endpoints_;
    std::vector<Site> sites_;  // one per config_.programs entry
    std::map<std::string, std::size_t> program_index_;
    std::set<std::string> included_;
};

bool Loader::read_programs(ConfigReader& r, const Item& item, const std::string& folder) {
    return r.entries(item, [&](const YAML::Node& key, const Item& value) {
        detail::ParsedProgram parsed = detail::read_program(r, key, value, folder);
        ProgramConfig& p = parsed.config;
        if (auto [first, inserted] = program_index_.emplace(p.name, config_.programs.size());
            !inserted) {
            const Site& other = sites_[first->second];
            r.error(key.Mark(), "programs",
                    "duplicate program \"" + p.name + "\" (first at " +
                        other.reader->position(other.key_mark) + ")");
            return;
        }
        for (std::size_t i = 0; i < p.listen.size(); ++i) {
            const ListenConfig& l = p.listen[i];
            std::string owner = value.path + ".listen[" + std::to_string(i) + "]";
            endpoints_.push_back(
                {l.host, l.port, parsed.listen_marks[i], owner + ".address", owner, &r});
        }
        read_env_files(r, parsed, p);
        p.source_file = r.file();
        sites_.push_back({&r, key.Mark(), value.path, std::move(parsed.depends_items)});
        config_.programs.push_back(std::move(p));
    });
}

/// Merges the program's env files into its `env:` (files in order, then `env:` over them).
void Loader::read_env_files(ConfigReader& r, const detail::ParsedProgram& parsed,
                            ProgramConfig& p) {
    if (p.env_files.empty()) return;
    std::map<std::string, std::string> env;
    for (std::size_t i = 0; i < p.env_files.size(); ++i) {
        const EnvFile& file = env_file(r, p.env_files[i], parsed.env_file_items[i]);
        for (const auto& [name, value] : file.vars) env[name] = value;
    }
    for (auto& [name, value] : p.env) env[name] = std::move(value);
    p.env = std::move(env);
}

const Loader::EnvFile& Loader::env_file(ConfigReader& r, const EnvFileRef& ref, const Item& item) {
    auto [it, inserted] = env_files_.try_emplace(ref.path);
    EnvFile& file = it->second;
    if (!inserted) return file;
    env_order_.push_back(ref.path);
    // A file that cannot be read names the program and the config line that asks for it.
    std::string asked = " (" + item.path + " at " + r.position(item.mark) + ")";
    std::optional<std::string> text;
    if (snapshot_ != nullptr) {
        if (auto found = snapshot_->find(ref.path); found != snapshot_->end()) {
            text = found->second;
        } else if (!ref.optional) {
            r.diagnostics().push_back(
                Diagnostic{ref.path, 0, 0, "cannot read: " + system_message(ENOENT) + asked});
        }
    } else {
        try {
            text = detail::read_regular_file(ref.path, limits::kMaxEnvFileBytes, ref.optional);
        } catch (const ConfigError& e) {
            for (Diagnostic d : e.diagnostics()) {
                d.message += asked;
                r.diagnostics().push_back(std::move(d));
            }
        }
    }
    if (!text) return file;
    files_[ref.path] = *text;
    try {
        file.vars = parse_env_file(*text, ref.path);
        file.ok = true;
    } catch (const ConfigError& e) {
        for (const Diagnostic& d : e.diagnostics()) r.diagnostics().push_back(d);
    }
    return file;
}

void Loader::read_includes(const Item& item) {
    ConfigReader& r = readers_.front();
    std::vector<Item> patterns;
    if (item.node.IsScalar()) {
        patterns.push_back(item);
    } else if (auto items = r.sequence(item, "a glob pattern or a sequence of glob patterns")) {
        patterns = std::move(*items);
    }
    std::vector<std::string> paths;
    bool too_many = false;
    for (const Item& p : patterns) {
        auto pattern = r.string(p);
        if (!pattern) continue;
        if (pattern->empty()) {
            r.expected(p, "a glob pattern like \"conf.d/*.yaml\"");
            continue;
        }
        std::string resolved = detail::resolve_path(folder_of(main_path_), *pattern);
        config_.include.push_back(resolved);
        for (std::string& path : matches(r, p, resolved)) {
            // The main file matched by its own folder's pattern, or a file matched twice: once.
            if (path == main_path_ || !included_.insert(path).second) continue;
            if (paths.size() == limits::kMaxIncludedFiles) {
                if (!too_many)
                    r.error(p.mark, p.path,
                            "more than " + std::to_string(limits::kMaxIncludedFiles) +
                                " included files");
                too_many = true;
                break;
            }
            paths.push_back(std::move(path));
        }
    }
    for (const std::string& path : paths) read_included(path);
}

/// The files `pattern` matches, sorted: glob(3) on the disk, fnmatch(3) over the snapshot.
std::vector<std::string> Loader::matches(ConfigReader& r, const Item& item,
                                         const std::string& pattern) {
    std::vector<std::string> out;
    if (snapshot_ != nullptr) {
        for (const auto& [path, text] : *snapshot_)
            if (::fnmatch(pattern.c_str(), path.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0)
                out.push_back(path);
        return out;  // a map's keys are sorted
    }
    glob_t g{};
    int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    if (rc == 0) {
        for (std::size_t i = 0; i < g.gl_pathc; ++i)
            out.push_back(detail::resolve_path("/", g.gl_pathv[i]));
    } else if (rc != GLOB_NOMATCH) {
        r.error(item.mark, item.path,
                "cannot match " + pattern + ": " +
                    (rc == GLOB_NOSPACE ? "out of memory" : "read error"));
    }
    ::globfree(&g);
    std::sort(out.begin(), out.end());
    return out;
}

void Loader::read_included(const std::string& path) {
    ConfigReader& r = readers_.emplace_back(path);
    std::string text;
    if (snapshot_ != nullptr) {
        text = snapshot_->at(path);  // it matched a key
    } else {
        try {
            text = read_config_file(path);
        } catch (const ConfigError& e) {
            for (const Diagnostic& d : e.diagnostics()) r.diagnostics().push_back(d);
            return;
        }
    }
    files_[path] = text;
    auto root = parse_document(r, text, true);
    if (!root || root->IsNull()) return;
    bool has_programs = false;
    bool is_map =
        r.fields(Item{*root, root->Mark(), ""}, {"programs", "daemon", "include"},
                 [&](const std::string& key, const Item& value) {
                     if (key == "programs") {
                         has_programs = true;
                         read_programs(r, value, folder_of(path));
                     } else {
                         r.error(value.mark, key,
                                 "only the main config (" + main_path_ +
                                     ") has this key: an included file has only \"programs\"");
                     }
                 });
    if (is_map && !has_programs) r.error(root->Mark(), "", "missing required key \"programs\"");
    roots_.emplace_back(path, *root);
}

/// Every depends_on names a program, and the programs depend on each other without a cycle.
void Loader::check_dependencies() {
    const std::vector<ProgramConfig>& programs = config_.programs;
    std::string names;
    for (std::size_t i = 0; i < programs.size() && i < 20; ++i)
        names += (i == 0 ? "" : ", ") + programs[i].name;
    if (programs.size() > 20) names += ", ...";
    // edges[i]: (program it depends on, index of the depends_on element).
    std::vector<std::vector<std::pair<std::size_t, std::size_t>>> edges(programs.size());
    for (std::size_t i = 0; i < programs.size(); ++i) {
        const Site& site = sites_[i];
        for (std::size_t j = 0; j < programs[i].depends_on.size(); ++j) {
            const std::string& name = programs[i].depends_on[j];
            auto it = program_index_.find(name);
            if (it == program_index_.end()) {
                const Item& at = site.depends_items[j];
                site.reader->error(at.mark, at.path,
                                   "no program \"" + name + "\" (programs: " + names + ")");
                continue;
            }
            edges[i].emplace_back(it->second, j);
        }
    }
    // Depth first, iteratively (the chain may be as long as the config is): an edge back to a
    // program on the stack closes a cycle, reported at that edge's depends_on element.
    enum class Color { white, gray, black };
    std::vector<Color> color(programs.size(), Color::white);
    for (std::size_t root = 0; root < programs.size(); ++root) {
        if (color[root] != Color::white) continue;
        std::vector<std::pair<std::size_t, std::size_t>> stack{{root, 0}};  // program, next edge
        color[root] = Color::gray;
        while (!stack.empty()) {
            auto& [node, next] = stack.back();
            if (next == edges[node].size()) {
                color[node] = Color::black;
                stack.pop_back();
                continue;
            }
            auto [target, element] = edges[node][next++];
            if (color[target] == Color::white) {
                color[target] = Color::gray;
                stack.emplace_back(target, 0);
            } else if (color[target] == Color::gray) {
                std::string cycle;
                bool on = false;
                for (const auto& frame : stack) {
                    on = on || frame.first == target;
                    if (on) cycle += programs[frame.first].name + " -> ";
                }
                cycle += programs[target].name;
                const Item& at = sites_[node].depends_items[element];
                sites_[node].reader->error(at.mark, at.path, "dependency cycle " + cycle);
            }
        }
    }
}

/// Every file's diagnostics, by file (the main config, the included files, then the env files,
/// each in the order read), line and column.
std::vector<Diagnostic> Loader::diagnostics() {
    std::vector<Diagnostic> out;
    std::map<std::string, std::size_t> rank;
    for (auto& r : readers_) {
        rank.emplace(r.file(), rank.size());
        for (Diagnostic& d : r.diagnostics()) out.push_back(std::move(d));
    }
    for (const std::string& path : env_order_) rank.emplace(path, rank.size());
    auto rank_of = [&](const Diagnostic& d) {
        auto it = rank.find(d.file);
        return it == rank.end() ? rank.size() : it->second;
    };
    std::stable_sort(out.begin(), out.end(), [&](const auto& a, const auto& b) {
        return std::tuple(rank_of(a), a.line, a.column) < std::tuple(rank_of(b), b.line, b.column);
    });
    return out;
}

Config Loader::load(const std::string& text) {
    ConfigReader& r = readers_.front();
    auto root = parse_document(r, text, false);
    if (!root) throw ConfigError(std::move(r.diagnostics()));
    config_.source = r.file();
    bool has_programs = false;
    bool programs_is_map = false;
    std::optional<Item> programs;
    std::optional<Item> include;
    bool is_map = r.fields(Item{*root, root->Mark(), ""}, {"daemon", "programs", "include"},
                           [&](const std::string& key, const Item& value) {
                               if (key == "daemon") {
                                   read_daemon(r, value, config_.daemon, endpoints_);
                               } else if (key == "programs") {
                                   has_programs = true;
                                   programs = value;
                                   programs_is_map = read_programs(r, value, folder_of(main_path_));
                               } else {
                                   include = value;  // read once the main file's programs are
                               }
                           });
    if (include) read_includes(*include);
    bool includes_ok = std::all_of(std::next(readers_.begin()), readers_.end(),
                                   [](const ConfigReader& x) { return x.ok(); });
    if (is_map && config_.programs.empty() && includes_ok) {
        // Not when an included file is broken: its programs may be what is missing.
        if (!has_programs) {
            r.error(root->Mark(), "", "missing required key \"programs\"");
        } else if (programs_is_map) {
            r.error(programs->mark, programs->path, "expected at least one program");
        }
    }
    check_endpoints(endpoints_);
    check_dependencies();
    bool ok = std::all_of(readers_.begin(), readers_.end(), [](auto& x) { return x.ok(); });
    if (!ok) throw ConfigError(diagnostics());
    // The main file last: where included files spell the same path ("programs"), it wins.
    for (const auto& [path, node] : roots_) record_positions(node, path, config_.positions);
    record_positions(*root, "", config_.positions);
    config_.text = std::make_shared<const std::string>(text);
    config_.files = std::make_shared<const ConfigFiles>(std::move(files_));
    for (auto& p : config_.programs) {
        p.source_text = config_.text;
        p.source_files = config_.files;
    }
    return std::move(config_);
}

}  // namespace

Diagnostic Config::diagnostic(const std::string& path, const std::string& message) const {
    std::string at = path;
    for (;;) {
        if (auto it = positions.find(at); it != positions.end()) {
            const Position& p = it->second;
            return Diagnostic{p.file.empty() ? source : p.file, p.line, p.column,
                              path + ": " + message};
        }
        auto cut = at.find_last_of(".[");
        if (cut == std::string::npos) return Diagnostic{source, 0, 0, path + ": " + message};
        at.resize(cut);
    }
}

std::string Diagnostic::to_string() const {
    std::string text = file;
    if (line > 0) text += ":" + std::to_string(line);
    if (line > 0 && column > 0) text += ":" + std::to_string(column);
    return text + ": " + message;
}

ConfigError::ConfigError(std::vector<Diagnostic> diagnostics)
    : std::runtime_error(join(diagnostics)), diagnostics_(std::move(diagnostics)) {}

std::string ListenConfig::address() const {
    std::string p = std::to_string(port);
    return host.find(':') != std::string::npos ? "[" + host + "]:" + p : host + ":" + p;
}

Config load_config_string(const std::string& text, const std::string& source,
                          const ConfigFiles* files) {
    return Loader(source, files).load(text);
}

std::optional<std::string> detail::read_regular_file(const std::string& path, std::size_t max_bytes,
                                                     bool missing_ok) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; only a regular file is read.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
        int error = errno;
        struct stat st {};
        // open(2) of a unix socket fails with ENXIO: name what is there instead.
        if (error == ENOENT && missing_ok) return std::nullopt;
        if (error == ENXIO && ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
            fail(path, 0, 0, "is a socket, not a regular file");
        fail(path, 0, 0, "cannot read: " + system_message(error));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail(path, 0, 0, "cannot stat: " + system_message(errno));
    if (S_ISDIR(st.st_mode)) fail(path, 0, 0, "is a directory, not a config file");
    if (S_ISFIFO(st.st_mode)) fail(path, 0, 0, "is a FIFO, not a regular file");
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
        fail(path, 0, 0, "is a device, not a regular file");
    if (S_ISSOCK(st.st_mode)) fail(path, 0, 0, "is a socket, not a regular file");
    if (!S_ISREG(st.st_mode)) fail(path, 0, 0, "is not a regular file");
    auto too_big = [&](std::uint64_t size) {
        fail(path, 0, 0,
             "is " + std::to_string(size) + " bytes, more than the " +
                 std::to_string(max_bytes >> 20) + " MiB limit");
    };
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes) too_big(st.st_size);
    // Memory follows the file's size, not the limit; the file may grow while it is read, so
    // the limit is checked again as it comes in.
    std::string text;
    text.reserve(static_cast<std::size_t>(st.st_size));
    char chunk[16384];
    for (;;) {
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(path, 0, 0, "cannot read: " + system_message(errno));
        if (n == 0) break;
        text.append(chunk, static_cast<std::size_t>(n));
        if (text.size() > max_bytes) too_big(text.size());
    }
    return text;
}

std::string detail::resolve_path(const std::string& folder, const std::string& path) {
    std::filesystem::path p(path);
    if (p.is_relative()) p = std::filesystem::path(folder) / p;
    return p.lexically_normal().string();
}

std::string read_config_file(const std::string& path) {
    return *detail::read_regular_file(path, limits::kMaxConfigBytes);
}

Config load_config_file(const std::string& path) {
    return load_config_string(read_config_file(path), path);
}

const char* default_config_text() {
    return R"(# Built-in default: clusterd-worker serving HTTP on 127.0.0.1:8080, one worker per core.
daemon:
  log_level: info
  log_file: ""
  metrics: ""
  shutdown_timeout: 30s
programs:
  web:
    cores: auto
    watchdog: 10s
    listen:
      - {name: http, address: "127.0.0.1:8080"}
)";
}

Config default_config() {
    return load_config_string(default_config_text(), "<built-in>");
}

}  // namespace clusterd

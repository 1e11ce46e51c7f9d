#include "common/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "common/config_reader.hpp"
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

/// A socket the config binds, for the whole-file overlap check.
struct Endpoint {
    std::string host;
    std::uint16_t port;
    YAML::Mark mark;
    std::string path;   // "programs.web.listen[0].address", where a conflict is reported
    std::string owner;  // "programs.web.listen[0]", how the other side names it
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

void check_endpoints(ConfigReader& r, const std::vector<Endpoint>& endpoints) {
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
            const Endpoint& later = endpoints[i];
            const Endpoint& earlier = endpoints[j];
            if (!overlaps(later, earlier)) continue;
            std::string what = address_of(later) == address_of(earlier)
                                   ? " is already used by "
                                   : " overlaps " + address_of(earlier) + " of ";
            r.error(later.mark, later.path,
                    address_of(later) + what + earlier.owner + " at " + r.position(earlier.mark));
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
                     Endpoint e{{}, 0, v.mark, v.path, v.path};
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

void read_programs(ConfigReader& r, const Item& item, Config& config,
                   std::vector<Endpoint>& endpoints) {
    bool is_map = r.entries(item, [&](const YAML::Node& key, const Item& value) {
        detail::ParsedProgram parsed = detail::read_program(r, key, value);
        for (std::size_t i = 0; i < parsed.config.listen.size(); ++i) {
            const ListenConfig& l = parsed.config.listen[i];
            std::string owner = value.path + ".listen[" + std::to_string(i) + "]";
            endpoints.push_back(
                {l.host, l.port, parsed.listen_marks[i], owner + ".address", owner});
        }
        config.programs.push_back(std::move(parsed.config));
    });
    if (is_map && config.programs.empty()) {
        r.error(item.mark, item.path, "expected at least one program");
    }
}

[[noreturn]] void fail(const std::string& file, int line, int column, const std::string& what) {
    throw ConfigError({Diagnostic{file, line, column, what}});
}

std::string system_message(int error) {
    return std::error_code(error, std::system_category()).message();
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
        std::size_t n = utf8_length(text, i);
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

/// Records the position of every value down to the depth the config's keys go.
void record_positions(const YAML::Node& root, std::map<std::string, Position>& out) {
    std::vector<std::pair<Item, int>> stack{{Item{root, root.Mark(), ""}, 0}};
    while (!stack.empty()) {
        auto [item, depth] = stack.back();
        stack.pop_back();
        if (!item.path.empty()) out[item.path] = {item.mark.line + 1, item.mark.column + 1};
        if (depth >= 5) continue;
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

}  // namespace

Diagnostic Config::diagnostic(const std::string& path, const std::string& message) const {
    std::string at = path;
    for (;;) {
        if (auto it = positions.find(at); it != positions.end())
            return Diagnostic{source, it->second.line, it->second.column, path + ": " + message};
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

Config load_config_string(const std::string& text, const std::string& source) {
    check_text(text, source);
    ConfigReader r(source);
    // One document only, read with YAML::Load: yaml-cpp 0.7's LoadAll loops for ever (and
    // grows without bound) on inputs as short as ", *a". A second document is found below.
    YAML::Node document;
    try {
        document = YAML::Load(text);
    } catch (const YAML::DeepRecursion& e) {
        r.error(e.mark, "",
                "nesting deeper than " + std::to_string(limits::kMaxConfigDepth) + " levels at " +
                    std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1));
        throw ConfigError(std::move(r.diagnostics()));
    } catch (const YAML::ParserException& e) {
        r.error(e.mark, "", "invalid YAML: " + e.msg);
        throw ConfigError(std::move(r.diagnostics()));
    }

    Config config;
    config.source = source;
    DocumentLines lines = scan_lines(text);
    if (document.IsNull()) {
        YAML::Mark at;
        at.line = std::max(lines.first_content, 0);
        at.column = 0;
        r.error(at, "",
                lines.first_content < 0
                    ? "the config is empty: expected a map with a \"programs\" key"
                    : "expected a map with a \"programs\" key, found no value");
        throw ConfigError(std::move(r.diagnostics()));
    }
    if (lines.second_document >= 0) {
        YAML::Mark at;
        at.line = lines.second_document;
        at.column = 0;
        r.error(at, "", "expected one YAML document, found another");
    }

    const YAML::Node& root = document;
    check_depth(r, root);
    if (!r.ok()) throw ConfigError(std::move(r.diagnostics()));
    std::vector<Endpoint> endpoints;
    bool has_programs = false;
    bool is_map = r.fields(Item{root, root.Mark(), ""}, {"daemon", "programs"},
                           [&](const std::string& key, const Item& value) {
                               if (key == "daemon") {
                                   read_daemon(r, value, config.daemon, endpoints);
                               } else {
                                   has_programs = true;
                                   read_programs(r, value, config, endpoints);
                               }
                           });
    if (is_map && !has_programs) {
        r.error(root.Mark(), "", "missing required key \"programs\"");
    }
    check_endpoints(r, endpoints);
    if (r.ok()) record_positions(root, config.positions);
    config.text = std::make_shared<const std::string>(text);
    for (auto& p : config.programs) p.source_text = config.text;
    if (!r.ok()) {
        auto& diagnostics = r.diagnostics();
        std::stable_sort(diagnostics.begin(), diagnostics.end(), [](const auto& a, const auto& b) {
            return std::pair(a.line, a.column) < std::pair(b.line, b.column);
        });
        throw ConfigError(std::move(diagnostics));
    }
    return config;
}

std::string read_config_file(const std::string& path) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; only a regular file is read.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
        int error = errno;
        struct stat st {};
        // open(2) of a unix socket fails with ENXIO: name what is there instead.
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
                 std::to_string(limits::kMaxConfigBytes >> 20) + " MiB limit");
    };
    if (static_cast<std::uint64_t>(st.st_size) > limits::kMaxConfigBytes) too_big(st.st_size);
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
        if (text.size() > limits::kMaxConfigBytes) too_big(text.size());
    }
    return text;
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

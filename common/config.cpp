#include "common/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/config_reader.hpp"

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

}  // namespace

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
    ConfigReader r(source);
    std::vector<YAML::Node> documents;
    try {
        documents = YAML::LoadAll(text);
    } catch (const YAML::ParserException& e) {
        r.error(e.mark, "", "invalid YAML: " + e.msg);
        throw ConfigError(std::move(r.diagnostics()));
    }

    Config config;
    config.source = source;
    if (documents.empty() || documents.front().IsNull()) {
        YAML::Mark start;
        start.line = start.column = 0;
        r.error(start, "", "the config is empty: expected a map with a \"programs\" key");
        throw ConfigError(std::move(r.diagnostics()));
    }
    if (documents.size() > 1) {
        r.error(documents[1].Mark(), "", "expected one YAML document, found another");
    }

    const YAML::Node& root = documents.front();
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
    if (!r.ok()) {
        auto& diagnostics = r.diagnostics();
        std::stable_sort(diagnostics.begin(), diagnostics.end(), [](const auto& a, const auto& b) {
            return std::pair(a.line, a.column) < std::pair(b.line, b.column);
        });
        throw ConfigError(std::move(diagnostics));
    }
    return config;
}

Config load_config_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        int err = errno;
        throw ConfigError(
            {Diagnostic{path, 0, 0, std::string("cannot read: ") + std::strerror(err)}});
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) throw ConfigError({Diagnostic{path, 0, 0, "cannot read: I/O error"}});
    return load_config_string(text.str(), path);
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

// Reading one program of the config: its keys, listen entries, env and cross-field checks.
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <map>

#include "common/config_reader.hpp"
#include "common/cpus.hpp"
#include "common/duration.hpp"
#include "common/env_file.hpp"
#include "common/limits.hpp"
#include "common/placeholders.hpp"
#include "common/signals.hpp"

namespace clusterd {

bool is_reserved_env(std::string_view name) {
    // NODE_CHANNEL_*, NODE_UNIQUE_ID: a worker handed them by mistake (inherited) would
    // take a stray fd for its IPC channel, or act as a Node cluster worker of nobody.
    static constexpr std::array<std::string_view, 9> kReserved = {
        "LISTEN_FDS",      "LISTEN_PID",     "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",   "WATCHDOG_USEC",  "WATCHDOG_PID",
        "NODE_CHANNEL_FD", "NODE_UNIQUE_ID", "NODE_CHANNEL_SERIALIZATION_MODE"};
    return name.starts_with("CLUSTERD_") ||
           std::find(kReserved.begin(), kReserved.end(), name) != kReserved.end();
}

}  // namespace clusterd

namespace clusterd::detail {

namespace {

constexpr const char* kArgv =
    R"(a sequence of strings (argv), e.g. ["/usr/bin/app", "--port", "8080"])";
constexpr const char* kHookArgv =
    R"(a sequence of strings (argv), e.g. ["/usr/local/bin/page", "--team", "ops"])";
constexpr const char* kAddress = R"("host:port" like "127.0.0.1:8080" or "[::1]:8080")";

void read_command(ConfigReader& r, const Item& item, ProgramConfig& p, std::vector<Item>& args) {
    auto items = r.sequence(item, kArgv);
    if (!items) return;
    if (items->empty()) {
        r.expected(item, std::string("a non-empty ") + (kArgv + 2));  // skip "a "
        return;
    }
    std::vector<std::string> argv;
    for (const auto& arg : *items) {
        auto s = r.string(arg);
        if (!s) return;
        if (argv.empty() && s->empty()) {
            r.expected(arg, "the program to run");
            return;
        }
        argv.push_back(*s);
    }
    p.command = std::move(argv);
    args = std::move(*items);
}

void read_cores(ConfigReader& r, const Item& item, ProgramConfig& p) {
    if (item.node.IsScalar()) {
        const std::string& text = item.node.Scalar();
        if (text == "auto") {
            p.cores_auto = true;
            return;
        }
        int n = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (ec == std::errc{} && end == text.data() + text.size() && n >= 1 &&
            n <= limits::kMaxWorkers) {
            p.cores_auto = false;
            p.workers = n;
            return;
        }
    }
    r.expected(item, R"("auto" or an integer from 1 to )" + std::to_string(limits::kMaxWorkers));
}

void read_listen(ConfigReader& r, const Item& item, ParsedProgram& out) {
    auto entries = r.sequence(item, "a sequence of {name, address, reuseport, backlog} maps");
    if (!entries) return;
    if (entries->size() > static_cast<std::size_t>(limits::kMaxListeners)) {
        r.error(item.mark, item.path,
                "expected at most " + std::to_string(limits::kMaxListeners) +
                    " listen entries, got " + std::to_string(entries->size()));
        return;
    }
    std::map<std::string, YAML::Mark> names;
    for (std::size_t i = 0; i < entries->size(); ++i) {
        const Item& entry = (*entries)[i];
        if (!entry.node.IsMap()) {
            r.expected(entry, "a map with an \"address\" key");
            continue;
        }
        ListenConfig listen;
        listen.name = "listen" + std::to_string(i);
        YAML::Mark name_mark = entry.mark;
        std::optional<YAML::Mark> address_mark;
        r.fields(entry, {"name", "address", "reuseport", "backlog"},
                 [&](const std::string& key, const Item& v) {
                     if (key == "name") {
                         auto s = r.string(v);
                         if (s && (!is_simple_name(*s) || s->size() > 255)) {
                             r.expected(v, "a name of letters, digits, '_', '.' and '-'");
                         } else if (s) {
                             listen.name = *s;
                             name_mark = v.mark;
                         }
                     } else if (key == "address") {
                         auto s = r.string(v);
                         std::string problem;
                         if (s && parse_host_port(*s, listen.host, listen.port, problem)) {
                             address_mark = v.mark;
                         } else if (s) {
                             r.error(v.mark, v.path,
                                     std::string("expected ") + kAddress + ", got " +
                                         describe(v.node) + " (" + problem + ")");
                         }
                     } else if (key == "reuseport") {
                         if (auto b = r.boolean(v)) listen.reuseport = *b;
                     } else if (key == "backlog") {
                         if (auto n = r.integer(v, 1, 65535)) listen.backlog = static_cast<int>(*n);
                     }
                 });
        if (!entry.node["address"]) {
            r.error(entry.mark, entry.path, "missing required key \"address\"");
        }
        auto [first, inserted] = names.emplace(listen.name, name_mark);
        if (!inserted) {
            r.error(name_mark, entry.path + ".name",
                    "duplicate listen name \"" + listen.name + "\" (first at " +
                        r.position(first->second) + ")");
        }
        if (address_mark) {
            out.config.listen.push_back(std::move(listen));
            out.listen_marks.push_back(*address_mark);
        }
    }
}

void read_env(ConfigReader& r, const Item& item, ProgramConfig& p) {
    r.entries(item, [&](const YAML::Node& key, const Item& v) {
        const std::string& name = key.Scalar();
        if (!is_env_name(name)) {
            r.error(key.Mark(), item.path,
                    "\"" + name +
                        "\" is not a valid environment variable name "
                        "(expected [A-Za-z_][A-Za-z0-9_]*)");
        } else if (is_reserved_env(name)) {
            r.error(key.Mark(), item.path, reserved_env_message(name));
        } else if (auto value = r.string(v)) {
            p.env[name] = *value;
        }
    });
}

void read_umask(ConfigReader& r, const Item& item, ProgramConfig& p) {
    if (item.node.IsScalar()) {
        std::string_view text = item.node.Scalar();
        if (text.starts_with("0o")) text.remove_prefix(2);
        unsigned value = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 8);
        if (!text.empty() && ec == std::errc{} && end == text.data() + text.size() &&
            value <= 0777) {
            p.umask = value;
            return;
        }
    }
    r.expected(item, R"(an octal umask from 0 to 0777, e.g. "0022")");
}

void read_backoff(ConfigReader& r, const Item& item, BackoffConfig& b) {
    std::optional<Item> initial;
    std::optional<Item> max;
    r.fields(item, {"initial", "max", "reset_after"}, [&](const std::string& key, const Item& v) {
        if (key == "reset_after") {
            r.error(v.mark, v.path,
                    "backoff.reset_after is gone: a run that stays ready for the program's "
                    "min_uptime (default 1s) now resets the failure count; set min_uptime instead");
            return;
        }
        auto d = r.duration(v);
        if (!d) return;
        if (key == "initial") {
            b.initial = *d;
            initial = v;
        } else {
            b.max = *d;
            max = v;
        }
    });
    if (b.max < limits::kMinBackoffMax && max) {
        r.error(max->mark, max->path,
                "expected at least " + format_duration(limits::kMinBackoffMax) +
                    " (a slot whose runs keep failing must not restart in a loop), got " +
                    format_duration(b.max));
    } else if (b.max < b.initial && (initial || max)) {
        const Item& at = max ? *max : *initial;
        r.error(at.mark, at.path,
                "expected max to be at least initial (" + format_duration(b.initial) + "), got " +
                    format_duration(b.max));
    }
}

/// A string, or a sequence of strings: each as an item (a lone string is element 0).
std::optional<std::vector<Item>> string_list(ConfigReader& r, const Item& item,
                                             const std::string& what) {
    if (item.node.IsScalar()) return std::vector<Item>{item};
    auto items = r.sequence(item, what);
    if (!items) return std::nullopt;
    std::vector<Item> out;
    for (const Item& i : *items) {
        if (r.string(i)) out.push_back(i);
    }
    return out;
}

void read_env_files(ConfigReader& r, const Item& item, const std::string& folder,
                    ParsedProgram& out) {
    auto items = string_list(r, item, "a file path or a sequence of file paths");
    if (!items) return;
    for (const Item& i : *items) {
        std::string_view text = i.node.Scalar();
        EnvFileRef ref;
        if (text.starts_with("-")) {
            ref.optional = true;
            text.remove_prefix(1);
        }
        if (text.empty()) {
            r.expected(i, R"(a file path, "-" before it if the file may be missing)");
            continue;
        }
        ref.path = resolve_path(folder, std::string(text));
        out.config.env_files.push_back(std::move(ref));
        out.env_file_items.push_back(i);
    }
}

void read_depends_on(ConfigReader& r, const Item& item, ParsedProgram& out) {
    auto items = string_list(r, item, "a program name or a sequence of program names");
    if (!items) return;
    std::map<std::string, std::string> seen;  // name -> path of its first element
    for (const Item& i : *items) {
        const std::string& name = i.node.Scalar();
        auto [first, inserted] = seen.emplace(name, i.path);
        if (!inserted) {
            r.error(i.mark, i.path, "duplicate \"" + name + "\" (first at " + first->second + ")");
            continue;
        }
        out.config.depends_on.push_back(name);
        out.depends_items.push_back(i);
    }
}

std::string event_names() {
    std::string names;
    for (const char* name : kEventNames) names += (names.empty() ? "" : ", ") + std::string(name);
    return names;
}

void read_hook(ConfigReader& r, const Item& item, HookConfig& hook) {
    if (!item.node.IsMap()) {
        r.expected(item, R"(a map with "on" and "command" keys)");
        return;
    }
    r.fields(item, {"on", "command", "timeout"}, [&](const std::string& key, const Item& v) {
        if (key == "on") {
            auto items = string_list(r, v, "an event name or a sequence of event names");
            if (!items) return;
            if (items->empty()) r.expected(v, "at least one event name (" + event_names() + ")");
            std::map<std::string, std::string> seen;
            for (const Item& i : *items) {
                const std::string& name = i.node.Scalar();
                bool known = std::any_of(std::begin(kEventNames), std::end(kEventNames),
                                         [&](const char* e) { return name == e; });
                if (!known) {
                    r.expected(i, "an event name (" + event_names() + ")");
                } else if (auto [first, inserted] = seen.emplace(name, i.path); !inserted) {
                    r.error(i.mark, i.path,
                            "duplicate \"" + name + "\" (first at " + first->second + ")");
                } else {
                    hook.on.push_back(name);
                }
            }
        } else if (key == "command") {
            if (v.node.IsScalar()) {
                r.error(v.mark, v.path,
                        std::string("expected ") + kHookArgv + ", got " + describe(v.node) +
                            " (a hook runs its argv, no shell)");
                return;
            }
            auto items = r.sequence(v, kHookArgv);
            if (!items) return;
            if (items->empty()) {
                r.expected(v, std::string("a non-empty ") + (kHookArgv + 2));  // skip "a "
                return;
            }
            std::vector<std::string> argv;
            for (const Item& arg : *items) {
                auto s = r.string(arg);
                if (!s) return;
                if (s->empty()) {
                    r.expected(arg, argv.empty() ? "the program to run" : "a non-empty argument");
                    return;
                }
                argv.push_back(*s);
            }
            hook.command = std::move(argv);
        } else if (key == "timeout") {
            auto d = r.duration(v, false);
            if (d && *d > limits::kMaxHookTimeout) {
                r.expected(v, "a duration of at most " + format_duration(limits::kMaxHookTimeout));
            } else if (d) {
                hook.timeout = *d;
            }
        }
    });
    for (const char* required : {"on", "command"}) {
        if (!item.node[required])
            r.error(item.mark, item.path, std::string("missing required key \"") + required + "\"");
    }
}

void read_hooks(ConfigReader& r, const Item& item, ProgramConfig& p) {
    auto items = r.sequence(item, "a sequence of {on, command, timeout} maps");
    if (!items) return;
    if (items->size() > limits::kMaxHooks) {
        r.error(item.mark, item.path,
                "expected at most " + std::to_string(limits::kMaxHooks) + " hooks, got " +
                    std::to_string(items->size()));
        return;
    }
    for (const Item& i : *items) {
        HookConfig hook;
        read_hook(r, i, hook);
        p.hooks.push_back(std::move(hook));
    }
}

std::optional<std::string> absolute_path(ConfigReader& r, const Item& item, const char* what) {
    auto s = r.string(item);
    if (s && !s->starts_with("/")) {
        r.expected(item, what);
        return std::nullopt;
    }
    return s;
}

}  // namespace

ParsedProgram read_program(ConfigReader& r, const YAML::Node& key, const Item& value,
                           const std::string& folder) {
    ParsedProgram out;
    ProgramConfig& p = out.config;
    p.name = key.Scalar();
    if (!is_simple_name(p.name) || p.name.size() > 64) {
        r.error(key.Mark(), "programs",
                "invalid program name \"" + p.name +
                    "\": expected up to 64 letters, digits, '_', '.' or '-'");
    }
    std::optional<YAML::Mark> start_time_mark;
    std::optional<YAML::Mark> ready_mark;
    std::optional<YAML::Mark> ipc_mark;
    std::optional<YAML::Mark> shutdown_message_mark;
    std::optional<YAML::Mark> rlimits_mark;
    std::optional<YAML::Mark> max_age_jitter_mark;
    std::vector<Item> command_args;
    r.fields(value, {"command",       "cores",        "listen",
                     "env",           "inherit_env",  "user",
                     "group",         "cwd",          "umask",
                     "ready",         "start_time",   "start_timeout",
                     "watchdog",      "restart",      "backoff",
                     "stop_signal",   "stop_timeout", "cpu_affinity",
                     "output",        "max_surge",    "rlimits",
                     "memory_limit",  "min_uptime",   "abort_timeout",
                     "notify_access", "ipc",          "shutdown_message",
                     "env_file",      "max_age",      "max_age_jitter",
                     "depends_on",    "hooks"},
             [&](const std::string& k, const Item& v) {
                 if (k == "command") {
                     read_command(r, v, p, command_args);
                 } else if (k == "cores") {
                     read_cores(r, v, p);
                 } else if (k == "listen") {
                     read_listen(r, v, out);
                 } else if (k == "env") {
                     read_env(r, v, p);
                 } else if (k == "env_file") {
                     read_env_files(r, v, folder, out);
                 } else if (k == "depends_on") {
                     read_depends_on(r, v, out);
                 } else if (k == "hooks") {
                     read_hooks(r, v, p);
                 } else if (k == "max_age") {
                     if (auto d = r.duration(v)) p.max_age = *d;
                 } else if (k == "max_age_jitter") {
                     if (auto d = r.duration(v)) p.max_age_jitter = *d;
                     max_age_jitter_mark = v.mark;
                 } else if (k == "inherit_env") {
                     if (auto b = r.boolean(v)) p.inherit_env = *b;
                 } else if (k == "user" || k == "group") {
                     auto s = r.string(v);
                     if (s && s->empty()) {
                         r.expected(v, "a user or group name or id");
                     } else if (s) {
                         (k == "user" ? p.user : p.group) = *s;
                     }
                 } else if (k == "cwd") {
                     p.cwd = absolute_path(r, v, "an absolute directory path");
                 } else if (k == "umask") {
                     read_umask(r, v, p);
                 } else if (k == "ready") {
                     auto mode = r.choice<ReadyMode>(v, {{"notify", ReadyMode::notify},
                                                         {"started", ReadyMode::started},
                                                         {"listening", ReadyMode::listening}});
                     if (mode) p.ready = *mode;
                     ready_mark = v.mark;
                 } else if (k == "ipc") {
                     auto mode =
                         r.choice<IpcMode>(v, {{"none", IpcMode::none}, {"node", IpcMode::node}});
                     if (mode) p.ipc = *mode;
                     ipc_mark = v.mark;
                 } else if (k == "shutdown_message") {
                     if (auto b = r.boolean(v)) p.shutdown_message = *b;
                     shutdown_message_mark = v.mark;
                 } else if (k == "notify_access") {
                     auto access = r.choice<NotifyAccess>(
                         v, {{"main", NotifyAccess::main}, {"all", NotifyAccess::all}});
                     if (access) p.notify_access = *access;
                 } else if (k == "start_time") {
                     if (auto d = r.duration(v)) p.start_time = *d;
                     start_time_mark = v.mark;
                 } else if (k == "start_timeout") {
                     if (auto d = r.duration(v, false)) p.start_timeout = *d;
                 } else if (k == "watchdog") {
                     if (auto d = r.duration(v)) p.watchdog = *d;
                 } else if (k == "restart") {
                     auto mode = r.choice<RestartMode>(v, {{"always", RestartMode::always},
                                                           {"on-failure", RestartMode::on_failure},
                                                           {"never", RestartMode::never}});
                     if (mode) p.restart = *mode;
                 } else if (k == "backoff") {
                     read_backoff(r, v, p.backoff);
                 } else if (k == "min_uptime") {
                     if (auto d = r.duration(v)) p.min_uptime = *d;
                 } else if (k == "abort_timeout") {
                     if (auto d = r.duration(v)) p.abort_timeout = *d;
                 } else if (k == "stop_signal") {
                     auto sig = v.node.IsScalar() ? parse_signal(v.node.Scalar()) : std::nullopt;
                     if (sig) {
                         p.stop_signal = *sig;
                     } else {
                         r.expected(v, "a signal name or number, e.g. TERM, SIGINT or 15");
                     }
                 } else if (k == "stop_timeout") {
                     if (auto d = r.duration(v)) p.stop_timeout = *d;
                 } else if (k == "cpu_affinity") {
                     if (auto b = r.boolean(v)) p.cpu_affinity = *b;
                 } else if (k == "rlimits") {
                     read_rlimits(r, v, p);
                     rlimits_mark = v.mark;
                 } else if (k == "memory_limit") {
                     auto text = v.node.IsScalar() ? std::optional(v.node.Scalar()) : std::nullopt;
                     auto bytes = text ? parse_size(*text) : std::nullopt;
                     if (bytes) {
                         p.memory_limit = *bytes;
                     } else {
                         r.expected(v, "a size like 512M or 2G, or 0 for no limit");
                     }
                 } else if (k == "max_surge") {
                     if (auto n = r.integer(v, 1, limits::kMaxWorkers))
                         p.max_surge = static_cast<int>(*n);
                 } else if (k == "output") {
                     auto s = r.string(v);
                     if (s && *s != "inherit" && *s != "capture" && !s->starts_with("/")) {
                         r.expected(v, R"("inherit", "capture" or an absolute file path)");
                     } else if (s) {
                         p.output = *s;
                     }
                 }
             });
    // A Node program gets Node's IPC channel unless it says otherwise: then an unmodified app
    // listens on clusterd's sockets, and is ready once it does (one that listens on nothing,
    // a queue consumer say, once it has stayed up for start_time, as PM2 has it).
    if (!ipc_mark && !p.command.empty()) {
        std::string_view exe = p.command[0];
        exe = exe.substr(exe.rfind('/') == std::string_view::npos ? 0 : exe.rfind('/') + 1);
        if (exe == "node" || exe == "nodejs") p.ipc = IpcMode::node;
    }
    if (!ready_mark && p.ipc == IpcMode::node)
        p.ready = p.listen.empty() ? ReadyMode::started : ReadyMode::listening;
    if (p.ipc != IpcMode::node && p.ready == ReadyMode::listening)
        r.error(
            *ready_mark, value.path + ".ready",
            "\"listening\" needs ipc: node (the Node cluster worker reports it on that channel)");
    if (p.ipc != IpcMode::node && p.shutdown_message)
        r.error(*shutdown_message_mark, value.path + ".shutdown_message",
                "needs ipc: node (the message goes on Node's IPC channel)");
    if (p.ready == ReadyMode::started && p.start_time >= p.start_timeout) {
        r.error(start_time_mark.value_or(value.mark), value.path + ".start_time",
                "must be less than start_timeout (" + format_duration(p.start_timeout) +
                    ") with ready: started, got " + format_duration(p.start_time));
    }
    if (p.max_age.count() > 0 && p.max_age_jitter >= p.max_age) {
        r.error(max_age_jitter_mark.value_or(value.mark), value.path + ".max_age_jitter",
                "must be less than max_age (" + format_duration(p.max_age) + "), got " +
                    format_duration(p.max_age_jitter));
    }
    // The listening sockets take fds 3.. before the worker opens a file of its own: leave it
    // kNofileSpare more (its notify socket, a log, a connection).
    for (const RLimit& l : p.rlimits) {
        const std::uint64_t least =
            std::max<std::uint64_t>(limits::kMinNofile, 3 + p.listen.size() + limits::kNofileSpare);
        if (l.resource == RLIMIT_NOFILE && l.soft != RLimit::kUnlimited && l.soft < least)
            r.error(rlimits_mark.value_or(value.mark), value.path + ".rlimits.nofile",
                    "expected at least " + std::to_string(least) + " with " +
                        std::to_string(p.listen.size()) + " listen entries (they take fds 3 to " +
                        std::to_string(2 + p.listen.size()) + "), got " + std::to_string(l.soft));
    }
    // {listen.NAME.fd} must name a listener of this program (all of `listen:` is read now).
    for (const Item& arg : command_args) {
        std::string problem;
        if (!expand_placeholders(arg.node.Scalar(), p.listen, problem))
            r.error(arg.mark, arg.path, problem);
    }
    if (p.cores_auto) p.workers = std::min(available_cpus(), limits::kMaxWorkers);
    return out;
}

}  // namespace clusterd::detail

// clusterd: the master (`clusterd run`) and its command line.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "common/config.hpp"
#include "common/duration.hpp"
#include "common/exit_codes.hpp"
#include "common/limits.hpp"
#include "common/signals.hpp"
#include "daemon/control/cli.hpp"
#include "daemon/control/control_server.hpp"
#include "daemon/control/top.hpp"
#include "daemon/process/config_check.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/process/systemd.hpp"
#include "daemon/supervisor/handover.hpp"
#include "daemon/supervisor/supervisor.hpp"

extern char** environ;

namespace {

using namespace clusterd;

// The binary this process runs, by the path it was exec'd from ("" if unknown): what
// `upgrade` execs when not told another (a package upgrade replaces the file there).
std::string self_binary_path() {
    std::error_code ec;
    std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec) return "";
    constexpr std::string_view kDeleted = " (deleted)";
    if (self.ends_with(kDeleted)) self.resize(self.size() - kDeleted.size());
    return self;
}

// clusterd-worker is installed beside clusterd.
std::string builtin_worker_path() {
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return "clusterd-worker";
    return (self.parent_path() / "clusterd-worker").string();
}

std::string describe_program(const ProgramConfig& p) {
    std::string line = p.name + ": " + std::to_string(p.workers) + " worker" +
                       (p.workers == 1 ? "" : "s") + (p.cores_auto ? " (cores: auto)" : "") +
                       ", command: ";
    if (p.command.empty()) {
        line += "built-in clusterd-worker";
    } else {
        for (std::size_t i = 0; i < p.command.size(); ++i) line += (i ? " " : "") + p.command[i];
    }
    if (p.ipc == IpcMode::node)
        line += std::string(", ipc: node (ready: ") +
                (p.ready == ReadyMode::listening ? "listening"
                 : p.ready == ReadyMode::notify  ? "notify"
                                                 : "started") +
                ")";
    for (const auto& l : p.listen)
        line += ", " + l.name + "=" + l.address() + (l.reuseport ? " (reuseport)" : " (shared)");
    if (!p.depends_on.empty()) {
        line += ", depends_on:";
        for (const auto& d : p.depends_on) line += " " + d;
    }
    if (p.max_age.count() > 0) line += ", max_age " + format_duration(p.max_age);
    if (!p.hooks.empty())
        line += ", " + std::to_string(p.hooks.size()) + " hook" + (p.hooks.size() == 1 ? "" : "s");
    if (!p.env_files.empty())
        line += ", " + std::to_string(p.env_files.size()) + " env file" +
                (p.env_files.size() == 1 ? "" : "s");
    return line;
}

void print_errors(const ConfigError& e) {
    for (const auto& d : e.diagnostics()) std::cerr << d.to_string() << "\n";
}

// What workers may inherit: the master's environment without systemd's socket variables.
std::vector<std::string> master_environment() {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
        if (!std::string_view(*e).starts_with("LISTEN_")) env.emplace_back(*e);
    return env;
}

// Loads `path` and checks it against this machine as `run` would use it (users, executables,
// paths): `check` and `run` accept exactly the same files.
Config load_and_check(const std::string& path, const DaemonOverrides& overrides) {
    Config config = path.empty() ? default_config() : load_config_file(path);
    overrides.apply(config.daemon);
    auto problems = check_runtime(config, builtin_worker_path(), master_environment());
    if (!problems.empty()) throw ConfigError(std::move(problems));
    return config;
}

// Where `run` gets its config: -c, else the default path if it exists, else built in.
std::optional<Config> load(const std::string& path, bool explicit_path,
                           const DaemonOverrides& overrides) {
    try {
        if (explicit_path) return load_and_check(path, overrides);
        if (std::filesystem::exists(kDefaultConfigPath))
            return load_and_check(kDefaultConfigPath, overrides);
        return load_and_check("", overrides);
    } catch (const ConfigError& e) {
        print_errors(e);
        return std::nullopt;
    }
}

// A daemon started with closed stdio would hand fds 0-2 to sockets; keep them taken.
void ensure_stdio() {
    for (int fd = 0; fd < 3; ++fd) {
        if (::fcntl(fd, F_GETFD) < 0) {
            int null = ::open("/dev/null", O_RDWR);
            if (null >= 0 && null != fd) {
                ::dup2(null, fd);
                ::close(null);
            }
        }
    }
}

// Who holds `path` when a daemon answers there: "clusterd pid N (config F)". "" when no
// socket is there or nobody listens on it (a socket file left by a daemon that died).
std::string daemon_on(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return "";
    std::string error;
    auto reply = ask_daemon(path, {{"cmd", "status"}}, 2000, error);
    if (!reply) {
        if (error.starts_with("cannot connect")) return "";
        return "a process that accepts connections but does not answer (" + error + ")";
    }
    const nlohmann::json daemon = reply->contains("status") && (*reply)["status"].is_object()
                                      ? (*reply)["status"].value("daemon", nlohmann::json::object())
                                      : nlohmann::json::object();
    std::string pid = daemon.contains("pid") ? daemon["pid"].dump() : "?";
    return "clusterd pid " + pid + " (config " + daemon.value("config", std::string("?")) + ")";
}

// The master's loop, until it is done; then the exit code.
int serve(boost::asio::io_context& io, ControlServer& control, Supervisor& supervisor) {
    // No exception may escape a handler; should one still, the master logs it and goes on
    // rather than taking every worker down with it.
    for (;;) {
        try {
            io.run();
            break;
        } catch (const std::exception& e) {
            spdlog::critical("unexpected error in an event handler (continuing): {}", e.what());
        }
    }
    control.close();
    drain_log(std::chrono::seconds(2));  // bounded: a stalled log reader cannot hold the exit
    spdlog::shutdown();
    return supervisor.exit_code();
}

ControlServer::Handler control_handler(Supervisor& supervisor) {
    return [&supervisor](const ControlRequest& request, std::shared_ptr<Reporter> reporter) {
        supervisor.command(request, std::move(reporter));
    };
}

int run(const std::string& config_path, bool explicit_path, const std::string& log_level,
        const DaemonOverrides& overrides, const std::vector<std::string>& run_args) {
    auto config = load(config_path, explicit_path, overrides);
    if (!config) return exit_code::invalid_config;
    try {
        setup_logging(log_level.empty() ? config->daemon.log_level : log_level,
                      config->daemon.log_file);
    } catch (const std::exception& e) {
        std::cerr << "clusterd: " << e.what() << "\n";
        return log_level.empty() ? exit_code::invalid_config : exit_code::usage;
    }
    if (config->source == "<built-in>") {
        spdlog::info(
            "no config file given and {} does not exist: running the built-in default "
            "(built-in worker on 127.0.0.1:8080, cores: auto = {})",
            kDefaultConfigPath, config->programs.front().workers);
    } else {
        spdlog::info("config {} loaded", config->source);
    }
    ::signal(SIGPIPE, SIG_IGN);
    // One daemon per control socket: a second one would run workers nobody can reach with
    // `clusterd status` or `reload`. Refuse before binding or starting anything.
    std::string control_path = config->daemon.control;
    if (std::string other = daemon_on(control_path); !other.empty()) {
        spdlog::critical(
            "control socket {} is in use by {}: set daemon.control in {} or pass "
            "--control PATH to run a second daemon beside it",
            control_path, other,
            config->source == "<built-in>" ? "a config file (-c FILE)" : config->source);
        return exit_code::system_error;
    }
    // Orphans of workers come to us (as PID 1 of a container they do anyway), so the one
    // Reaper reaps them and none outlives the master.
    if (::getpid() != 1 && ::prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        spdlog::warn("prctl(PR_SET_CHILD_SUBREAPER) failed: {}", std::strerror(errno));
    if (::getpid() == 1) spdlog::info("running as PID 1: reaping every orphan of the container");

    std::vector<std::string> env = master_environment();
    boost::asio::io_context io(1);
    std::string control_group = config->daemon.control_group;
    std::string reload_path =
        config->source == "<built-in>" ? "" : std::filesystem::absolute(config->source).string();
    Supervisor supervisor(io, std::move(*config), reload_path, builtin_worker_path(),
                          std::move(env), overrides);
    supervisor.adopt_sockets(take_activated_sockets());
    // The control socket before any worker: requests wait in its queue until the loop runs.
    std::unique_ptr<ControlServer> control;
    try {
        control = std::make_unique<ControlServer>(io, control_path, control_group,
                                                  control_handler(supervisor));
    } catch (const std::exception& e) {
        spdlog::critical(
            "cannot open the control socket: {}; set daemon.control or pass --control PATH "
            "(a path this user may create)",
            e.what());
        return exit_code::system_error;
    }
    supervisor.set_image(CLUSTERD_VERSION, self_binary_path(), control->listener(), run_args);
    try {
        supervisor.start();
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        control->close();
        return exit_code::system_error;
    }
    control->start();
    spdlog::info("control socket {}", control_path);
    return serve(io, *control, supervisor);
}

// ---- upgrade: the new image's side (daemon/supervisor/upgrade.cpp has the old one's) ----

// `upgrade-check --state-fd N`: would this binary resume from the state in fd N? One JSON
// line on stdout; exit 0 if so.
int upgrade_check(int state_fd) {
    nlohmann::json out;
    try {
        HandoverState state = decode_handover(read_handover_fd(state_fd));
        std::size_t workers = 0;
        for (const auto& p : state.programs) {
            load_config_string(p.config_text, p.source, &p.config_files);
            workers += p.workers.size();
        }
        load_config_string(state.config_text, state.config_source, &state.config_files);
        out = {{"ok", true},
               {"version", CLUSTERD_VERSION},
               {"state_format", kHandoverFormat},
               {"from", state.version},
               {"programs", state.programs.size()},
               {"workers", workers}};
    } catch (const ConfigError& e) {
        const auto& d = e.diagnostics();
        out = {{"ok", false},
               {"message", "its config does not load here: " +
                               (d.empty() ? std::string("?") : d.front().to_string())}};
    } catch (const std::exception& e) {
        out = {{"ok", false}, {"message", e.what()}};
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    return out["ok"].get<bool>() ? exit_code::ok : exit_code::system_error;
}

// Back to the image the state came from (`rollback` = "BINARY_FD:STATE_FD"), which then
// answers that the upgrade failed and why. Returns only if that exec fails.
int go_back(const std::string& rollback, const std::string& why, const HandoverState* state,
            const std::vector<std::string>& run_args) {
    spdlog::critical("upgrade: cannot resume here: {}", why);
    std::cerr << "clusterd: cannot resume: " << why << "\n";
    auto colon = rollback.find(':');
    if (rollback.empty() || colon == std::string::npos) {
        drain_log(std::chrono::seconds(1));
        return exit_code::system_error;
    }
    int binary_fd = std::atoi(rollback.substr(0, colon).c_str());
    std::string state_fd = rollback.substr(colon + 1);
    if (state)  // what was taken over got close-on-exec back
        for (int fd : state->fds()) ::fcntl(fd, F_SETFD, 0);
    std::vector<std::string> args = {"clusterd", "run"};
    args.insert(args.end(), run_args.begin(), run_args.end());
    args.insert(args.end(), {"--resume-state-fd", state_fd, "--upgrade-failed", why});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    drain_log(std::chrono::seconds(1));
    // Close-on-exec: the binary is opened before the fds are closed, and the old image has
    // no use for this fd.
    ::fcntl(binary_fd, F_SETFD, FD_CLOEXEC);
    ::fexecve(binary_fd, argv.data(), environ);
    std::cerr << "clusterd: cannot go back to the previous binary: fexecve failed: "
              << std::strerror(errno) << "\n";
    return exit_code::system_error;
}

// `run ... --resume-state-fd N [--rollback B:N | --upgrade-failed WHY]`: the image an upgrade
// exec'd. `run_args`: its own arguments to `run`, without those three.
int resume(int state_fd, const std::string& rollback, const std::string& failed,
           const std::vector<std::string>& run_args) {
    ::signal(SIGPIPE, SIG_IGN);
    HandoverState state;
    try {
        state = decode_handover(read_handover_fd(state_fd));
        check_handover_fds(state);
    } catch (const std::exception& e) {
        return go_back(rollback, e.what(), nullptr, run_args);
    }
    if (state.saved_at != kNoTime)
        state.exec_gap = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count() -
                         state.saved_at;
    DaemonOverrides overrides{state.override_control, state.override_state_dir};
    std::optional<Config> config;
    try {
        config = load_config_string(state.config_text, state.config_source, &state.config_files);
        overrides.apply(config->daemon);
        setup_logging(state.log_level, config->daemon.log_file);
    } catch (const ConfigError& e) {
        const auto& d = e.diagnostics();
        return go_back(
            rollback,
            "its config does not load: " + (d.empty() ? std::string("?") : d.front().to_string()),
            &state, state.run_args);
    } catch (const std::exception& e) {
        return go_back(rollback, e.what(), &state, state.run_args);
    }
    boost::asio::io_context io(1);
    std::string control_path = config->daemon.control;
    std::string control_group = config->daemon.control_group;
    Supervisor supervisor(io, std::move(*config), state.config_path, builtin_worker_path(),
                          master_environment(), overrides);
    std::unique_ptr<ControlServer> control;
    try {
        control = std::make_unique<ControlServer>(io, state.control_fd, control_path, control_group,
                                                  control_handler(supervisor));
        supervisor.set_image(CLUSTERD_VERSION, self_binary_path(), control->listener(),
                             state.run_args);
        std::shared_ptr<Reporter> requester;
        if (state.requester_fd >= 0) requester = control->adopt_connection(state.requester_fd);
        supervisor.resume(state, requester, failed);
    } catch (const std::exception& e) {
        return go_back(rollback, e.what(), &state, state.run_args);
    }
    ::close(state_fd);
    if (auto colon = rollback.find(':'); colon != std::string::npos)
        ::close(std::atoi(rollback.substr(0, colon).c_str()));
    // The old image blocked every signal before its exec; what came meanwhile is pending and
    // is delivered now, to the handlers resume() installed.
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    control->start();
    return serve(io, *control, supervisor);
}

// -s wins; else the `daemon.control` of -c FILE; else, for a user other than root, that
// user's own daemon on the default socket (see common/paths.hpp) when one runs there; else
// the `daemon.control` of the default config file.
std::string control_socket(const std::string& socket, const std::string& config_file) {
    if (!socket.empty()) return socket;
    struct stat st {};
    if (config_file.empty() && ::geteuid() != 0 &&
        ::stat(default_paths().control.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
        return default_paths().control;
    std::string path = config_file;
    if (path.empty() && std::filesystem::exists(kDefaultConfigPath)) path = kDefaultConfigPath;
    if (path.empty()) return DaemonConfig{}.control;
    try {
        return load_config_file(path).daemon.control;
    } catch (const ConfigError& e) {
        std::cerr << "clusterd: " << path << " is invalid, using the default control socket\n";
        return DaemonConfig{}.control;
    }
}

int check(const std::string& path) {
    try {
        Config config = load_and_check(path, {});
        for (const auto& p : config.programs) {
            std::string from = p.source_file != config.source ? " (" + p.source_file + ")" : "";
            std::cout << describe_program(p) << from << "\n";
        }
        std::cout << path << ": ok\n";
        return exit_code::ok;
    } catch (const ConfigError& e) {
        print_errors(e);
        std::cerr << path << ": " << e.diagnostics().size() << " error"
                  << (e.diagnostics().size() == 1 ? "" : "s") << "\n";
        return exit_code::invalid_config;
    }
}

}  // namespace

int main(int argc, char** argv) {
    ensure_stdio();
    CLI::App app{
        "clusterd: a multi-process cluster supervisor (one worker per core, shared "
        "SO_REUSEPORT sockets, restarts with backoff)"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("clusterd ") + CLUSTERD_VERSION);

    std::string config_path = kDefaultConfigPath;
    std::string log_level;
    auto* run_cmd = app.add_subcommand("run", "Run the master in the foreground");
    auto* config_opt = run_cmd->add_option("-c,--config", config_path,
                                           "Config file (default: /etc/clusterd/clusterd.yaml if "
                                           "it exists, else the built-in default)");
    run_cmd->add_option("--log-level", log_level, "trace, debug, info, warn or error");
    DaemonOverrides overrides;
    run_cmd
        ->add_option("--control", overrides.control,
                     "Control socket path, instead of daemon.control")
        ->check([](const std::string& s) {
            return s.starts_with("/") && s.size() <= 107
                       ? std::string()
                       : std::string("an absolute socket path of at most 107 bytes");
        });
    run_cmd
        ->add_option("--state-dir", overrides.state_dir,
                     "State directory, instead of daemon.state_dir")
        ->check([](const std::string& s) {
            return s.starts_with("/") ? std::string() : std::string("an absolute path");
        });

    std::string check_path = kDefaultConfigPath;
    auto* check_cmd = app.add_subcommand("check", "Validate a config file and summarise it");
    check_cmd->add_option("-c,--config", check_path, "Config file")->capture_default_str();

    // Control commands: talk to a running daemon over its control socket.
    std::string socket_path;
    std::string client_config;
    bool json_output = false;
    std::string program;
    std::string arg;
    int workers = 0;
    bool rolling = false;
    nlohmann::json request;
    auto client = [&](const std::string& name, const std::string& help) {
        auto* cmd = app.add_subcommand(name, help);
        cmd->add_option("-s,--socket", socket_path, "Control socket of the daemon");
        cmd->add_option("-c,--config", client_config, "Find the control socket in this config");
        cmd->add_flag("--json", json_output, "Print the daemon's raw JSON replies");
        return cmd;
    };
    auto* status_cmd = client("status", "Show programs and workers (like pm2 list)");
    status_cmd->add_option("program", program, "Only this program");
    double watch_interval = 0;
    status_cmd->add_option("--watch", watch_interval, "Refresh every SECONDS (like pm2 monit)")
        ->expected(0, 1)
        ->default_str("1");
    client("reload", "Reload the config file: validate, diff, apply (rolling where needed)");
    auto* restart_cmd = client("restart", "Restart a program's workers");
    restart_cmd->add_option("program", program, "Program")->required();
    restart_cmd->add_flag("--rolling", rolling, "One slot at a time, new worker ready first");
    auto* scale_cmd = client("scale", "Set a program's number of workers");
    scale_cmd->add_option("program", program, "Program")->required();
    scale_cmd->add_option("workers", workers, "Number of workers")
        ->required()
        ->check(CLI::Range(1, limits::kMaxWorkers));
    auto* stop_cmd = client("stop", "Stop a program's workers (they stay stopped)");
    stop_cmd->add_option("program", program, "Program")->required();
    auto* start_cmd = client("start", "Start a program's stopped workers");
    start_cmd->add_option("program", program, "Program")->required();
    auto* signal_cmd = client("signal", "Send a signal to a program's workers");
    signal_cmd->add_option("program", program, "Program")->required();
    signal_cmd->add_option("signal", arg, "Signal, e.g. HUP or USR1")->required();
    auto* level_cmd = client("log-level", "Change the daemon's log level");
    level_cmd->add_option("level", arg, "trace, debug, info, warn or error")->required();

    int feed_lines = -1;
    bool follow = false;
    auto* events_cmd =
        client("events",
               "Follow the daemon's events (worker exits, restarts, reloads; like docker events)");
    events_cmd->add_option("program", program, "Only this program's events");
    events_cmd->add_option("-n,--lines", feed_lines, "Show the last N events first (default 0)")
        ->check(CLI::Range(0, kMaxFeedLines));
    bool no_follow = false;
    events_cmd->add_flag("--no-follow", no_follow, "Print the last events (-n) and exit");
    auto* logs_cmd =
        client("logs", "Show the last lines the workers printed, then follow (like pm2 logs)");
    logs_cmd->add_option("program", program, "Only this program (needed for output: FILE)");
    logs_cmd->add_option("-n,--lines", feed_lines, "How many of the last lines (default 20)")
        ->check(CLI::Range(0, kMaxFeedLines));
    logs_cmd->add_flag("-f,--follow", follow, "Then print new lines as they come");

    // Not a request of its own: `status` each refresh and the events followed (top.hpp).
    auto* top_cmd = app.add_subcommand(
        "top", "Live view of the workers: req/s, CPU, memory, events (pm2 monit)");
    top_cmd->add_option("program", program, "Only this program");
    double top_interval = 1.0;
    top_cmd->add_option("-i,--interval", top_interval, "Refresh every SECONDS (default 1)")
        ->check(CLI::Range(0.1, 3600.0));
    top_cmd->add_option("-s,--socket", socket_path, "Control socket of the daemon");
    top_cmd->add_option("-c,--config", client_config, "Find the control socket in this config");

    auto* version_cmd = client("version", "Print the version of clusterd and of the daemon");
    std::string binary;
    auto* upgrade_cmd =
        client("upgrade", "Re-exec the daemon in place from a new binary; workers keep running");
    upgrade_cmd
        ->add_option("--binary", binary,
                     "The binary to exec (default: the path of the binary the daemon runs)")
        ->check([](const std::string& s) {
            return s.starts_with("/") ? std::string() : std::string("an absolute path");
        });

    // The new image's side of an upgrade (not for people: `clusterd upgrade` runs them).
    int state_fd = -1;
    auto* check_upgrade_cmd = app.add_subcommand("upgrade-check", "");
    check_upgrade_cmd->group("");
    check_upgrade_cmd->add_option("--state-fd", state_fd)->required();
    // `run` as an upgrade execs it: the same arguments, and where the state is.
    int resume_fd = -1;
    std::string rollback;
    std::string upgrade_failed;
    run_cmd->add_option("--resume-state-fd", resume_fd)->group("");
    run_cmd->add_option("--rollback", rollback)->group("");
    run_cmd->add_option("--upgrade-failed", upgrade_failed)->group("");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : exit_code::usage;
    }
    if (*run_cmd) {
        // Its arguments as given, for the image an upgrade execs (without the upgrade's own).
        std::vector<std::string> run_args;
        for (int i = 2; i < argc; ++i) {
            std::string a = argv[i];
            if (a == "--resume-state-fd" || a == "--rollback" || a == "--upgrade-failed") {
                ++i;
                continue;
            }
            if (a.starts_with("--resume-state-fd=") || a.starts_with("--rollback=") ||
                a.starts_with("--upgrade-failed="))
                continue;
            run_args.push_back(a);
        }
        if (resume_fd >= 0) return resume(resume_fd, rollback, upgrade_failed, run_args);
        return run(config_path, config_opt->count() > 0, log_level, overrides, run_args);
    }
    if (*check_cmd) return check(check_path);
    if (*check_upgrade_cmd) return upgrade_check(state_fd);
    if (*top_cmd) return run_top(control_socket(socket_path, client_config), program, top_interval);
    for (auto* cmd : app.get_subcommands()) {
        std::string name = cmd->get_name();
        // The same typed request the daemon decodes, on the wire.
        ControlRequest typed;
        typed.cmd = control_command(name).value_or(ControlCommand::version);
        typed.program = program;
        typed.rolling = rolling;
        typed.workers = workers;
        typed.signal = arg;
        typed.level = arg;
        typed.binary = binary;
        if (name == "events") {
            typed.lines = feed_lines < 0 ? 0 : feed_lines;
            typed.follow = !no_follow;
        } else if (name == "logs") {
            typed.lines = feed_lines < 0 ? 20 : feed_lines;
            typed.follow = follow;
        }
        request = typed.to_json();
        if (name == "events" || name == "logs")
            return follow_feed(control_socket(socket_path, client_config), request, json_output);
        if (name == "version" && !json_output) std::cout << "clusterd " << CLUSTERD_VERSION << "\n";
        if (name == "status" && cmd->count("--watch") > 0)
            return watch_status(control_socket(socket_path, client_config), request,
                                watch_interval > 0 ? watch_interval : 1.0);
        int rc = run_client(control_socket(socket_path, client_config), request, json_output,
                            name == "upgrade" ? 60 : 0);
        return name == "version" ? 0 : rc;  // our own version was printed either way
    }
    (void)version_cmd;
    (void)upgrade_cmd;
    return exit_code::usage;
}

// clusterd: the master (`clusterd run`) and its command line.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <iostream>

#include "common/config.hpp"
#include "common/exit_codes.hpp"
#include "common/signals.hpp"
#include "daemon/logging.hpp"
#include "daemon/supervisor.hpp"

extern char** environ;

namespace {

using namespace clusterd;

constexpr const char* kDefaultConfigPath = "/etc/clusterd/clusterd.yaml";

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
    for (const auto& l : p.listen)
        line += ", " + l.name + "=" + l.address() + (l.reuseport ? " (reuseport)" : " (shared)");
    return line;
}

void print_errors(const ConfigError& e) {
    for (const auto& d : e.diagnostics()) std::cerr << d.to_string() << "\n";
}

// Where `run` gets its config: -c, else the default path if it exists, else built in.
std::optional<Config> load(const std::string& path, bool explicit_path) {
    try {
        if (explicit_path) return load_config_file(path);
        if (std::filesystem::exists(kDefaultConfigPath))
            return load_config_file(kDefaultConfigPath);
        return default_config();
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

int run(const std::string& config_path, bool explicit_path, const std::string& log_level) {
    auto config = load(config_path, explicit_path);
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

    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    boost::asio::io_context io(1);
    Supervisor supervisor(io, std::move(*config), builtin_worker_path(), std::move(env));
    try {
        supervisor.start();
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        return exit_code::system_error;
    }
    io.run();
    spdlog::shutdown();
    return supervisor.exit_code();
}

int check(const std::string& path) {
    try {
        Config config = load_config_file(path);
        for (const auto& p : config.programs) std::cout << describe_program(p) << "\n";
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

    std::string check_path = kDefaultConfigPath;
    auto* check_cmd = app.add_subcommand("check", "Validate a config file and summarise it");
    check_cmd->add_option("-c,--config", check_path, "Config file")->capture_default_str();

    auto* version_cmd = app.add_subcommand("version", "Print the version");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : exit_code::usage;
    }
    if (*run_cmd) return run(config_path, config_opt->count() > 0, log_level);
    if (*check_cmd) return check(check_path);
    if (*version_cmd) {
        std::cout << "clusterd " << CLUSTERD_VERSION << "\n";
        return 0;
    }
    return exit_code::usage;
}

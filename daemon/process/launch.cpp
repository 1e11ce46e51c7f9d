#include "daemon/process/launch.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <stdexcept>
#include <system_error>

#include "common/placeholders.hpp"

namespace clusterd {

namespace {

std::string path_of(const std::vector<std::string>& env) {
    for (const auto& e : env)
        if (e.starts_with("PATH=")) return e.substr(5);
    return kDefaultPath;
}

/// Why find_executable(name, path) found nothing, in the words of the check that failed.
std::string executable_problem(const std::string& name, const std::string& path) {
    std::string what = "executable \"" + name + "\" ";
    if (name.find('/') == std::string::npos) return what + "not found in PATH " + path;
    struct stat st {};
    if (::stat(name.c_str(), &st) != 0 && errno == ENOENT) return what + "not found";
    if (::stat(name.c_str(), &st) != 0)
        return what + "cannot be used: " + std::error_code(errno, std::system_category()).message();
    if (S_ISDIR(st.st_mode)) return what + "is a directory";
    if (!S_ISREG(st.st_mode)) return what + "is not a regular file";
    return what + "is not executable (no x permission for clusterd)";
}

}  // namespace

LaunchPlan LaunchPlan::resolve(const ProgramConfig& program, const std::string& builtin_worker,
                               const std::vector<std::string>& inherited) {
    LaunchPlan plan;
    std::map<std::string, std::string> env;
    if (program.inherit_env) {
        for (const auto& e : inherited) {
            auto eq = e.find('=');
            if (eq == std::string::npos || is_reserved_env(e.substr(0, eq))) continue;
            env[e.substr(0, eq)] = e.substr(eq + 1);
        }
    } else {
        env["PATH"] = kDefaultPath;
    }
    for (const auto& [k, v] : program.env) env[k] = v;
    for (const auto& [k, v] : env) plan.base_env.push_back(k + "=" + v);

    plan.argv =
        program.command.empty() ? std::vector<std::string>{builtin_worker} : program.command;
    // argv[0] is looked up in the worker's PATH, as execvp in the worker would.
    auto found = find_executable(plan.argv[0], path_of(plan.base_env));
    if (!found)
        throw LaunchError(program.command.empty() ? "command" : "command[0]",
                          "program " + program.name + ": " +
                              executable_problem(plan.argv[0], path_of(plan.base_env)));
    plan.path = *found;

    // A numeric id must fit: stoul("4294967296") cast to uid_t would be 0, root.
    auto numeric = [](const std::string& s) {
        return !s.empty() && s.size() <= 10 &&
               s.find_first_not_of("0123456789") == std::string::npos &&
               std::stoull(s) < 4294967295ULL;
    };
    if (program.user) {
        passwd* pw = numeric(*program.user)
                         ? ::getpwuid(static_cast<uid_t>(std::stoul(*program.user)))
                         : ::getpwnam(program.user->c_str());
        if (pw == nullptr)
            throw LaunchError(
                "user", "program " + program.name + ": unknown user \"" + *program.user + "\"");
        plan.uid = pw->pw_uid;
        plan.gid = pw->pw_gid;
    }
    if (program.group) {
        group* gr = numeric(*program.group)
                        ? ::getgrgid(static_cast<gid_t>(std::stoul(*program.group)))
                        : ::getgrnam(program.group->c_str());
        if (gr == nullptr)
            throw LaunchError(
                "group", "program " + program.name + ": unknown group \"" + *program.group + "\"");
        plan.gid = gr->gr_gid;
    }
    if ((program.user || program.group) && ::geteuid() != 0)
        throw LaunchError(
            program.user ? "user" : "group",
            "program " + program.name + ": `user`/`group` need clusterd to run as root");
    // Only root may raise a hard limit: say so now rather than fail every spawn.
    for (const auto& limit : program.rlimits) {
        rlimit current{};
        if (::geteuid() == 0 ||
            ::getrlimit(static_cast<__rlimit_resource_t>(limit.resource), &current) < 0)
            continue;
        if (current.rlim_max != RLIM_INFINITY && limit.hard > current.rlim_max)
            throw LaunchError("rlimits." + limit.name,
                              "program " + program.name + ": rlimits." + limit.name +
                                  " hard limit " +
                                  (limit.hard == RLimit::kUnlimited ? std::string("unlimited")
                                                                    : std::to_string(limit.hard)) +
                                  " is above clusterd's own (" + std::to_string(current.rlim_max) +
                                  "), which only root may raise");
    }
    if (plan.gid) {
        plan.groups.push_back(*plan.gid);
        if (program.user) {
            int n = 64;
            std::vector<gid_t> groups(static_cast<std::size_t>(n));
            const char* name = ::getpwuid(*plan.uid)->pw_name;
            if (::getgrouplist(name, *plan.gid, groups.data(), &n) < 0) {
                groups.resize(static_cast<std::size_t>(n));
                ::getgrouplist(name, *plan.gid, groups.data(), &n);
            }
            groups.resize(static_cast<std::size_t>(n));
            plan.groups = groups;
        }
    }
    return plan;
}

SpawnSpec make_spawn_spec(const ProgramConfig& program, const LaunchPlan& plan,
                          const SlotContext& slot) {
    SpawnSpec spec;
    spec.path = plan.path;
    // {listen.NAME.fd}: validated by the loader; an argument that fails is passed as written.
    spec.argv.reserve(plan.argv.size());
    for (const auto& arg : plan.argv) {
        std::string problem;
        spec.argv.push_back(expand_placeholders(arg, program.listen, problem).value_or(arg));
    }
    spec.env = plan.base_env;
    spec.env.push_back("CLUSTERD_PROGRAM=" + program.name);
    spec.env.push_back("CLUSTERD_WORKER_ID=" + std::to_string(slot.slot));
    spec.env.push_back("CLUSTERD_WORKERS=" + std::to_string(slot.workers));
    spec.env.push_back("CLUSTERD_GENERATION=" + std::to_string(slot.generation));
    spec.env.push_back("NOTIFY_SOCKET=" + slot.notify_socket);
    if (program.watchdog.count() > 0) {
        spec.env.push_back("WATCHDOG_USEC=" + std::to_string(program.watchdog.count() * 1000));
        // sd_watchdog_enabled() then answers yes in the worker only, not in its children.
        spec.env.push_back("WATCHDOG_PID=");  // the spawner writes the child's pid here
    }
    if (!slot.listen_fds.empty()) {
        spec.env.push_back("LISTEN_FDS=" + std::to_string(slot.listen_fds.size()));
        spec.env.push_back("LISTEN_FDNAMES=" + slot.listen_names);
        spec.env.push_back("LISTEN_PID=");  // the spawner writes the child's pid here
    }
    spec.pass_fds = slot.listen_fds;
    if (slot.ipc_fd >= 0) {
        // Node's IPC channel, as child_process.fork() gives it: one JSON value per line.
        spec.env.push_back("NODE_CHANNEL_FD=" + std::to_string(3 + slot.listen_fds.size()));
        spec.env.push_back("NODE_CHANNEL_SERIALIZATION_MODE=json");
        // The Node cluster worker's id: stable per slot (1-based), unlike the Node primary's
        // count of forks, so `cluster.worker.id === 1` names one worker across restarts.
        spec.env.push_back("NODE_UNIQUE_ID=" + std::to_string(slot.slot + 1));
        if (!program.env.contains("NODE_APP_INSTANCE"))  // PM2's (node-config reads it)
            spec.env.push_back("NODE_APP_INSTANCE=" + std::to_string(slot.slot));
        spec.pass_fds.push_back(slot.ipc_fd);
    }
    if (slot.board_fd >= 0) {
        spec.env.push_back("CLUSTERD_SCOREBOARD=" + std::to_string(3 + spec.pass_fds.size()) + ":" +
                           std::to_string(slot.board_offset));
        spec.pass_fds.push_back(slot.board_fd);
    }
    spec.cwd = program.cwd;
    spec.umask = program.umask;
    spec.uid = plan.uid;
    spec.gid = plan.gid;
    spec.groups = plan.groups;
    spec.output_fd = slot.output_fd;
    spec.cpu = slot.cpu;
    spec.rlimits = program.rlimits;
    return spec;
}

}  // namespace clusterd

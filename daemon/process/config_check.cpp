#include "daemon/process/config_check.hpp"

#include <grp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <system_error>

#include "daemon/process/launch.hpp"

namespace clusterd {

namespace {

std::string message_of(int error) {
    return std::error_code(error, std::system_category()).message();
}

std::string parent_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == 0 ? "/" : path.substr(0, slash);
}

// Whether every directory above `path` lets any user through (o+x).
bool searchable_by_all(const std::string& path) {
    for (auto slash = path.find('/', 1); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
        struct stat st {};
        if (::stat(path.substr(0, slash).c_str(), &st) < 0 || (st.st_mode & S_IXOTH) == 0)
            return false;
    }
    return true;
}

}  // namespace

std::string append_problem(const std::string& path, bool creates_parents) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) return path + " is a directory";
        if (::access(path.c_str(), W_OK) != 0)
            return path + " is not writable: " + message_of(errno);
        return "";
    }
    if (errno != ENOENT) return "cannot use " + path + ": " + message_of(errno);
    // The file would be created: its directory (or, with creates_parents, the nearest
    // existing ancestor) must be a directory clusterd may write.
    std::string dir = parent_of(path);
    while (creates_parents && dir != "/" && ::stat(dir.c_str(), &st) != 0 && errno == ENOENT)
        dir = parent_of(dir);
    if (::stat(dir.c_str(), &st) != 0)
        return "directory " + dir + " of " + path + ": " + message_of(errno);
    if (!S_ISDIR(st.st_mode)) return dir + " (in " + path + ") is not a directory";
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
        return "cannot create " + path + ": directory " + dir + " is not writable";
    return "";
}

std::string notify_dir_for(const std::string& control_path) {
    std::string base = control_path;
    if (base.size() > 5 && base.ends_with(".sock")) base.resize(base.size() - 5);
    // Workers of another user must be able to reach their socket: as root, a control
    // socket in a private directory gets its notify sockets under /run/clusterd instead.
    if (::geteuid() != 0 || searchable_by_all(base)) return base + ".notify";
    std::uint64_t h = 14695981039346656037ull;  // FNV-1a of the control socket's path
    for (unsigned char c : control_path) h = (h ^ c) * 1099511628211ull;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    return std::string("/run/clusterd/notify-") + hex;
}

std::string notify_dir_problem(const std::string& dir) {
    const std::size_t room = sizeof(sockaddr_un{}.sun_path) - 1;  // the path's bytes, no NUL
    if (dir.size() + 1 + kNotifySocketNameMax > room)
        return "too long for the workers' notify sockets: " + dir + "/ID is " +
               std::to_string(dir.size() + 1 + kNotifySocketNameMax) +
               " bytes with the longest ID, and a socket path has at most " + std::to_string(room) +
               ": choose a shorter daemon.control path";
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) return "";  // created at start-up
    if (!S_ISDIR(st.st_mode))
        return dir + " (for the workers' notify sockets) is not a directory: remove it";
    if (st.st_uid != ::geteuid())
        return dir + " (for the workers' notify sockets) is owned by uid " +
               std::to_string(st.st_uid) + ", not clusterd's uid " + std::to_string(::geteuid()) +
               ": remove it";
    return "";
}

std::vector<Diagnostic> check_runtime(const Config& config, const std::string& builtin_worker,
                                      const std::vector<std::string>& environ) {
    std::vector<Diagnostic> out;
    const DaemonConfig& d = config.daemon;
    if (!d.log_file.empty()) {
        if (!d.log_file.starts_with("/"))
            out.push_back(config.diagnostic("daemon.log_file", "expected an absolute file path"));
        else if (std::string why = append_problem(d.log_file, true); !why.empty())
            out.push_back(config.diagnostic("daemon.log_file", why));
    }
    if (std::string why = notify_dir_problem(notify_dir_for(d.control)); !why.empty())
        out.push_back(config.diagnostic("daemon.control", why));
    // The control server looks the group up by name (daemon/control/control_server.cpp).
    if (!d.control_group.empty() && ::getgrnam(d.control_group.c_str()) == nullptr)
        out.push_back(
            config.diagnostic("daemon.control_group", "unknown group \"" + d.control_group + "\""));
    for (const ProgramConfig& p : config.programs) {
        const std::string at = "programs." + p.name;
        try {
            LaunchPlan::resolve(p, builtin_worker, environ);
        } catch (const LaunchError& e) {
            std::string why = e.what();
            if (why.starts_with("program " + p.name + ": ")) why.erase(0, p.name.size() + 10);
            out.push_back(config.diagnostic(at + "." + e.key(), why));
        }
        if (p.output.is_file()) {
            if (std::string why = append_problem(p.output.path, false); !why.empty())
                out.push_back(config.diagnostic(at + ".output", why));
        }
        if (p.cwd) {
            struct stat st {};
            if (::stat(p.cwd->c_str(), &st) != 0)
                out.push_back(config.diagnostic(at + ".cwd", *p.cwd + ": " + message_of(errno)));
            else if (!S_ISDIR(st.st_mode))
                out.push_back(config.diagnostic(at + ".cwd", *p.cwd + " is not a directory"));
        }
    }
    return out;
}

}  // namespace clusterd

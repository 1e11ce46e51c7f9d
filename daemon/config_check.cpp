#include "daemon/config_check.hpp"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "daemon/launch.hpp"

namespace clusterd {

namespace {

std::string message_of(int error) {
    return std::error_code(error, std::system_category()).message();
}

std::string parent_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == 0 ? "/" : path.substr(0, slash);
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
    // The control server looks the group up by name (daemon/control_server.cpp).
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
        if (p.output != "inherit" && p.output != "capture") {
            if (std::string why = append_problem(p.output, false); !why.empty())
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

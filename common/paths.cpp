#include "common/paths.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>

namespace clusterd {

namespace {

// An XDG variable's value when it is set to an absolute path.
std::string absolute(const char* value) {
    return value != nullptr && value[0] == '/' ? std::string(value) : std::string();
}

}  // namespace

DefaultPaths default_paths(uid_t uid, const std::function<const char*(const char*)>& getenv) {
    if (uid == 0) return {"/run/clusterd/control.sock", "/var/lib/clusterd"};
    DefaultPaths paths;
    std::string runtime = absolute(getenv("XDG_RUNTIME_DIR"));
    paths.control =
        (runtime.empty() ? "/tmp/clusterd-" + std::to_string(uid) : runtime + "/clusterd") +
        "/control.sock";
    std::string state = absolute(getenv("XDG_STATE_HOME"));
    if (state.empty()) {
        std::string home = absolute(getenv("HOME"));
        if (home.empty()) {
            passwd* pw = ::getpwuid(uid);
            if (pw != nullptr) home = absolute(pw->pw_dir);
        }
        state = home.empty() ? "/tmp/clusterd-" + std::to_string(uid) : home + "/.local/state";
    }
    paths.state_dir = state + "/clusterd";
    return paths;
}

const DefaultPaths& default_paths() {
    static const DefaultPaths paths = default_paths(
        ::geteuid(), [](const char* name) { return static_cast<const char*>(std::getenv(name)); });
    return paths;
}

}  // namespace clusterd

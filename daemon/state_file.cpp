#include "daemon/state_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/fd.hpp"

namespace clusterd {

DaemonState load_state(const std::string& dir, std::string& error) {
    DaemonState state;
    std::string path = dir + "/state.json";
    std::ifstream in(path);
    if (!in) return state;
    try {
        nlohmann::json j = nlohmann::json::parse(in);
        const nlohmann::json scale = j.value("scale", nlohmann::json::object());
        for (const auto& [name, n] : scale.items())
            if (n.is_number_integer() && n.get<int>() > 0) state.scale[name] = n.get<int>();
    } catch (const std::exception& e) {
        error = path + ": " + e.what();
        state = {};
    }
    return state;
}

std::string save_state(const std::string& dir, const DaemonState& state) {
    if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST)
        return "mkdir(" + dir + ") failed: " + std::strerror(errno);
    nlohmann::json j;
    j["scale"] = state.scale;
    std::string text = j.dump(2) + "\n";
    std::string tmp = dir + "/state.json.new";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return "open(" + tmp + ") failed: " + std::strerror(errno);
    // No fsync: the master must not wait on the disk; rename keeps readers safe.
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        return "write(" + tmp + ") failed: " + std::strerror(errno);
    fd.reset();
    if (::rename(tmp.c_str(), (dir + "/state.json").c_str()) < 0)
        return "rename(" + tmp + ") failed: " + std::strerror(errno);
    return "";
}

}  // namespace clusterd

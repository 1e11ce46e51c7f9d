#include "daemon/supervisor/state_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/fd.hpp"

namespace clusterd {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// FNV-1a, 64 bits: stable across builds and versions, unlike std::hash.
std::uint64_t fnv1a(const std::string& text) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : text) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

}  // namespace

std::string state_file_path(const std::string& dir, const std::string& config_path) {
    if (config_path == "<built-in>") return dir + "/state-builtin.json";
    std::error_code ec;
    fs::path canonical = fs::weakly_canonical(fs::absolute(config_path, ec), ec);
    if (ec) canonical = config_path;
    // The file name, readable and safe, then the hash that makes it unique.
    std::string name;
    for (char c : canonical.filename().string())
        if (name.size() < 40)
            name += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'
                        ? c
                        : '_';
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016" PRIx64, fnv1a(canonical.string()));
    return dir + "/state-" + name + "-" + hash + ".json";
}

DaemonState load_state(const std::string& path, std::vector<std::string>& errors) {
    DaemonState state;
    std::ifstream in(path);
    if (!in) return state;
    try {
        json j = json::parse(in);
        if (j.contains("config") && j["config"].is_string()) state.config = j["config"];
        const json scale = j.value("scale", json::object());
        for (const auto& [name, entry] : scale.items()) {
            SavedScale saved;
            // {"workers": N, "cores": "auto"}, or a bare N from before `cores` was kept.
            const json& n = entry.is_object() ? entry.value("workers", json()) : entry;
            if (entry.is_object() && entry.contains("cores") && entry["cores"].is_string())
                saved.cores = entry["cores"];
            if (!n.is_number_integer() || n.get<std::int64_t>() < 1 ||
                n.get<std::int64_t>() > kMaxScale) {
                errors.push_back(path + ": " + name + ": the saved worker count " + n.dump() +
                                 " is not an integer from 1 to " + std::to_string(kMaxScale) +
                                 ", ignored");
                continue;
            }
            saved.workers = n.get<int>();
            state.scale[name] = saved;
        }
    } catch (const std::exception& e) {
        errors.push_back(path + ": " + e.what() + ", ignored");
        state = {};
    }
    return state;
}

std::string save_state(const std::string& path, const DaemonState& state) {
    std::error_code ec;
    fs::path dir = fs::path(path).parent_path();
    fs::create_directories(dir, ec);
    if (ec) return "cannot create " + dir.string() + ": " + ec.message();
    json j;
    j["config"] = state.config;
    j["scale"] = json::object();
    for (const auto& [name, saved] : state.scale)
        j["scale"][name] = {{"workers", saved.workers}, {"cores", saved.cores}};
    std::string text = j.dump(2) + "\n";
    std::string tmp = path + ".new";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return "open(" + tmp + ") failed: " + std::strerror(errno);
    // No fsync: the master must not wait on the disk; rename keeps readers safe.
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        return "write(" + tmp + ") failed: " + std::strerror(errno);
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) < 0)
        return "rename(" + tmp + ") failed: " + std::strerror(errno);
    return "";
}

}  // namespace clusterd

#include "common/cpus.hpp"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace clusterd {

namespace {

namespace fs = std::filesystem;

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) {
        s.remove_suffix(1);
    }
    return s;
}

std::optional<std::int64_t> parse_int(std::string_view s) {
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return value;
}

std::optional<std::string> read_file(const fs::path& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

/// The directories of `cgroup` (a path like "/a/b") and its ancestors below `mount`, deepest
/// first, ending with the mount itself. Only the ones that exist: inside a container the
/// mount root is often the container's own cgroup although /proc/self/cgroup names the
/// full path from the host's root.
std::vector<fs::path> cgroup_dirs(const fs::path& mount, std::string_view cgroup) {
    std::vector<fs::path> dirs;
    std::string rel(trim(cgroup));
    while (!rel.empty() && rel != "/") {
        fs::path dir = mount / fs::path(rel).relative_path();
        std::error_code ec;
        if (fs::is_directory(dir, ec)) dirs.push_back(dir);
        auto slash = rel.find_last_of('/');
        rel.resize(slash == std::string::npos ? 0 : slash);
    }
    dirs.push_back(mount);
    return dirs;
}

std::optional<double> smaller(std::optional<double> a, std::optional<double> b) {
    if (!a) return b;
    if (!b) return a;
    return std::min(*a, *b);
}

std::optional<double> v2_quota(const fs::path& mount, std::string_view cgroup) {
    std::optional<double> quota;
    for (const auto& dir : cgroup_dirs(mount, cgroup)) {
        if (auto text = read_file(dir / "cpu.max")) quota = smaller(quota, parse_cpu_max(*text));
    }
    return quota;
}

std::optional<double> v1_quota(const fs::path& mount, std::string_view cgroup) {
    std::optional<double> quota;
    for (const auto& dir : cgroup_dirs(mount, cgroup)) {
        auto q = read_file(dir / "cpu.cfs_quota_us");
        auto p = read_file(dir / "cpu.cfs_period_us");
        if (q && p) quota = smaller(quota, parse_cfs_quota(*q, *p));
    }
    return quota;
}

bool has_controller(std::string_view list, std::string_view name) {
    while (!list.empty()) {
        auto comma = list.find(',');
        if (list.substr(0, comma) == name) return true;
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

}  // namespace

int affinity_cpus() {
    // A fixed cpu_set_t holds 1024 CPUs; grow until the kernel's mask fits.
    for (int ncpus = 1024; ncpus <= (1 << 22); ncpus *= 2) {
        cpu_set_t* set = CPU_ALLOC(ncpus);
        if (set == nullptr) return 1;
        std::size_t size = CPU_ALLOC_SIZE(ncpus);
        CPU_ZERO_S(size, set);
        int rc = sched_getaffinity(0, size, set);
        int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
        int err = errno;
        CPU_FREE(set);
        if (rc == 0) return std::max(count, 1);
        if (err != EINVAL) return 1;
    }
    return 1;
}

std::optional<double> parse_cpu_max(std::string_view text) {
    text = trim(text);
    auto space = text.find(' ');
    std::string_view quota = text.substr(0, space);
    if (quota == "max") return std::nullopt;
    if (space == std::string_view::npos) return std::nullopt;
    auto q = parse_int(quota);
    auto p = parse_int(trim(text.substr(space + 1)));
    if (!q || !p || *q <= 0 || *p <= 0) return std::nullopt;
    return static_cast<double>(*q) / static_cast<double>(*p);
}

std::optional<double> parse_cfs_quota(std::string_view quota, std::string_view period) {
    auto q = parse_int(trim(quota));
    auto p = parse_int(trim(period));
    if (!q || !p || *q <= 0 || *p <= 0) return std::nullopt;
    return static_cast<double>(*q) / static_cast<double>(*p);
}

std::optional<double> cgroup_cpu_quota(const std::string& root) {
    const fs::path base(root);
    auto self = read_file(base / "proc/self/cgroup");
    if (!self) return std::nullopt;

    // Each line is "hierarchy-id:controllers:path". On a hybrid system the cpu controller
    // sits on a v1 hierarchy even though a "0::" line exists, so v1 wins when it has cpu.
    std::optional<std::string> v1_path;
    std::optional<std::string> v2_path;
    std::istringstream lines(*self);
    for (std::string line; std::getline(lines, line);) {
        auto first = line.find(':');
        auto second = first == std::string::npos ? first : line.find(':', first + 1);
        if (second == std::string::npos) continue;
        std::string_view id = std::string_view(line).substr(0, first);
        std::string_view controllers = std::string_view(line).substr(first + 1, second - first - 1);
        std::string path = line.substr(second + 1);
        if (id == "0" && controllers.empty()) {
            v2_path = path;
        } else if (has_controller(controllers, "cpu")) {
            v1_path = path;
        }
    }

    const fs::path mounts = base / "sys/fs/cgroup";
    if (v1_path) {
        for (const char* name : {"cpu,cpuacct", "cpu", "cpuacct,cpu"}) {
            std::error_code ec;
            if (fs::is_directory(mounts / name, ec)) return v1_quota(mounts / name, *v1_path);
        }
        return std::nullopt;
    }
    if (v2_path) {
        // Hybrid layouts mount the v2 hierarchy beside the v1 controllers.
        std::error_code ec;
        bool hybrid = fs::is_directory(mounts / "unified", ec);
        return v2_quota(hybrid ? mounts / "unified" : mounts, *v2_path);
    }
    return std::nullopt;
}

int combine_cpu_limits(int affinity, std::optional<double> quota) {
    int cpus = std::max(affinity, 1);
    if (quota && *quota > 0 && *quota < static_cast<double>(cpus)) {
        cpus = static_cast<int>(std::ceil(*quota));
    }
    return std::max(cpus, 1);
}

int available_cpus() {
    return combine_cpu_limits(affinity_cpus(), cgroup_cpu_quota("/"));
}

}  // namespace clusterd

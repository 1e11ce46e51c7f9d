// How many CPUs this process may use, for `cores: auto`:
// sched_getaffinity, limited by the cgroup CPU quota (v2 cpu.max, v1 cfs_quota_us /
// cfs_period_us), rounded up, at least 1.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace clusterd {

/// CPUs in this process's affinity mask (at least 1).
int affinity_cpus();

/// The quota in CPUs from the text of a cgroup v2 `cpu.max` ("max 100000" = none,
/// "150000 100000" = 1.5). nullopt when unlimited or malformed.
std::optional<double> parse_cpu_max(std::string_view text);

/// The quota in CPUs from cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` texts
/// (quota -1 = none). nullopt when unlimited or malformed.
std::optional<double> parse_cfs_quota(std::string_view quota, std::string_view period);

/// The CPU quota of the cgroup this process runs in, found through /proc/self/cgroup and
/// the cgroup mounts below `root` (normally "/"; tests point it at a fixture tree).
/// Looks at the process's own cgroup and its ancestors, the smallest quota wins.
std::optional<double> cgroup_cpu_quota(const std::string& root = "/");

/// min(affinity CPUs, ceil(quota)), at least 1.
int available_cpus();

/// Pure combination used by available_cpus(): min(affinity, ceil(quota)), at least 1.
int combine_cpu_limits(int affinity, std::optional<double> quota);

}  // namespace clusterd

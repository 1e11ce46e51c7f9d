#include "common/cpus.hpp"

#include <doctest/doctest.h>

#include <sched.h>

#include <string>

using clusterd::cgroup_cpu_quota;
using clusterd::combine_cpu_limits;
using clusterd::parse_cfs_quota;
using clusterd::parse_cpu_max;

namespace {

std::string cgroup_fixture(const char* name) {
    return std::string(CLUSTERD_FIXTURES) + "/cgroup/" + name;
}

}  // namespace

TEST_CASE("parse_cpu_max reads cgroup v2 cpu.max") {
    CHECK(parse_cpu_max("150000 100000") == doctest::Approx(1.5));
    CHECK(parse_cpu_max("150000 100000\n") == doctest::Approx(1.5));
    CHECK(parse_cpu_max("50000 100000") == doctest::Approx(0.5));
    CHECK(parse_cpu_max("400000 100000") == doctest::Approx(4.0));
    CHECK_FALSE(parse_cpu_max("max 100000").has_value());
    CHECK_FALSE(parse_cpu_max("max\n").has_value());
    CHECK_FALSE(parse_cpu_max("").has_value());
    CHECK_FALSE(parse_cpu_max("abc 100000").has_value());
    CHECK_FALSE(parse_cpu_max("100000").has_value());
    CHECK_FALSE(parse_cpu_max("100000 0").has_value());
    CHECK_FALSE(parse_cpu_max("0 100000").has_value());
}

TEST_CASE("parse_cfs_quota reads cgroup v1 quota and period, -1 meaning none") {
    CHECK(parse_cfs_quota("200000\n", "100000\n") == doctest::Approx(2.0));
    CHECK(parse_cfs_quota("25000", "100000") == doctest::Approx(0.25));
    CHECK_FALSE(parse_cfs_quota("-1", "100000").has_value());
    CHECK_FALSE(parse_cfs_quota("-1\n", "100000\n").has_value());
    CHECK_FALSE(parse_cfs_quota("", "100000").has_value());
    CHECK_FALSE(parse_cfs_quota("100000", "").has_value());
    CHECK_FALSE(parse_cfs_quota("100000", "0").has_value());
    CHECK_FALSE(parse_cfs_quota("lots", "100000").has_value());
}

TEST_CASE("cgroup_cpu_quota: v2 reads the process's cgroup and ignores an unlimited parent") {
    CHECK(cgroup_cpu_quota(cgroup_fixture("v2")) == doctest::Approx(1.5));
}

TEST_CASE("cgroup_cpu_quota: v2 with nested quotas takes the smallest ancestor") {
    CHECK(cgroup_cpu_quota(cgroup_fixture("v2-nested")) == doctest::Approx(2.5));
}

TEST_CASE("cgroup_cpu_quota: v2 cpu.max of \"max\" is no quota") {
    CHECK_FALSE(cgroup_cpu_quota(cgroup_fixture("v2-max")).has_value());
}

TEST_CASE("cgroup_cpu_quota: v2 without any cpu.max is no quota") {
    CHECK_FALSE(cgroup_cpu_quota(cgroup_fixture("v2-none")).has_value());
}

TEST_CASE("cgroup_cpu_quota: container with \"0::/\" reads the mount root") {
    CHECK(cgroup_cpu_quota(cgroup_fixture("v2-container")) == doctest::Approx(2.0));
}

TEST_CASE("cgroup_cpu_quota: container showing the host path falls back to the mount root") {
    CHECK(cgroup_cpu_quota(cgroup_fixture("v2-host-path")) == doctest::Approx(0.5));
}

TEST_CASE("cgroup_cpu_quota: v2 under the hybrid layout's unified mount") {
    CHECK(cgroup_cpu_quota(cgroup_fixture("v2-hybrid")) == doctest::Approx(1.0));
}

TEST_CASE("cgroup_cpu_quota: v1 cpu,cpuacct quota of the process's cgroup") {
    CHECK(cgroup_cpu_quota(cgroup_fixture("v1")) == doctest::Approx(3.0));
}

TEST_CASE("cgroup_cpu_quota: v1 separate cpu mount, quota on an ancestor, v1 wins over v2") {
    CHECK(cgroup_cpu_quota(cgroup_fixture("v1-nested")) == doctest::Approx(1.5));
}

TEST_CASE("cgroup_cpu_quota: v1 quota -1 is no quota") {
    CHECK_FALSE(cgroup_cpu_quota(cgroup_fixture("v1-none")).has_value());
}

TEST_CASE("cgroup_cpu_quota: a missing /proc/self/cgroup is no quota, not an error") {
    CHECK_FALSE(cgroup_cpu_quota(cgroup_fixture("does-not-exist")).has_value());
}

TEST_CASE("combine_cpu_limits takes the smaller of affinity and the rounded-up quota") {
    CHECK(combine_cpu_limits(8, std::nullopt) == 8);
    CHECK(combine_cpu_limits(8, 1.5) == 2);
    CHECK(combine_cpu_limits(8, 2.0) == 2);
    CHECK(combine_cpu_limits(8, 0.25) == 1);
    CHECK(combine_cpu_limits(4, 16.0) == 4);
    CHECK(combine_cpu_limits(4, 3.01) == 4);
    CHECK(combine_cpu_limits(2000, 1500.5) == 1501);
    CHECK(combine_cpu_limits(0, std::nullopt) == 1);
    CHECK(combine_cpu_limits(1, 0.0) == 1);
    CHECK(combine_cpu_limits(4, -1.0) == 4);
}

TEST_CASE("affinity_cpus matches the process's affinity mask") {
    cpu_set_t set;
    CPU_ZERO(&set);
    REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
    CHECK(clusterd::affinity_cpus() == CPU_COUNT(&set));
}

TEST_CASE("available_cpus is at least 1 and at most the affinity count") {
    int cpus = clusterd::available_cpus();
    CHECK(cpus >= 1);
    CHECK(cpus <= clusterd::affinity_cpus());
}

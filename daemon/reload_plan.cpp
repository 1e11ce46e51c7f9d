#include "daemon/reload_plan.hpp"

#include <algorithm>
#include <tuple>

namespace clusterd {

namespace {

bool same_listen(const std::vector<ListenConfig>& a, const std::vector<ListenConfig>& b) {
    auto key = [](const ListenConfig& l) {
        return std::tie(l.name, l.host, l.port, l.reuseport, l.backlog);
    };
    return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                      [&](const auto& x, const auto& y) { return key(x) == key(y); });
}

bool same_backoff(const BackoffConfig& a, const BackoffConfig& b) {
    return a.initial == b.initial && a.max == b.max && a.reset_after == b.reset_after;
}

}  // namespace

std::vector<std::string> worker_visible_changes(const ProgramConfig& a, const ProgramConfig& b) {
    std::vector<std::string> out;
    auto check = [&](bool same, const char* name) {
        if (!same) out.emplace_back(name);
    };
    check(a.command == b.command, "command");
    check(same_listen(a.listen, b.listen), "listen");
    check(a.env == b.env, "env");
    check(a.inherit_env == b.inherit_env, "inherit_env");
    check(a.user == b.user, "user");
    check(a.group == b.group, "group");
    check(a.cwd == b.cwd, "cwd");
    check(a.umask == b.umask, "umask");
    check(a.rlimits == b.rlimits, "rlimits");
    check(a.cpu_affinity == b.cpu_affinity, "cpu_affinity");
    check(a.output == b.output, "output");
    // WATCHDOG_USEC is in the worker's environment: it paces its heartbeat from it.
    check(a.watchdog == b.watchdog, "watchdog");
    return out;
}

std::vector<std::string> master_only_changes(const ProgramConfig& a, const ProgramConfig& b) {
    std::vector<std::string> out;
    auto check = [&](bool same, const char* name) {
        if (!same) out.emplace_back(name);
    };
    check(a.ready == b.ready, "ready");
    check(a.start_time == b.start_time, "start_time");
    check(a.start_timeout == b.start_timeout, "start_timeout");
    check(a.restart == b.restart, "restart");
    check(same_backoff(a.backoff, b.backoff), "backoff");
    check(a.stop_signal == b.stop_signal, "stop_signal");
    check(a.stop_timeout == b.stop_timeout, "stop_timeout");
    check(a.max_surge == b.max_surge, "max_surge");
    return out;
}

std::vector<ProgramDiff> plan_reload(const Config& before, const Config& after) {
    std::vector<ProgramDiff> out;
    auto find = [](const Config& c, const std::string& name) -> const ProgramConfig* {
        for (const auto& p : c.programs)
            if (p.name == name) return &p;
        return nullptr;
    };
    for (const auto& next : after.programs) {
        ProgramDiff d;
        d.name = next.name;
        d.workers_after = next.workers;
        const ProgramConfig* prev = find(before, next.name);
        if (prev == nullptr) {
            d.added = true;
            out.push_back(std::move(d));
            continue;
        }
        d.workers_before = prev->workers;
        d.scale = prev->workers != next.workers || prev->cores_auto != next.cores_auto;
        if (d.scale) d.changed.emplace_back("cores");
        auto visible = worker_visible_changes(*prev, next);
        auto master = master_only_changes(*prev, next);
        d.rolling_restart = !visible.empty();
        d.new_sockets = std::find(visible.begin(), visible.end(), "listen") != visible.end();
        d.in_place = !master.empty();
        d.changed.insert(d.changed.end(), visible.begin(), visible.end());
        d.changed.insert(d.changed.end(), master.begin(), master.end());
        if (!d.changed.empty()) out.push_back(std::move(d));
    }
    for (const auto& prev : before.programs) {
        if (find(after, prev.name) != nullptr) continue;
        ProgramDiff d;
        d.name = prev.name;
        d.removed = true;
        d.workers_before = prev.workers;
        out.push_back(std::move(d));
    }
    return out;
}

}  // namespace clusterd

#include "daemon/policy/reload_plan.hpp"

#include <algorithm>

namespace clusterd {

namespace {

const ProgramConfig* find(const Config& c, const std::string& name) {
    for (const auto& p : c.programs)
        if (p.name == name) return &p;
    return nullptr;
}

bool same_listen(const std::vector<ListenConfig>& a, const std::vector<ListenConfig>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
        return x.name == y.name && x.host == y.host && x.port == y.port &&
               x.reuseport == y.reuseport && x.backlog == y.backlog;
    });
}

ProgramPlan diff(const ProgramConfig& a, const ProgramConfig& b) {
    ProgramPlan plan;
    plan.name = b.name;
    auto worker_visible = [&](bool differs, const char* field) {
        if (!differs) return;
        plan.restart = true;
        plan.changed.push_back(field);
    };
    auto master_only = [&](bool differs, const char* field) {
        if (!differs) return;
        plan.in_place = true;
        plan.changed.push_back(field);
    };
    worker_visible(a.command != b.command, "command");
    worker_visible(a.env != b.env, "env");
    worker_visible(a.inherit_env != b.inherit_env, "inherit_env");
    worker_visible(a.user != b.user, "user");
    worker_visible(a.group != b.group, "group");
    worker_visible(a.cwd != b.cwd, "cwd");
    worker_visible(a.umask != b.umask, "umask");
    worker_visible(a.rlimits != b.rlimits, "rlimits");
    worker_visible(!same_listen(a.listen, b.listen), "listen");
    worker_visible(a.output != b.output, "output");
    worker_visible(a.cpu_affinity != b.cpu_affinity, "cpu_affinity");
    worker_visible(a.notify_access != b.notify_access, "notify_access");
    worker_visible(a.ipc != b.ipc, "ipc");
    if (a.watchdog != b.watchdog) {
        bool workers_ping_often_enough =
            b.watchdog.count() == 0 || (a.watchdog.count() > 0 && b.watchdog > a.watchdog);
        if (workers_ping_often_enough) {
            master_only(true, "watchdog");
        } else {
            worker_visible(true, "watchdog");
        }
    }
    master_only(a.ready != b.ready, "ready");
    master_only(a.start_time != b.start_time, "start_time");
    master_only(a.start_timeout != b.start_timeout, "start_timeout");
    master_only(a.restart != b.restart, "restart");
    master_only(a.backoff.initial != b.backoff.initial || a.backoff.max != b.backoff.max,
                "backoff");
    master_only(a.min_uptime != b.min_uptime, "min_uptime");
    master_only(a.abort_timeout != b.abort_timeout, "abort_timeout");
    master_only(a.stop_signal != b.stop_signal, "stop_signal");
    master_only(a.stop_timeout != b.stop_timeout, "stop_timeout");
    master_only(a.shutdown_message != b.shutdown_message, "shutdown_message");
    master_only(a.max_surge != b.max_surge, "max_surge");
    master_only(a.memory_limit != b.memory_limit, "memory_limit");
    master_only(a.max_age != b.max_age, "max_age");
    master_only(a.max_age_jitter != b.max_age_jitter, "max_age_jitter");
    master_only(a.depends_on != b.depends_on, "depends_on");
    master_only(a.hooks != b.hooks, "hooks");
    if (a.workers != b.workers || a.cores_auto != b.cores_auto) {
        plan.scale = b.workers;
        plan.changed.push_back("cores");
    }
    return plan;
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

}  // namespace

ReloadPlan plan_reload(const Config& current, const Config& next) {
    ReloadPlan plan;
    for (const auto& p : current.programs) {
        if (find(next, p.name) == nullptr) {
            ProgramPlan removed;
            removed.name = p.name;
            removed.kind = ProgramPlan::Kind::remove;
            plan.programs.push_back(removed);
        }
    }
    for (const auto& p : next.programs) {
        const ProgramConfig* old = find(current, p.name);
        if (old == nullptr) {
            ProgramPlan added;
            added.name = p.name;
            added.kind = ProgramPlan::Kind::add;
            plan.programs.push_back(added);
        } else {
            plan.programs.push_back(diff(*old, p));
        }
    }
    const DaemonConfig& a = current.daemon;
    const DaemonConfig& b = next.daemon;
    if (a.control != b.control) plan.daemon_changed.push_back("control");
    if (a.control_group != b.control_group) plan.daemon_changed.push_back("control_group");
    if (a.log_level != b.log_level) plan.daemon_changed.push_back("log_level");
    if (a.log_file != b.log_file) plan.daemon_changed.push_back("log_file");
    if (a.metrics != b.metrics) plan.daemon_changed.push_back("metrics");
    if (a.shutdown_timeout != b.shutdown_timeout) plan.daemon_changed.push_back("shutdown_timeout");
    return plan;
}

std::string ReloadPlan::summary() const {
    std::string s;
    auto add = [&](const std::string& part) { s += (s.empty() ? "" : "; ") + part; };
    for (const auto& p : programs) {
        switch (p.kind) {
            case ProgramPlan::Kind::add:
                add(p.name + ": added");
                break;
            case ProgramPlan::Kind::remove:
                add(p.name + ": removed");
                break;
            case ProgramPlan::Kind::keep:
                if (!p.changes_anything()) break;
                add(p.name + ": " +
                    (p.restart                ? "rolling restart"
                     : p.scale && !p.in_place ? "scale"
                                              : "in place") +
                    " (" + join(p.changed) + ")");
                break;
        }
    }
    if (!daemon_changed.empty()) add("daemon: " + join(daemon_changed));
    return s.empty() ? "no changes" : s;
}

}  // namespace clusterd

// Foreign sockets in our reuseport groups (daemon/net/listeners_diag.hpp): looked for whenever a
// program's sockets change (resteer() after a new table, a shut or a closed socket), logged
// once per change, and steered around (daemon/net/listeners.hpp). Steered by index (no eBPF),
// a foreign socket shifts the kernel's order under the program: it is looked for every
// kForeignCheckInterval too. Steered by socket identity, a foreign socket gets no connection
// of ours: it is looked for only when someone asks (status, /metrics), so the master does
// not wake up for it at rest.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>

#include "daemon/net/listeners_bpf.hpp"
#include "daemon/net/listeners_diag.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

namespace {

constexpr auto kForeignCheckInterval = std::chrono::seconds(2);

std::string command_name(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    std::getline(in, name);
    return name.empty() ? "?" : name;
}

// "pid 1234 (sleep), pid 1240 (sleep)" for the holders of `inodes`.
std::string holders_text(const std::vector<std::uint64_t>& inodes) {
    SocketHolders holders = socket_holders(inodes);
    std::vector<pid_t> pids;
    for (const auto& [inode, list] : holders.pids)
        for (pid_t pid : list)
            if (std::find(pids.begin(), pids.end(), pid) == pids.end()) pids.push_back(pid);
    std::sort(pids.begin(), pids.end());
    std::string text;
    for (pid_t pid : pids) {
        if (!text.empty()) text += ", ";
        text += "pid " + std::to_string(pid) + " (" + command_name(pid) + ")";
    }
    if (text.empty()) text = "no process this master can see";
    if (holders.truncated) text += ", and maybe more (not every process was looked at)";
    return text;
}

}  // namespace

bool Supervisor::Impl::check_listeners(Program& prog) {
    bool changed = false;
    for (const ForeignCheck& c : prog.sockets.check_foreign()) {
        if (!c.changed) continue;
        changed = true;
        if (!c.error.empty()) {
            spdlog::warn("{}: cannot look for foreign sockets on {} ({}): {}", prog.name, c.address,
                         c.listener, c.error);
            continue;
        }
        if (c.inodes.empty()) {
            if (c.regrouped_reset > 0)
                spdlog::warn(
                    "{}: every listening socket on {} ({}) is this master's again; its sockets "
                    "rejoined the group in slot order for steering to resume, which reset {} "
                    "queued connection{}",
                    prog.name, c.address, c.listener, c.regrouped_reset,
                    c.regrouped_reset == 1 ? "" : "s");
            else
                spdlog::info("{}: every listening socket on {} ({}) is this master's again{}",
                             prog.name, c.address, c.listener,
                             c.regrouped_reset == 0 ? "; steering resumes" : "");
            continue;
        }
        const std::size_t n = c.inodes.size();
        spdlog::warn(
            "{}: {} listening socket{} on {} ({}) in the same reuseport group {} not this "
            "master's, held by {}; {}",
            prog.name, n, n == 1 ? "" : "s", c.address, c.listener, n == 1 ? "is" : "are",
            holders_text(c.inodes),
            identity_steering_unavailable().empty()
                ? "new connections go to this master's sockets only (steering by socket)"
                : "steering is off while they remain (" + identity_steering_unavailable() +
                      "): the kernel spreads new connections over every socket of the group, "
                      "and those landing on a foreign socket are lost to this master");
    }
    return changed;
}

void Supervisor::Impl::check_all_listeners() {
    for (auto& p : programs) {
        if (p->removed || p->sockets.is_shut()) continue;
        if (!check_listeners(*p)) continue;
        p->steered.reset();
        resteer(*p, false);
    }
}

void Supervisor::Impl::arm_listener_check() {
    if (stopping || identity_steering_unavailable().empty()) return;
    listener_timer->arm(now() + kForeignCheckInterval, [this] {
        if (stopping) return;
        check_all_listeners();
        arm_listener_check();
    });
}

}  // namespace clusterd

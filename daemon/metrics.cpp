// What the master exposes on `daemon.metrics`: Prometheus /metrics and /healthz. Every
// figure is read when scraped (RSS and CPU from /proc, accept queues with TCP_INFO); no
// timer polls for them.
#include <unistd.h>

#include <algorithm>
#include <set>

#include "daemon/listen_queue.hpp"
#include "daemon/proc_stats.hpp"
#include "daemon/prometheus.hpp"
#include "daemon/supervisor_impl.hpp"

#ifndef CLUSTERD_VERSION
#define CLUSTERD_VERSION "unknown"
#endif

namespace clusterd {

namespace pm = prometheus;

namespace {

double seconds(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

std::optional<double> field(const Worker& w, const char* name) {
    auto it = w.fields.find(name);
    if (it == w.fields.end()) return std::nullopt;
    try {
        return std::stod(it->second);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

}  // namespace

std::string Supervisor::Impl::metrics_text() const {
    auto build = pm::gauge("clusterd_build_info", "clusterd's version; always 1");
    build.add({{"version", CLUSTERD_VERSION}}, 1);
    auto generation = pm::gauge("clusterd_config_generation", "Config loads so far, 1 at start");
    generation.add({}, static_cast<double>(config_generation));
    auto reloads = pm::counter("clusterd_reloads_total", "Reloads by result");
    reloads.add({{"result", "ok"}}, reloads_ok).add({{"result", "failed"}}, reloads_failed);
    auto uptime = pm::gauge("clusterd_uptime_seconds", "Seconds since the master started");
    uptime.add({}, seconds(Clock::now() - started_at));

    auto workers_f = pm::gauge("clusterd_program_workers", "Worker slots of a program");
    auto ready_f = pm::gauge("clusterd_program_ready_workers", "Workers ready to serve");
    auto prog_gen = pm::gauge("clusterd_program_generation", "Current generation of a program");
    auto accepting = pm::gauge("clusterd_program_accepting",
                               "1 while the program's sockets accept connections, 0 while they "
                               "refuse them because no worker can serve");
    auto failures = pm::gauge("clusterd_worker_failures",
                              "Failing runs of a slot in a row (0 after a healthy run)");
    auto next_try_f = pm::gauge("clusterd_worker_next_try_seconds",
                                "Seconds until a slot in backoff starts its next worker");
    auto late = pm::gauge("clusterd_worker_late", "1 while a worker's heartbeat is overdue");
    auto exits = pm::counter("clusterd_worker_exits_total",
                             "Worker exits by cause: exited, crashed, watchdog, memory, "
                             "start_timeout, spawn_failed, bad_config, requested");
    auto state = pm::gauge("clusterd_worker_state", "1 for the state a slot's worker is in");
    auto pid = pm::gauge("clusterd_worker_pid", "Process id of a slot's worker (0 = none)");
    auto wgen = pm::gauge("clusterd_worker_generation", "Generation of a slot's worker");
    auto wup = pm::gauge("clusterd_worker_uptime_seconds", "Seconds since the worker started");
    auto restarts = pm::counter("clusterd_worker_restarts_total", "Restarts of a slot");
    auto rss = pm::gauge("clusterd_worker_resident_memory_bytes", "Resident memory of a worker");
    auto cpu = pm::counter("clusterd_worker_cpu_seconds_total", "CPU time of a worker");
    auto heartbeat = pm::gauge("clusterd_worker_heartbeat_age_seconds",
                               "Seconds since the worker's last WATCHDOG=1 (or READY=1)");
    auto lag = pm::gauge("clusterd_worker_loop_lag_seconds",
                         "How late the worker's event-loop timer fired, as it reports");
    auto conns = pm::gauge("clusterd_worker_open_connections", "Open connections, as reported");
    auto requests = pm::counter("clusterd_worker_requests_total", "Requests served, as reported");
    auto queued = pm::gauge("clusterd_listener_queue_length",
                            "Connections waiting in a listening socket's accept queue");
    auto backlog = pm::gauge("clusterd_listener_backlog", "Accept queue size of a listener");
    auto foreign = pm::gauge("clusterd_listener_foreign_sockets",
                             "Listening sockets in a listener's reuseport group that are not "
                             "this master's");

    const TimePoint now = Clock::now();
    for (const auto& p : programs) {
        std::vector<pm::Label> pl{{"program", p->name}};
        workers_f.add(pl, static_cast<double>(p->slots.size()));
        prog_gen.add(pl, static_cast<double>(p->spec->generation));
        accepting.add(pl, p->sockets.is_shut() ? 0 : 1);
        int ready = 0;
        for (const auto& [cause, n] : p->exits)
            exits.add({{"program", p->name}, {"cause", cause}}, n);
        for (const Worker* w : p->slots) {
            const Slot& s = w->sm;
            std::vector<pm::Label> l{{"program", p->name}, {"slot", std::to_string(w->slot)}};
            if (s.state == SlotState::ready) ++ready;
            for (SlotState st : {SlotState::stopped, SlotState::starting, SlotState::ready,
                                 SlotState::stopping, SlotState::backoff, SlotState::failed}) {
                auto with = l;
                with.emplace_back("state", to_string(st));
                state.add(with, st == s.state ? 1 : 0);
            }
            pid.add(l, s.pid);
            wgen.add(l, static_cast<double>(w->spec->generation));
            wup.add(l, s.pid != 0 ? seconds(now - s.started_at) : 0);
            restarts.add(l, s.restarts);
            failures.add(l, s.failures);
            late.add(l, s.late ? 1 : 0);
            if (auto at = next_try(*w)) next_try_f.add(l, std::max(0.0, seconds(*at - now)));
            if (s.state == SlotState::ready) heartbeat.add(l, seconds(now - s.last_heartbeat));
            if (auto stats = s.pid != 0 ? read_proc_stats(s.pid) : std::nullopt) {
                rss.add(l, static_cast<double>(stats->rss_bytes));
                cpu.add(l, stats->cpu_seconds);
            }
            if (auto v = field(*w, "LOOP_LAG_US")) lag.add(l, *v / 1e6);
            if (auto v = field(*w, "CONNECTIONS")) conns.add(l, *v);
            if (auto v = field(*w, "REQUESTS")) requests.add(l, *v);
        }
        ready_f.add(pl, ready);
        std::set<int> seen;
        const auto& entries = p->sockets.entries();
        for (std::size_t e = 0; e < entries.size(); ++e)
            if (entries[e].reuseport)
                foreign.add({{"program", p->name}, {"listener", entries[e].name}},
                            static_cast<double>(p->sockets.foreign_sockets(e)));
        for (int k = 0; k < p->sockets.slots(); ++k) {
            auto socks = p->sockets.for_slot(k);
            for (std::size_t e = 0; e < socks.size() && e < entries.size(); ++e) {
                int fd = socks[e]->get();
                if (!seen.insert(fd).second) continue;  // a shared socket: once
                auto q = listen_queue(fd);
                if (!q) continue;
                std::vector<pm::Label> l{
                    {"program", p->name},
                    {"listener", entries[e].name},
                    {"slot", entries[e].reuseport ? std::to_string(k) : "shared"}};
                queued.add(l, q->queued);
                backlog.add(l, q->backlog);
            }
        }
    }
    std::vector<pm::Family> families{
        build,    generation, reloads, uptime,    workers_f, ready_f,    prog_gen,  exits,  state,
        pid,      wgen,       wup,     restarts,  rss,       cpu,        heartbeat, lag,    conns,
        requests, queued,     backlog, accepting, failures,  next_try_f, late,      foreign};
    if (auto drops = read_listen_drops()) {
        families.push_back(pm::counter("clusterd_tcp_listen_overflows_total",
                                       "Host-wide: connections dropped for a full accept queue")
                               .add({}, static_cast<double>(drops->overflows)));
        families.push_back(pm::counter("clusterd_tcp_listen_drops_total",
                                       "Host-wide: connections dropped while listening")
                               .add({}, static_cast<double>(drops->drops)));
    }
    return pm::format(families);
}

Health Supervisor::Impl::health() const {
    Health h;
    for (const auto& p : programs) {
        if (p->removed) continue;
        int ready = 0;
        for (const Worker* w : p->slots) ready += w->sm.state == SlotState::ready;
        if (ready > 0) continue;
        h.healthy = false;
        h.reason += p->name + ": 0/" + std::to_string(p->slots.size()) + " workers ready\n";
    }
    return h;
}

}  // namespace clusterd

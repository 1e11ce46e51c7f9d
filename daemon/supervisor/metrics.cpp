// What the master exposes on `daemon.metrics`: Prometheus /metrics and /healthz. Every
// figure is read when scraped (RSS and CPU from /proc, accept queues with TCP_INFO); no
// timer polls for them.
#include <unistd.h>

#include <algorithm>
#include <set>

#include "daemon/control/control_server.hpp"
#include "daemon/metrics/prometheus.hpp"
#include "daemon/net/listen_queue.hpp"
#include "daemon/process/logging.hpp"
#include "daemon/process/proc_stats.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

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

// The control socket's and this endpoint's own connection limits and what they did.
void server_families(std::vector<pm::Family>& out, const ControlServerStats* control,
                     const MetricsServer* metrics) {
    auto open = pm::gauge("clusterd_server_connections",
                          "Open connections of the master's control socket and metrics endpoint");
    auto limit = pm::gauge("clusterd_server_connections_limit",
                           "Most connections the server keeps open (max_connections)");
    auto accepted = pm::counter("clusterd_server_connections_accepted_total",
                                "Connections accepted by the server");
    auto closed = pm::counter(
        "clusterd_server_connections_closed_total",
        "Connections the server closed early, by reason: shed (for a new one at the limit), "
        "refused (at the limit, all busy), denied (no permission), idle_timeout, "
        "request_timeout, write_timeout, oversized, queue_overflow");
    auto shortages = pm::counter("clusterd_server_accept_errors_total",
                                 "accept() failures for want of file descriptors (EMFILE, ENFILE)");
    auto shed_fd = pm::counter("clusterd_server_accept_shed_total",
                               "Waiting connections closed at once for want of file descriptors");
    auto requests =
        pm::counter("clusterd_server_requests_total",
                    "Requests handled; result=invalid: control lines that did not decode");
    if (control) {
        std::vector<pm::Label> l{{"server", "control"}};
        auto with = [&](const char* reason) {
            auto r = l;
            r.emplace_back("reason", reason);
            return r;
        };
        open.add(l, static_cast<double>(control->open));
        limit.add(l, static_cast<double>(control->limit));
        accepted.add(l, static_cast<double>(control->accepted));
        closed.add(with("shed"), static_cast<double>(control->shed_idle))
            .add(with("refused"), static_cast<double>(control->refused_busy))
            .add(with("denied"), static_cast<double>(control->denied))
            .add(with("idle_timeout"), static_cast<double>(control->idle_timeouts))
            .add(with("request_timeout"), static_cast<double>(control->request_timeouts))
            .add(with("write_timeout"), static_cast<double>(control->write_timeouts))
            .add(with("oversized"), static_cast<double>(control->oversized))
            .add(with("queue_overflow"), static_cast<double>(control->queue_overflows));
        shortages.add(l, static_cast<double>(control->accept_shortages));
        shed_fd.add(l, static_cast<double>(control->accept_shed));
        requests
            .add({{"server", "control"}, {"result", "ok"}}, static_cast<double>(control->requests))
            .add({{"server", "control"}, {"result", "invalid"}},
                 static_cast<double>(control->bad_requests));
    }
    if (metrics) {
        const MetricsServerStats& m = metrics->stats();
        std::vector<pm::Label> l{{"server", "metrics"}};
        auto with = [&](const char* reason) {
            auto r = l;
            r.emplace_back("reason", reason);
            return r;
        };
        open.add(l, static_cast<double>(metrics->connections()));
        limit.add(l, static_cast<double>(metrics->options().max_connections));
        accepted.add(l, static_cast<double>(m.accepted));
        closed.add(with("shed"), static_cast<double>(m.shed))
            .add(with("request_timeout"), static_cast<double>(m.header_timeouts))
            .add(with("write_timeout"), static_cast<double>(m.timeouts));
        shortages.add(l, static_cast<double>(m.accept_shortages));
        shed_fd.add(l, static_cast<double>(m.accept_shed));
        requests.add({{"server", "metrics"}, {"result", "ok"}}, static_cast<double>(m.requests));
    }
    for (auto* f : {&open, &limit, &accepted, &closed, &shortages, &shed_fd, &requests})
        out.push_back(std::move(*f));
}

}  // namespace

std::string Supervisor::Impl::metrics_text() const {
    auto build = pm::gauge("clusterd_build_info", "clusterd's version; always 1");
    build.add({{"version", version}}, 1);
    auto upgrades_f =
        pm::counter("clusterd_upgrades_total",
                    "Upgrades in place (re-exec of a new binary) since the master started");
    upgrades_f.add({}, static_cast<double>(upgrades));
    auto generation = pm::gauge("clusterd_config_generation", "Config loads so far, 1 at start");
    generation.add({}, static_cast<double>(config_generation));
    auto reloads = pm::counter("clusterd_reloads_total", "Reloads by result");
    reloads.add({{"result", "ok"}}, reloads_ok).add({{"result", "failed"}}, reloads_failed);
    auto uptime = pm::gauge("clusterd_uptime_seconds", "Seconds since the master started");
    uptime.add({}, seconds(now() - started_at));

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
                             "Worker exits by cause: exited, crashed, watchdog, memory, max_age, "
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
    auto rejected = pm::counter("clusterd_worker_http_rejected_total",
                                "Requests the worker refused for their head or body (400, 413, "
                                "417, 431, 501), as reported");
    auto bytes = pm::counter("clusterd_worker_bytes_total",
                             "Bytes read from (in) and written to (out) clients, as reported");
    auto timeouts = pm::counter("clusterd_worker_http_timeouts_total",
                                "Requests the worker answered 408 (head or body too slow), as "
                                "reported");
    auto queued = pm::gauge("clusterd_listener_queue_length",
                            "Connections waiting in a listening socket's accept queue");
    auto backlog = pm::gauge("clusterd_listener_backlog", "Accept queue size of a listener");
    auto foreign = pm::gauge("clusterd_listener_foreign_sockets",
                             "Listening sockets in a listener's reuseport group that are not "
                             "this master's");

    auto board_checks =
        pm::counter("clusterd_watchdog_checks_total",
                    "Times the master checked the heartbeats its workers keep in the scoreboard "
                    "(one timer per program, due at their earliest deadline)");
    auto hook_runs = pm::counter("clusterd_hook_runs_total",
                                 "Hook runs by result: ok, failed (exit status, not found, "
                                 "spawn failed), timeout, dropped (queue full)");
    auto waiting = pm::gauge("clusterd_program_waiting_dependencies",
                             "1 while a program's start waits for its depends_on");

    const TimePoint now = this->now();
    for (const auto& p : programs) {
        std::vector<pm::Label> pl{{"program", p->name}};
        for (const auto& [result, n] : p->hook_runs)
            hook_runs.add({{"program", p->name}, {"result", result}}, static_cast<double>(n));
        board_checks.add({{"program", p->name}}, static_cast<double>(p->board_checks));
        waiting.add(pl, p->waiting_for.empty() ? 0 : 1);
        workers_f.add(pl, static_cast<double>(p->slots.size()));
        prog_gen.add(pl, static_cast<double>(p->spec->generation));
        accepting.add(pl, p->sockets.is_shut() ? 0 : 1);
        int ready = 0;
        for (const auto& [cause, n] : p->exits)
            exits.add({{"program", p->name}, {"cause", to_string(cause)}}, n);
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
            if (auto stats = s.pid != 0 ? exec.figures(s.pid) : std::nullopt) {
                rss.add(l, static_cast<double>(stats->rss_bytes));
                cpu.add(l, stats->cpu_seconds);
            }
            if (auto v = field(*w, "LOOP_LAG_US")) lag.add(l, *v / 1e6);
            if (auto v = field(*w, "CONNECTIONS")) conns.add(l, *v);
            if (auto v = field(*w, "REQUESTS")) requests.add(l, *v);
            if (auto v = field(*w, "HTTP_REJECTED")) rejected.add(l, *v);
            if (auto v = field(*w, "HTTP_TIMEOUTS")) timeouts.add(l, *v);
            for (const char* dir : {"in", "out"})
                if (auto v = field(*w, dir[0] == 'i' ? "BYTES_IN" : "BYTES_OUT")) {
                    auto ld = l;
                    ld.push_back({"direction", dir});
                    bytes.add(ld, *v);
                }
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
        build,    upgrades_f, generation, reloads,      uptime,   workers_f,  ready_f,
        prog_gen, exits,      state,      pid,          wgen,     wup,        restarts,
        rss,      cpu,        heartbeat,  lag,          conns,    requests,   rejected,
        timeouts, queued,     backlog,    accepting,    failures, next_try_f, late,
        foreign,  hook_runs,  waiting,    board_checks, bytes};
    {
        auto published = pm::counter("clusterd_feed_entries_total",
                                     "Entries published: events, and output lines kept for `logs`");
        published.add({{"feed", "events"}}, static_cast<double>(events.published()));
        published.add({{"feed", "logs"}}, static_cast<double>(logs.published()));
        auto kept = pm::gauge("clusterd_feed_kept_bytes",
                              "Bytes of entries kept (limits: events 1 MiB in all, logs 256 KiB "
                              "per program)");
        kept.add({{"feed", "events"}}, static_cast<double>(events.kept_bytes()));
        kept.add({{"feed", "logs"}}, static_cast<double>(logs.kept_bytes()));
        auto followers =
            pm::gauge("clusterd_feed_followers", "Control connections following events or logs");
        followers.add({{"feed", "events"}}, static_cast<double>(events.followers()));
        followers.add({{"feed", "logs"}}, static_cast<double>(logs.followers()));
        families.push_back(published);
        families.push_back(kept);
        families.push_back(followers);
    }
    server_families(families, control_server_stats(), metrics.get());
    const NotifyCounters& nc = notify_counters;
    families.push_back(
        pm::counter("clusterd_notify_rejected_total",
                    "Notify messages or parts of them the master dropped, by reason (limits: "
                    "clusterd(8), \"Notify socket\")")
            .add({{"reason", "oversized"}}, static_cast<double>(nc.oversized))
            .add({{"reason", "no_credentials"}}, static_cast<double>(nc.no_credentials))
            .add({{"reason", "foreign_sender"}}, static_cast<double>(nc.foreign_sender))
            .add({{"reason", "field_limit"}}, static_cast<double>(nc.fields_dropped))
            .add({{"reason", "status_truncated"}}, static_cast<double>(nc.status_truncated)));
    families.push_back(pm::counter("clusterd_notify_warnings_suppressed_total",
                                   "Notify warnings not logged, over a worker's log budget")
                           .add({}, static_cast<double>(nc.warnings_suppressed)));
    const NodeChannelCounters& node = node_counters;
    families.push_back(
        pm::counter("clusterd_node_channel_total",
                    "Node IPC channels (ipc: node): messages read, sockets given to and refused "
                    "to listen() calls, and what was dropped (limits: clusterd(8), \"Node "
                    "programs\")")
            .add({{"event", "message"}}, static_cast<double>(node.messages))
            .add({{"event", "server_given"}}, static_cast<double>(node.servers_given))
            .add({{"event", "server_refused"}}, static_cast<double>(node.servers_refused))
            .add({{"event", "malformed"}}, static_cast<double>(node.malformed))
            .add({{"event", "handle_closed"}}, static_cast<double>(node.handles_closed))
            .add({{"event", "write_dropped"}}, static_cast<double>(node.writes_dropped))
            .add({{"event", "warning_suppressed"}}, static_cast<double>(node.warnings_suppressed)));
    if (auto drops = read_listen_drops()) {
        families.push_back(pm::counter("clusterd_tcp_listen_overflows_total",
                                       "Host-wide: connections dropped for a full accept queue")
                               .add({}, static_cast<double>(drops->overflows)));
        families.push_back(pm::counter("clusterd_tcp_listen_drops_total",
                                       "Host-wide: connections dropped while listening")
                               .add({}, static_cast<double>(drops->drops)));
    }
    families.push_back(pm::counter("clusterd_log_lines_dropped_total",
                                   "Master log lines dropped because the log output stalled "
                                   "(its queue holds 1 MiB)")
                           .add({}, static_cast<double>(log_lines_dropped())));
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

// The supervisor: start-up (everything that can fail happens before the first fork), programs
// and workers made from the config, and the public face main() uses.

#include "daemon/supervisor/supervisor.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <cstdlib>

#include "common/exit_codes.hpp"
#include "daemon/process/proc_stats.hpp"
#include "daemon/process/systemd.hpp"
#include "daemon/supervisor/asio_executor.hpp"
#include "daemon/supervisor/supervisor_impl.hpp"

namespace clusterd {

UniqueFd open_output(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!fd) throw std::system_error(errno, std::system_category(), "open(" + path + ") failed");
    return fd;
}

Supervisor::Impl::Impl(asio::io_context& io_, Executor& exec_, Config cfg, std::string path,
                       std::string worker, std::vector<std::string> env)
    : io(io_),
      exec(exec_),
      config(std::move(cfg)),
      config_path(std::move(path)),
      builtin_worker(std::move(worker)),
      environment(std::move(env)),
      shutdown_timer(exec_.make_timer()),
      systemd_notify(std::getenv("NOTIFY_SOCKET") != nullptr),
      systemd_watchdog(exec_.make_timer()),
      memory_timer(exec_.make_timer()),
      listener_timer(exec_.make_timer()) {}

// ---- start-up: everything that can fail happens before the first fork ----

void Supervisor::Impl::start() {
    started_at = now();
    // Before any socket is bound: a directory that cannot be used stops the start here.
    notify_dir = std::make_unique<NotifyDir>(NotifyDir::for_control(config.daemon.control));
    std::vector<std::string> errors;
    std::string file = state_file();
    // A state file from before it was kept per config (<state_dir>/state.json) belongs to
    // the default config.
    std::string legacy = config.daemon.state_dir + "/state.json";
    if (config_path == kDefaultConfigPath && ::access(file.c_str(), F_OK) != 0 &&
        ::access(legacy.c_str(), F_OK) == 0) {
        spdlog::info("reading runtime scale from {} (it moves to {})", legacy, file);
        file = legacy;
    }
    state = load_state(file, errors);
    for (const auto& e : errors) spdlog::warn("state file: {}", e);
    bool dropped = false;
    for (const auto& pc : config.programs) {
        auto it = state.scale.find(pc.name);
        if (it != state.scale.end() && !it->second.cores.empty() &&
            it->second.cores != cores_text(pc)) {
            spdlog::info(
                "{}: runtime scale of {} workers ignored: cores in the config changed from {} to "
                "{} since it was set",
                pc.name, it->second.workers, it->second.cores, cores_text(pc));
            state.scale.erase(it);
            it = state.scale.end();
            dropped = true;
        }
        int n = it != state.scale.end() ? it->second.workers : pc.workers;
        std::unique_ptr<Program> prog;
        try {
            prog = make_program(pc, n);
        } catch (const std::exception& e) {
            // A saved scale the machine cannot hold (sockets, file descriptors) must not
            // keep the daemon from starting: the config's count is tried instead.
            if (it == state.scale.end()) throw;
            spdlog::warn("{}: runtime scale of {} workers ignored: {}", pc.name, n, e.what());
            state.scale.erase(it);
            it = state.scale.end();
            dropped = true;
            n = pc.workers;
            prog = make_program(pc, n);
        }
        if (it != state.scale.end()) {
            prog->runtime_scale = n;
            spdlog::info("{}: {} workers from a runtime scale (config says {}; {})", pc.name, n,
                         pc.workers, file);
        }
        programs.push_back(std::move(prog));
    }
    if (dropped || file != state_file()) persist_scale();
    for (const auto& [name, sock] : activated) {
        bool used = false;
        for (const auto& pc : config.programs)
            for (const auto& l : pc.listen) used = used || l.name == name;
        spdlog::info(
            "socket \"{}\" (fd {}) passed by systemd{}", name, sock->get(),
            used ? ": used instead of binding" : ": no listen entry has that name, unused");
    }
    if (!config.daemon.metrics.empty()) {
        metrics = std::make_unique<MetricsServer>(
            io, config.daemon.metrics,
            [this] {
                refresh_for_reader();
                return metrics_text();
            },
            [this] { return health(); });
        metrics->start();
        spdlog::info("metrics on http://{}/metrics and /healthz", metrics->address());
    }
    start_loop();
    for (auto& prog : programs) {
        prog->waiting_for = join_lines(unmet_dependencies(*prog), ", ");
        if (!prog->waiting_for.empty())
            spdlog::info("{}: waiting for {} to be ready (depends_on)", prog->name,
                         prog->waiting_for);
    }
    for (std::size_t i = 0; i < programs.size(); ++i) {
        Program* prog = programs[i].get();
        if (!prog->waiting_for.empty()) continue;
        spdlog::info("{}: starting {} worker{} ({})", prog->name, prog->slots.size(),
                     prog->slots.size() == 1 ? "" : "s", prog->spec->plan.path);
        prog->started_at = now();
        for (Worker* w : prog->slots) dispatch(w, event::Start{});
    }
}

// ---- depends_on: a program starts once each of its dependencies has a ready worker ----

std::vector<std::string> Supervisor::Impl::unmet_dependencies(const Program& prog) const {
    std::vector<std::string> unmet;
    for (const std::string& name : prog.spec->config.depends_on) {
        const Program* dep = nullptr;
        for (const auto& p : programs)
            if (p->name == name && !p->removed) dep = p.get();
        bool ready = dep && std::any_of(dep->slots.begin(), dep->slots.end(), [](const Worker* w) {
                         return w->sm.state == SlotState::ready;
                     });
        if (!ready) unmet.push_back(name);
    }
    return unmet;
}

void Supervisor::Impl::start_waiting_programs() {
    if (stopping) return;
    std::vector<Program*> ready;
    for (auto& p : programs) {
        if (p->waiting_for.empty() || p->removed) continue;
        p->waiting_for = join_lines(unmet_dependencies(*p), ", ");
        if (p->waiting_for.empty()) ready.push_back(p.get());
    }
    for (Program* prog : ready) {
        spdlog::info("{}: {} ready: starting {} worker{}", prog->name,
                     join_lines(prog->spec->config.depends_on, ", "), prog->slots.size(),
                     prog->slots.size() == 1 ? "" : "s");
        prog->started_at = now();
        if (prog->stopped) continue;
        std::vector<std::uint64_t> ids;
        for (const Worker* w : prog->slots) ids.push_back(w->id);
        for (std::uint64_t id : ids)
            if (auto it = workers.find(id); it != workers.end())
                dispatch(it->second.get(), event::Start{});
    }
}

void Supervisor::Impl::start_loop() {
    exec.start([this](pid_t pid, int status) { on_child_exit(pid, status); },
               [this](int sig) { on_signal(sig); });
    arm_memory_check();
    arm_listener_check();
    if (auto interval = systemd_watchdog_interval(); interval.count() > 0)
        do_systemd_watchdog(interval / 2);
}

std::shared_ptr<const ProgramSpec> Supervisor::Impl::make_spec(const ProgramConfig& pc,
                                                               std::uint64_t generation) const {
    auto spec = std::make_shared<ProgramSpec>();
    spec->config = pc;
    spec->policy = SlotPolicy::from(pc);
    spec->plan = LaunchPlan::resolve(pc, builtin_worker, environment);
    spec->generation = generation;
    if (pc.output.is_file()) *spec->output = open_output(pc.output.path);
    return spec;
}

// Beyond its listening and notify sockets, a worker holds in the master the read end of its
// output pipe (output: capture) and, until its execve, of its exec-status pipe; new workers
// all start at once. The child, a copy of the master, needs a free fd per listener to move
// them into place; the rest is for the output pipe's write end, the control and metrics
// servers and the log.
namespace {
constexpr std::size_t kFdHeadroom = 16;
}  // namespace

void Supervisor::Impl::check_fd_headroom(const ProgramConfig& pc, std::size_t new_workers) const {
    // Its notify socket, its output pipe, its Node channel.
    std::size_t per_worker =
        1 + (pc.output.kind == Output::Kind::capture ? 1 : 0) + (pc.ipc == IpcMode::node ? 1 : 0);
    std::size_t need = new_workers * per_worker + pc.listen.size() + kFdHeadroom;
    auto available = free_fds();
    if (!available || *available >= need) return;
    throw std::runtime_error(std::to_string(new_workers) + " more worker" +
                             (new_workers == 1 ? "" : "s") + " would need " + std::to_string(need) +
                             " more file descriptors, " + std::to_string(*available) +
                             " are left under the daemon's RLIMIT_NOFILE (LimitNOFILE=)");
}

std::unique_ptr<Program> Supervisor::Impl::make_program(const ProgramConfig& pc, int n) {
    auto prog = std::make_unique<Program>();
    prog->name = pc.name;
    prog->spec = make_spec(pc, 1);
    prog->sockets = SocketTable(pc.listen, n, nullptr, &activated);
    resteer(*prog);
    try {
        // Each worker's notify socket is a file descriptor of the master's: opened now, so
        // that a count the machine cannot hold fails here, before anything starts.
        for (int k = 0; k < n; ++k) {
            prog->slots.push_back(add_worker(*prog, k, prog->spec, prog->sockets.for_slot(k)));
            open_notify(prog->slots.back());
        }
        check_fd_headroom(pc, static_cast<std::size_t>(n));
    } catch (...) {
        for (Worker* w : prog->slots) workers.erase(w->id);  // never started
        throw;
    }
    for (const auto& l : pc.listen)
        spdlog::info("{}: listening on {} ({}{})", pc.name, l.address(), l.name,
                     l.reuseport ? ", one reuseport socket per worker" : ", shared socket");
    return prog;
}

Worker* Supervisor::Impl::add_worker(Program& prog, int slot,
                                     std::shared_ptr<const ProgramSpec> spec,
                                     std::vector<SocketRef> sockets) {
    std::uint64_t id = next_worker_id++;
    auto w = std::make_unique<Worker>(exec, id, &prog, slot, std::move(spec), std::move(sockets));
    Worker* raw = w.get();
    if (raw->spec->config.output.kind == Output::Kind::capture)
        raw->capture = make_capture(prog, slot);
    workers.emplace(id, std::move(w));
    return raw;
}

std::string Supervisor::Impl::label(const Worker* w) const {
    return w->program->name + "[" + std::to_string(w->slot) + "]";
}

Supervisor::Impl::~Impl() {
    for (auto& [id, w] : workers) {
        w->waiting.forget();
        w->on_exit.forget();
    }
    for (auto& p : programs)
        if (p->rollout) p->rollout->part.forget();
}

Supervisor::Supervisor(asio::io_context& io, Config config, std::string config_path,
                       std::string builtin_worker, std::vector<std::string> environment,
                       DaemonOverrides overrides)
    : exec_(std::make_unique<AsioExecutor>(io)) {
    impl_ = std::make_unique<Impl>(io, *exec_, std::move(config), std::move(config_path),
                                   std::move(builtin_worker), std::move(environment));
    impl_->overrides = std::move(overrides);
    impl_->overrides.apply(impl_->config.daemon);
}

Supervisor::~Supervisor() {
    impl_.reset();  // before the executor whose timers and threads it uses
}

void Supervisor::start() {
    impl_->start();
}

void Supervisor::set_image(std::string version, std::string binary, int control_listener,
                           std::vector<std::string> run_args) {
    impl_->run_args = std::move(run_args);
    impl_->version = std::move(version);
    impl_->self_binary = std::move(binary);
    impl_->control_listener = control_listener;
}

void Supervisor::resume(const HandoverState& state, std::shared_ptr<Reporter> requester,
                        const std::string& failed) {
    impl_->resume(state, std::move(requester), failed);
}

void Supervisor::command(const ControlRequest& request, std::shared_ptr<Reporter> reporter) {
    impl_->command(request, std::move(reporter));
}

void Supervisor::adopt_sockets(const std::map<std::string, int>& sockets) {
    for (const auto& [name, fd] : sockets)
        impl_->activated[name] = std::make_shared<const UniqueFd>(fd);
}

int Supervisor::exit_code() const {
    return exit_code::ok;
}

}  // namespace clusterd

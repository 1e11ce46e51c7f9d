// The supervisor on a fake executor: a config file in a temporary directory, the master's
// logic (Supervisor::Impl) built on it, and scripted worker processes.
#pragma once

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "daemon/supervisor/supervisor_impl.hpp"
#include "tests/unit/daemon/supervisor/fake_executor.hpp"

namespace clusterd::test {

/// What one spawned process does.
struct Behaviour {
    std::optional<Duration> ready_after = Duration{10};  // nullopt: never sends READY=1
    std::optional<Duration> exit_after;                  // exits on its own then...
    int exit_status = W_EXITCODE(1, 0);                  // ...with this waitpid() status
    std::optional<Duration> hang_after;  // stops heartbeating this long after it started
    bool ignores_term = false;
    /// Heartbeats by stores into its scoreboard record (worker/scoreboard.hpp), not datagrams.
    bool board = false;

    static Behaviour ready_in(Duration d) {
        Behaviour b;
        b.ready_after = d;
        return b;
    }
    /// Never ready: exits with `status` after `d`.
    static Behaviour failing(Duration d, int status = W_EXITCODE(1, 0)) {
        Behaviour b;
        b.ready_after.reset();
        b.exit_after = d;
        b.exit_status = status;
        return b;
    }
};

/// Records what a command reported; finish() must come exactly once.
struct Recorder final : Reporter {
    void progress(const std::string& line) override { lines.push_back(line); }
    void finish(const nlohmann::json& r) override {
        ++finishes;
        reply = r;
    }
    bool ok() const { return finishes == 1 && reply.value("ok", false); }
    std::string message() const {
        return reply.is_object() ? reply.value("message", "") : std::string();
    }
    std::vector<std::string> lines;
    int finishes = 0;
    nlohmann::json reply;
};

class Rig {
  public:
    /// `programs`: the YAML under `programs:` (each program's command defaults to /bin/true).
    explicit Rig(const std::string& programs,
                 std::function<Behaviour(const FakeProcess&)> first = nullptr) {
        if (first) behave = std::move(first);
        // CLUSTERD_SIM_LOG=info (or debug) shows the supervisor's log while it runs.
        const char* level = std::getenv("CLUSTERD_SIM_LOG");
        spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::off);
        char tmpl[] = "/tmp/clusterd-sim-XXXXXX";
        dir = ::mkdtemp(tmpl);
        ::chmod(dir.c_str(), 0755);
        path = dir + "/clusterd.yaml";
        write(programs);
        Config config = load_config_file(path);
        ex.on_spawn = [this](FakeProcess& p) { scripted(p); };
        sup = std::make_unique<Supervisor::Impl>(io, ex, config, path, "/bin/true",
                                                 std::vector<std::string>{});
        sup->start();
    }
    ~Rig() {
        sup.reset();
        for (auto& [pid, page] : boards) ::munmap(page.first, 4096);
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    void write(const std::string& programs) {
        std::ofstream(path) << "daemon:\n  control: " << dir
                            << "/control.sock\n  state_dir: " << dir
                            << "/state\n  shutdown_timeout: 20s\nprograms:\n"
                            << programs;
    }

    /// A request as a client sends it, through the daemon's decoder.
    std::shared_ptr<Recorder> command(nlohmann::json request) {
        auto r = std::make_shared<Recorder>();
        auto decoded = decode_control_request(request.dump());
        if (auto* e = std::get_if<ControlDecodeError>(&decoded)) {
            r->finish({{"ok", false}, {"message", e->message}});
            return r;
        }
        sup->command(std::get<ControlRequest>(decoded), r);
        return r;
    }
    std::shared_ptr<Recorder> command(const std::string& cmd, const std::string& program,
                                      nlohmann::json extra = nlohmann::json::object()) {
        extra["cmd"] = cmd;
        if (!program.empty()) extra["program"] = program;
        return command(extra);
    }

    Program& program(const std::string& name) {
        Program* p = sup->find_program(name);
        REQUIRE(p != nullptr);
        return *p;
    }

    /// Slots of `name` whose worker is ready and runs the program's current generation.
    int ready(const std::string& name) {
        Program& p = program(name);
        int n = 0;
        for (const Worker* w : p.slots)
            n += w->sm.state == SlotState::ready && w->spec->generation == p.spec->generation;
        return n;
    }
    /// Live processes whose label names program `name`.
    int live(const std::string& name) {
        int n = 0;
        for (FakeProcess* p : ex.live()) n += p->label.rfind(name + "[", 0) == 0;
        return n;
    }

    void run(Duration d) { ex.run_for(d); }

    std::string dir, path;
    FakeExecutor ex;
    boost::asio::io_context io;  // notify sockets only; never run
    std::unique_ptr<Supervisor::Impl> sup;
    /// Hook processes started (pids), and how long each runs (nullopt: until killed).
    std::vector<pid_t> hooks;
    std::optional<Duration> hook_runs_for = Duration{5};
    /// How the next process behaves; by default it is ready after 10 ms and heartbeats.
    std::function<Behaviour(const FakeProcess&)> behave = [](const FakeProcess&) {
        return Behaviour{};
    };

    /// The scoreboard record of process `pid` (mapped from the fd and offset it was given, as
    /// a worker maps it), or null.
    sdk::ScoreboardRecord* record(pid_t pid) {
        auto it = boards.find(pid);
        return it == boards.end() ? nullptr : it->second.second;
    }
    std::map<pid_t, std::pair<void*, sdk::ScoreboardRecord*>> boards;

  private:
    sdk::ScoreboardRecord* map_record(const FakeProcess& p) {
        int fd = -1;
        std::uint64_t offset = 0;
        std::string env = p.env_value(sdk::kScoreboardEnv);
        if (!sdk::parse_scoreboard_env(env.empty() ? nullptr : env.c_str(), fd, offset))
            return nullptr;
        auto index = static_cast<std::size_t>(fd - 3);
        REQUIRE(index < p.fds.size());
        void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p.fds[index],
                            static_cast<off_t>(offset & ~std::uint64_t{4095}));
        REQUIRE(page != MAP_FAILED);
        auto* rec =
            reinterpret_cast<sdk::ScoreboardRecord*>(static_cast<char*>(page) + (offset & 4095));
        boards[p.pid] = {page, rec};
        return rec;
    }

    void board_beat(pid_t pid, TimePoint at, Duration every, TimePoint stop) {
        if (at >= stop) return;
        ex.at(at, [this, pid, at, every, stop] {
            FakeProcess* q = ex.process(pid);
            if (!q || q->exited || q->hung) return;
            sdk::board_store(record(pid)->alive_ns,
                             static_cast<std::uint64_t>(
                                 std::chrono::nanoseconds(at.time_since_epoch()).count()));
            board_beat(pid, at + every, every, stop);
        });
    }

    void scripted(FakeProcess& p) {
        std::string notify = p.env_value("NOTIFY_SOCKET");
        if (notify.empty()) {  // a hook: no worker
            hooks.push_back(p.pid);
            if (hook_runs_for) ex.exit(p, W_EXITCODE(0, 0), *hook_runs_for);
            return;
        }
        Behaviour b = behave(p);
        p.ignores_term = b.ignores_term;
        std::uint64_t id = std::stoull(notify.substr(notify.rfind('/') + 1));
        pid_t pid = p.pid;
        auto alive = [this, pid] {
            FakeProcess* q = ex.process(pid);
            return q && !q->exited;
        };
        sdk::ScoreboardRecord* rec = b.board ? map_record(p) : nullptr;
        std::string usec = p.env_value("WATCHDOG_USEC");
        Duration every = usec.empty() ? Duration{0}
                                      : std::chrono::duration_cast<Duration>(
                                            std::chrono::microseconds(std::stoll(usec)) / 4);
        if (b.ready_after)
            ex.at(p.started + *b.ready_after, [this, id, pid, alive, rec, every] {
                if (!alive()) return;
                NotifyMessage m;
                m.ready = true;
                if (rec) {  // what it writes there, then READY=1 with its pace
                    sdk::board_store(rec->flags, sdk::kFlagHeartbeat | sdk::kFlagFigures);
                    sdk::board_store(
                        rec->alive_ns,
                        static_cast<std::uint64_t>(
                            std::chrono::nanoseconds(ex.now().time_since_epoch()).count()));
                    if (every.count() > 0)
                        m.fields["HEARTBEAT_USEC"] = std::to_string(
                            std::chrono::duration_cast<std::chrono::microseconds>(every).count());
                }
                sup->on_notify(id, NotifySender{pid, true, pid, {}}, m);
            });
        if (every.count() > 0 && b.ready_after) {
            TimePoint stop = b.hang_after ? p.started + *b.hang_after : TimePoint::max();
            if (rec)
                board_beat(pid, p.started + *b.ready_after + every, every, stop);
            else
                heartbeat(id, pid, p.started + *b.ready_after + every, every, stop);
        }
        if (b.exit_after) ex.exit(p, b.exit_status, *b.exit_after);
    }

    void heartbeat(std::uint64_t id, pid_t pid, TimePoint at, Duration every, TimePoint stop) {
        if (at >= stop) return;
        ex.at(at, [this, id, pid, at, every, stop] {
            FakeProcess* q = ex.process(pid);
            if (!q || q->exited || q->hung) return;
            NotifyMessage m;
            m.watchdog = true;
            sup->on_notify(id, NotifySender{pid, true, pid, {}}, m);
            heartbeat(id, pid, at + every, every, stop);
        });
    }
};

}  // namespace clusterd::test

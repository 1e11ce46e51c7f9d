// The supervisor's state, shared by its .cpp files and its tests (tests/unit/daemon/supervisor):
//   supervisor.cpp   start-up, programs and workers made from the config
//   dispatch.cpp     the one dispatch: child exits, notify datagrams, deadlines -> slot events
//   faults.cpp       hung workers, spares, pacing, the door, memory recycling, steering
//   signals.cpp      the master's own signals, systemd, the end
//   operations.cpp   what the long operations share; scale and drains
//   reload.cpp       reload
//   rollout.cpp      rolling restarts and roll backs; admit() applies policy/operation_rules.hpp
//   commands.cpp     the control commands      metrics.cpp   /metrics and /healthz
//   upgrade.cpp      `upgrade`: the check of the new binary and the exec in place
//   resume.cpp       the state it hands over (handover.hpp): saved here, resumed there
//   node.cpp         `ipc: node`: the Node channel, and the cluster primary's side of it
//   events.cpp       the event stream (`clusterd events`), hooks, captured output (`logs`)
// Everything it does to the machine goes through `exec` (executor.hpp).
#pragma once

#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config.hpp"
#include "common/fd.hpp"
#include "daemon/control/reporter.hpp"
#include "daemon/metrics/metrics_server.hpp"
#include "daemon/net/listen_queue.hpp"
#include "daemon/net/listeners.hpp"
#include "daemon/net/node_channel.hpp"
#include "daemon/net/notify_receiver.hpp"
#include "daemon/policy/operation_rules.hpp"
#include "daemon/policy/pacing.hpp"
#include "daemon/policy/slot.hpp"
#include "daemon/process/launch.hpp"
#include "daemon/process/output_capture.hpp"
#include "daemon/process/scoreboard.hpp"
#include "daemon/supervisor/executor.hpp"
#include "daemon/supervisor/feed.hpp"
#include "daemon/supervisor/handover.hpp"
#include "daemon/supervisor/operation.hpp"
#include "daemon/supervisor/state_file.hpp"
#include "daemon/supervisor/supervisor.hpp"

namespace clusterd {

namespace asio = boost::asio;

struct Program;

/// One generation of a program's config: what its workers are started with. Immutable.
struct ProgramSpec {
    ProgramConfig config;
    SlotPolicy policy;
    LaunchPlan plan;
    std::uint64_t generation = 1;
    /// Why `plan` could not be made when an upgrade's new image took the program over (its
    /// executable or user gone since it started): each start tries again, and fails like a
    /// failed exec until it can. "" = `plan` is good.
    std::string unresolved;
    /// The workers' stdout/stderr for `output: <file>` (reopened in place on USR1).
    std::shared_ptr<UniqueFd> output = std::make_shared<UniqueFd>();
};

/// Replace-then-drain, the one primitive of rolling restarts, memory recycling and a late
/// worker's spare: a new worker starts on the slot's sockets beside the one it replaces, and
/// once it is ready it takes the slot while the other one leaves (take_slot()).
enum class Replace {
    roll,    // a rolling restart's new generation; the slot's holder leaves (Stop)
    memory,  // memory_limit passed; the old one leaves with cause "memory" (Recycle)
    late,    // heartbeat overdue; the old one is released (aborted unless it heartbeats)
    age,     // max_age reached; the old one leaves with cause "max_age" (Recycle)
};
struct Replacement {
    Replace why = Replace::roll;
    std::uint64_t old_id = 0;  // memory, late: the worker replaced (roll: the slot's holder)
};

/// One worker process (and its restarts) in one slot of one generation.
struct Worker {
    Worker(Executor& exec, std::uint64_t id_, Program* program_, int slot_,
           std::shared_ptr<const ProgramSpec> spec_, std::vector<SocketRef> sockets_)
        : id(id_),
          program(program_),
          slot(slot_),
          spec(std::move(spec_)),
          sockets(std::move(sockets_)),
          timer(exec.make_timer()) {}

    std::uint64_t id;
    Program* program;
    int slot;
    std::shared_ptr<const ProgramSpec> spec;
    std::vector<SocketRef> sockets;  // what it was started with; kept while it lives
    Slot sm;
    std::unique_ptr<Timer> timer;               // the slot's one deadline
    std::string status;                         // last STATUS=
    std::map<std::string, std::string> fields;  // last X_CLUSTERD_*
    /// Its notify socket (NOTIFY_SOCKET), for all its processes; unlinked when it is dropped.
    std::unique_ptr<NotifySocket> notify;
    /// `ipc: node`: its process's Node channel (a new one per process, closed at its exit).
    std::unique_ptr<NodeChannel> ipc;
    /// After a Node worker disconnected on a stop: its stop signal, unless it exits first.
    std::unique_ptr<Timer> ipc_timer;
    bool retiring = false;  // replaced or scaled away: dropped once stopped
    /// Set while this worker starts as another's replacement (replace-then-drain).
    std::optional<Replacement> replacing;
    // The previous CPU sample, for the CPU% `status` shows (read only when asked).
    mutable double cpu_seconds = 0;
    mutable TimePoint cpu_sampled_at{};
    /// The operation waiting for this worker to become ready (rollout, scale-up).
    Part waiting;
    /// `output: capture`: its stdout/stderr as lines of the daemon's log.
    std::unique_ptr<OutputCapture> capture;
    /// The operation waiting for this worker to be gone (scale-down).
    Part on_exit;
    /// max_age: recycles it when it is due (armed once it is ready).
    std::unique_ptr<Timer> age_timer;
    /// Its process's scoreboard record (the seat is Supervisor::Impl::board_seats[pid]).
    std::optional<std::uint32_t> board_index;
    /// What its process said at READY=1 it writes there (worker/scoreboard.hpp): its
    /// heartbeats (then checked by its program's board timer, not by datagrams), its figures.
    bool board_beats = false;
    bool board_figures = false;
};

/// A hook run waiting for its turn (one at a time per program).
struct PendingHook {
    HookConfig hook;  // as configured when the event came (a reload may change the list)
    nlohmann::json event;
};

/// A hook process: killed with its group at its timeout, whatever became of its program.
struct RunningHook {
    std::string program;
    std::string label;
    TimePoint started{};
    bool timed_out = false;
    std::unique_ptr<Timer> timer;
};

/// The most hook runs waiting per program; beyond it the oldest is dropped (and counted).
inline constexpr std::size_t kMaxQueuedHooks = 64;

/// A rolling restart of one program to a new generation.
struct Rollout {
    std::shared_ptr<const ProgramSpec> from;
    std::shared_ptr<const ProgramSpec> to;
    std::deque<int> todo;           // slots still to roll, in order
    int in_flight = 0;              // new workers started and not ready yet
    std::shared_ptr<Operation> op;  // whoever asked (progress lines)
    Part part;                      // the roll's own part of `op`, ended when the roll ends
    std::optional<SocketTable> previous_sockets;  // restored if the roll fails (listen changed)
    // A roll that fails restores the worker count it began from, unless `scale` set another
    // since (a reload that changed `cores` must not leave the count of a rejected config).
    int restore_workers = 0;
    std::optional<int> restore_scale;
    bool scaled = false;
    bool rollback = false;  // puts the slots of a failed roll back; never rolled back itself
    bool reload = false;    // a reload's: stopped by `stop`, its config stays in force
};

struct Program {
    /// The current worker of each slot, as the pacing functions take them.
    std::vector<const Slot*> slot_states() const;

    std::string name;
    std::shared_ptr<const ProgramSpec> spec;  // current generation
    SocketTable sockets;                      // current listeners, one row per slot
    std::vector<Worker*> slots;               // current worker of each slot
    std::optional<int> runtime_scale;         // set by `scale`, TTIN/TTOU
    bool stopped = false;  // by `stop`: nothing of it starts until `start` or `restart`
    std::optional<Rollout> rollout;
    std::optional<std::vector<int>> steered;  // slots new connections go to (ready ones)
    std::map<ExitCause, int> exits;           // worker exits by cause, for status and metrics
    bool removed = false;                     // stopping for good; erased once its workers are gone
    TimePoint started_at{};
    bool all_ready_logged = false;
    // Restarts while nothing serves are paced, and the door (daemon/policy/pacing.hpp).
    pacing::Pace pace;
    std::unique_ptr<Timer> probe_timer;
    bool refusing = false;  // the door was shut since the last time a worker was ready
    // A flood of worker events is logged as one summary line per kLogWindow.
    TimePoint log_window_start{};
    int log_lines = 0;
    int log_suppressed = 0;
    std::unique_ptr<Timer> log_timer;
    // hooks (events.cpp)
    std::deque<PendingHook> hook_queue;
    pid_t hook_pid = 0;  // the run under way, if any (in Supervisor::Impl::hooks)
    std::map<std::string, std::uint64_t> hook_runs;  // by result: ok, failed, timeout, dropped
    /// depends_on: the dependencies it still waits for before its workers start ("" = none).
    std::string waiting_for;
    /// Shutdown: its workers were told to stop (after those of the programs depending on it).
    bool shutdown_sent = false;
    /// Its workers' scoreboard (made at the first spawn; null if it could not be made).
    std::shared_ptr<Scoreboard> board;
    bool board_failed = false;  // logged once
    /// The one watchdog timer of the workers that heartbeat through the scoreboard: due at the
    /// earliest of their deadlines (check_board()).
    std::unique_ptr<Timer> board_timer;
    std::optional<TimePoint> board_due;
    std::uint64_t board_checks = 0;  // times it fired: the master's wakeups for those heartbeats
};

/// A worker given up on without waiting (watchdog, start_timeout): signalled, killed with
/// its process group after its abort_timeout unless it exits first. Reaped like any child.
struct Abandoned {
    explicit Abandoned(Executor& exec) : timer(exec.make_timer()) {}
    std::string label;
    TimePoint since{};
    TimePoint kill_at{};  // when its process group is killed
    std::unique_ptr<Timer> timer;
};

/// Slots being scaled away: their sockets are watched until empty, then they stop.
struct Drain {
    explicit Drain(Executor& exec) : timer(exec.make_timer()) {}
    std::vector<std::uint64_t> ids;
    std::vector<SocketRef> sockets;
    TimePoint started{};
    TimePoint deadline{};
    std::string program;
    std::unique_ptr<Timer> timer;
};

struct UpgradeCheck;  // upgrade.cpp

/// What the master keeps for `clusterd events` and, per program, for `clusterd logs`.
inline constexpr std::size_t kEventsKept = 1000;
inline constexpr std::size_t kEventsKeptBytes = 1024 * 1024;
inline constexpr std::size_t kLogLinesKept = 1000;
inline constexpr std::size_t kLogBytesKept = 256 * 1024;
/// The most of what is kept that one `events -n` or `logs -n` request gets at once.
inline constexpr std::size_t kFeedBacklogBytes = 512 * 1024;

/// max_age: how soon a worker that came due while another slot recycles tries again.
inline constexpr Duration kAgeRetry{1000};
/// max_age: how soon a worker whose replacement did not come up tries again.
inline constexpr Duration kAgeRetryAfterFailure{30'000};

/// How long a Node cluster worker that disconnected on a stop may take to exit by itself
/// before it gets its stop signal.
inline constexpr Duration kNodeExitGrace{250};

/// How long the new binary of an upgrade has to say it reads the state.
inline constexpr Duration kUpgradeCheckTimeout{10'000};

/// Opens an `output:` file for appending (throws std::system_error naming it).
UniqueFd open_output(const std::string& path);

struct Supervisor::Impl {
    /// `io` runs the notify sockets, output pipes and the metrics endpoint; everything else
    /// the supervisor does to the world goes through `exec`.
    Impl(asio::io_context& io, Executor& exec, Config config, std::string config_path,
         std::string builtin_worker, std::vector<std::string> environment);
    /// Lets go of every operation's parts without ending them: nobody is left to reply to.
    ~Impl();
    TimePoint now() const { return exec.now(); }
    std::optional<ProcessFigures> figures(const Worker& w) const {
        return w.sm.pid != 0 ? exec.figures(w.sm.pid) : std::nullopt;
    }

    // ---- supervisor.cpp, dispatch.cpp, faults.cpp, signals.cpp ----
    void start();
    /// Child exits and signals delivered, the periodic checks and systemd's watchdog armed:
    /// what start() and resume() both begin with once the tables are built.
    void start_loop();
    /// Throws when `new_workers` more workers of `pc` would leave too few file descriptors.
    void check_fd_headroom(const ProgramConfig& pc, std::size_t new_workers) const;
    std::unique_ptr<Program> make_program(const ProgramConfig& pc, int workers);
    std::shared_ptr<const ProgramSpec> make_spec(const ProgramConfig& pc,
                                                 std::uint64_t generation) const;
    Worker* add_worker(Program& prog, int slot, std::shared_ptr<const ProgramSpec> spec,
                       std::vector<SocketRef> sockets);
    void dispatch(Worker* w, Event ev);
    void perform(Worker* w, Action& a, pid_t old_pid, std::vector<Event>& pending);
    Event do_spawn(Worker* w);
    /// `moved`: the worker's state, lateness or want changed (else pacing and the door are
    /// left as they are).
    void after_dispatch(Worker* w, SlotState before, bool moved);
    void drop_worker(Worker* w);
    /// `check`: look for foreign sockets first when the steering is to be made anew.
    void resteer(Program& prog, bool check = true);
    // ---- listeners_watch.cpp: foreign sockets in our reuseport groups ----
    /// Looks for them on the program's addresses and logs what changed; true if something did.
    bool check_listeners(Program& prog);
    void arm_listener_check();
    /// check_listeners() on every program, steering around what changed.
    void check_all_listeners();
    void on_deadline(Worker* w);
    void abandon(Worker* w, pid_t pid, int sig, Duration grace);
    /// A new worker for `slot` (not started yet) that replaces `old` (or, rolling, whoever
    /// holds the slot when it is ready).
    Worker* start_replacement(Program& prog, int slot, std::shared_ptr<const ProgramSpec> spec,
                              Replace why, const Worker* old);
    /// The replacement under way for `w` (memory, late), if any.
    Worker* replacement_of(const Worker& w) const;
    /// `w`, ready, takes its slot from `old`, which leaves as `why` says.
    void take_slot(Worker* w, Worker* old, Replace why);
    /// A roll's new worker (a roll back's too).
    static bool rolling_in(const Worker& w) {
        return w.replacing && w.replacing->why == Replace::roll;
    }
    void start_spare(Worker* w);
    void promote_spare(Worker* late);
    void pace(Program& prog);
    void update_door(Program& prog);
    void open_door(Program& prog);
    void log_event(Worker* w, LogLevel level, const std::string& message);
    void flush_log_summary(Program& prog);
    void arm_memory_check();
    void check_memory();
    void recycle(Worker* w, std::uint64_t rss);
    /// A memory or late replacement came up, or did not.
    void replacement_changed(Worker* w, SlotState before);
    void on_child_exit(pid_t pid, int status);
    // ---- scoreboard.cpp: heartbeats and figures in shared memory ----
    /// A record for `w`'s next process (nullopt: none, it reports by datagram only).
    std::optional<std::uint32_t> board_record(Worker* w);
    /// The heartbeat `w` stored, if newer than the last one seen: a Heartbeat event.
    void board_heartbeat(Worker* w);
    /// `w`'s figures (loop lag, connections...) from its record into `fields`.
    void board_figures(Worker* w);
    /// Reads every record now (status, /metrics): heartbeats seen, figures current.
    void read_boards();
    /// What is read only when someone asks (status, /metrics): the scoreboard records and,
    /// when no timer looks for them, foreign sockets.
    void refresh_for_reader();
    /// The board timer of `prog` is due no later than `at`.
    void schedule_board(Program& prog, TimePoint at);
    /// The board timer fired: heartbeats read, deadlines due dispatched, timer re-armed.
    void check_board(Program& prog);
    /// A datagram on worker `id`'s notify socket: its, by notify_access, or dropped and said why.
    void on_notify(std::uint64_t id, const NotifySender& sender, const NotifyMessage& m);
    /// A notify message known to be the worker's (its socket's checks passed, or its channel).
    void apply_notify(Worker* w, pid_t pid, const NotifyMessage& m);
    // ---- node.cpp ----
    NodeChannel::Handlers node_handlers(std::uint64_t id);
    /// A new Node channel for `w`'s next process: returns the worker's end (throws).
    UniqueFd open_ipc(Worker* w);
    void on_node_query(std::uint64_t id, const NodeServerQuery& q);
    void on_node_listening(std::uint64_t id, const NodeServerQuery& q);
    /// Worker `w`'s notify socket, made on its first spawn (throws std::system_error).
    void open_notify(Worker* w);
    void on_signal(int sig);
    void handle_stop(int sig);
    void stop_in_order();
    void handle_hup();
    void handle_usr1();
    void handle_scale_signal(int delta);
    void report_to_systemd();
    void do_systemd_watchdog(std::chrono::microseconds interval);
    void finish_if_stopped();
    void kill_leftovers();
    std::string label(const Worker* w) const;

    // ---- operations.cpp, reload.cpp, rollout.cpp ----
    void reload(std::shared_ptr<Reporter> reporter);
    void apply_reload(std::shared_ptr<Reporter> reporter, LoadedConfig loaded);
    void refuse_reload(const std::shared_ptr<Reporter>& reporter, const std::string& why);
    /// `restore_workers`, `restore_scale`: the count (and runtime scale) a failed roll goes
    /// back to, when a reload changed them before the roll began.
    void begin_rollout(Program& prog, std::shared_ptr<const ProgramSpec> to,
                       std::shared_ptr<Operation> op,
                       std::optional<SocketTable> previous_sockets = std::nullopt,
                       std::optional<int> restore_workers = std::nullopt,
                       std::optional<int> restore_scale = std::nullopt);
    /// Runs `r` on `prog` (its new generation becomes the program's).
    void start_rollout(Program& prog, Rollout r);
    void advance_rollout(Program& prog);
    void rollout_worker_changed(Worker* w, SlotState before);
    /// A worker an operation waits for (scale-up, a new program) came up, or did not.
    void start_changed(Worker* w, SlotState before);
    void scale(Program& prog, int workers, std::shared_ptr<Operation> op);
    /// Whether `later` may run on `prog` now, by the table in operation_rules.hpp: refused
    /// (false, `refuse` called with why), or admitted once what it supersedes has ended.
    /// What runs on `prog` that a later command must compose with, if anything.
    static std::optional<rules::Running> running_on(const Program& prog);
    bool admit(Program& prog, rules::Later later,
               const std::function<void(const std::string&)>& refuse);
    /// A later command supersedes the program's roll (`stop`; anything, for a roll back):
    /// it ends now, its new workers stop, and it reports that `by` ended it.
    void end_rollout(Program& prog, const std::string& by);
    /// A slot worker that is not running (or is about to restart) takes the program's
    /// current generation for its next start: a program stopped during a roll, or reloaded
    /// while stopped, starts on its new config.
    void adopt_current_spec(Worker& w);
    void drain_and_stop(Program& prog, std::vector<Worker*> leaving, std::shared_ptr<Operation> op);
    void drain_poll(std::shared_ptr<Drain> d);
    void abandon_wait(Worker* w, const std::string& why);
    void persist_scale();
    std::string state_file() const;
    int configured_workers(const Program& prog) const;
    Program* find_program(const std::string& name);

    /// When a slot in backoff starts its next worker (the pacing included); nullopt if it is
    /// not in backoff.
    std::optional<TimePoint> next_try(const Worker& w) const;

    // ---- events.cpp: the event stream, hooks, captured output ----
    /// Publishes `event` ("exited", ...: one of kEventNames) about `prog` (and `w`'s slot and
    /// `pid`, when given) with `fields`, and queues the program's hooks on it.
    void emit(const char* event, Program* prog, const Worker* w, pid_t pid,
              const std::string& message, nlohmann::json fields = nlohmann::json::object());
    /// What a step of `w`'s slot from `before` means in events (started, ready, exited, ...).
    void emit_step(Worker* w, const Slot& before, pid_t old_pid);
    void next_hook(Program& prog);
    void hook_done(pid_t pid, int wait_status);
    /// Before an upgrade's exec: hooks still running are killed (the new image would not know
    /// them), the waiting ones dropped.
    void end_hooks();
    /// A line a worker printed (output: capture), kept for `logs`.
    void output_line(const std::string& program, int slot, std::string_view line);
    /// `events` and `logs`: the latest lines, then (follow) the new ones.
    void feed_command(const ControlRequest& req, std::shared_ptr<Reporter> reporter);
    /// A new OutputCapture for `w` (output: capture), its lines kept for `logs`.
    std::unique_ptr<OutputCapture> make_capture(const Program& prog, int slot);

    // ---- max_age and depends_on (faults.cpp, supervisor.cpp) ----
    /// Arms `w`'s max_age timer (once it is ready).
    void arm_age(Worker* w);
    void recycle_for_age(Worker* w);
    /// `prog`'s dependencies with no ready worker: what it waits for before it starts, or
    /// what `status` says is down while it runs.
    std::vector<std::string> unmet_dependencies(const Program& prog) const;
    /// Starts the programs whose dependencies are now met.
    void start_waiting_programs();

    // ---- upgrade.cpp, resume.cpp: re-exec in place ----
    /// What keeps an upgrade from being handed over now ("" = nothing).
    std::string upgrade_busy() const;
    /// Check `binary` ("" = self_binary), then exec it with the state (upgrade.cpp).
    void upgrade(const std::string& binary, std::shared_ptr<Reporter> reporter);
    /// Blocks every signal, lets the loop handle what it received already, then do_exec().
    void exec_upgrade(const std::string& binary, const std::string& to,
                      std::shared_ptr<Reporter> reporter);
    /// Saves the state and execs `binary`; returns (signals as `old_mask` had them, the
    /// client told why) only if that fails.
    void do_exec(const std::string& binary, const std::string& to,
                 std::shared_ptr<Reporter> reporter, const sigset_t& old_mask);
    /// The state to hand over; `requester_fd`: the client's connection, if any.
    HandoverState save(int requester_fd) const;
    /// Instead of start(), in the new image: take over what `state` names. `failed`: this is
    /// the old image back after the new one could not resume, and why. Throws on a state
    /// that does not fit (the caller goes back to the old image).
    void resume(const HandoverState& state, std::shared_ptr<Reporter> requester,
                const std::string& failed);
    /// The slot deadline of `w` at `when`.
    void arm_deadline(Worker* w, TimePoint when);
    /// SIGKILL to abandoned[pid]'s group at `when`.
    void arm_abandoned(pid_t pid, TimePoint when);

    // ---- metrics.cpp: /metrics and /healthz ----
    std::string metrics_text() const;
    Health health() const;

    // ---- commands.cpp: the control socket's commands ----
    void command(const ControlRequest& request, std::shared_ptr<Reporter> reporter);
    nlohmann::json status_json(const std::string& only) const;

    asio::io_context& io;
    Executor& exec;
    Config config;
    std::string config_path;    // "" for the built-in default
    DaemonOverrides overrides;  // `run --control/--state-dir`, applied at every reload
    std::string builtin_worker;
    std::vector<std::string> environment;
    std::unique_ptr<Timer> shutdown_timer;
    /// Destroyed after `workers`, whose sockets are in it.
    std::unique_ptr<NotifyDir> notify_dir;
    NotifyCounters notify_counters;
    NodeChannelCounters node_counters;
    std::vector<std::unique_ptr<Program>> programs;
    std::map<std::uint64_t, std::unique_ptr<Worker>> workers;
    std::unordered_map<std::uint64_t, std::uint64_t> replacements;  // old id -> new (memory, late)
    std::unordered_map<pid_t, Worker*> pids;
    std::map<pid_t, std::unique_ptr<Abandoned>> abandoned;
    /// Each live child's scoreboard record, released when it is reaped (worker or abandoned).
    std::unordered_map<pid_t, BoardSeat> board_seats;
    std::uint64_t next_worker_id = 1;
    DaemonState state;
    std::uint64_t config_generation = 1;
    int reloads_ok = 0;
    int reloads_failed = 0;
    bool reload_in_progress = false;
    bool reload_loading = false;  // the file is being read and parsed off the loop
    bool stopping = false;
    bool finished = false;
    bool systemd_notify = false;
    bool sent_ready = false;
    std::string last_status;
    TimePoint started_at{};
    std::map<std::string, SocketRef> activated;  // sockets systemd passed us, by name
    std::unique_ptr<Timer> systemd_watchdog;
    std::unique_ptr<MetricsServer> metrics;
    std::unique_ptr<Timer> memory_timer;  // armed only while some program has a memory_limit
    bool memory_timer_armed = false;
    std::unique_ptr<Timer> listener_timer;  // the periodic look for foreign sockets
    // The image: its version, the binary `upgrade` execs by default, upgrades so far.
    std::string version = "unknown";
    std::string self_binary;
    std::vector<std::string> run_args;  // `run`'s arguments, for the image an upgrade execs
    std::uint64_t upgrades = 0;
    int control_listener = -1;  // the control socket (main.cpp owns it), handed over
    std::shared_ptr<UpgradeCheck> upgrade_check;  // the new binary being checked
    std::unique_ptr<Timer> upgrade_timer;         // the loop's last turns before the exec
    TimePoint upgrade_asked{};
    /// Children that are no worker's and whose exit someone waits for (an upgrade check).
    std::map<pid_t, std::function<void(int wait_status)>> helpers;
    /// Hook processes running, by pid (events.cpp).
    std::map<pid_t, RunningHook> hooks;
    /// The event stream, and the workers' captured output, kept and followed (feed.hpp).
    Feed<EventEntry> events{kEventsKept, kEventsKeptBytes, false};
    Feed<LineEntry> logs{kLogLinesKept, kLogBytesKept, true};
};

}  // namespace clusterd

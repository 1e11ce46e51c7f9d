// An Executor on simulated time: timers, child exits and the test's own events run from one
// queue ordered by (time, sequence), and only when the test advances the clock. Spawned
// "processes" are records; what they do (become ready, heartbeat, crash, hang, ignore TERM)
// is scheduled by the test through `on_spawn`. Every action the supervisor takes is checked
// against the processes' state: a signal to a reaped pid is a violation, recorded for the
// test to assert on.
#pragma once

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "daemon/process/spawner.hpp"
#include "daemon/supervisor/executor.hpp"

namespace clusterd::test {

struct FakeProcess {
    pid_t pid = 0;
    std::string label;
    std::vector<std::string> env;  // as the supervisor built it
    std::vector<int> fds;          // the master's fds it was given (its 3, 4, ...)
    TimePoint started{};
    bool exited = false;  // a zombie until reaped
    bool reaped = false;
    bool ignores_term = false;
    bool hung = false;         // its loop is stuck: no more heartbeats
    std::vector<int> signals;  // every signal it was sent (its own pid or its group)

    /// The value of KEY in its environment ("" when absent).
    std::string env_value(const std::string& key) const {
        for (const auto& e : env)
            if (e.rfind(key + "=", 0) == 0) return e.substr(key.size() + 1);
        return "";
    }
};

class FakeExecutor final : public Executor {
  public:
    using Key = std::pair<TimePoint, std::uint64_t>;

    explicit FakeExecutor(TimePoint start = TimePoint{} + std::chrono::hours(1000)) : now_(start) {}

    // ---- the Executor ----
    TimePoint now() const override { return now_; }

    std::unique_ptr<Timer> make_timer() override { return std::make_unique<FakeTimer>(*this); }

    void start(std::function<void(pid_t, int)> on_exit,
               std::function<void(int)> on_signal) override {
        on_exit_ = std::move(on_exit);
        on_signal_ = std::move(on_signal);
    }
    void finish() override { finished = true; }

    Started spawn(const SpawnSpec& spec, const std::string& label, const std::string&) override {
        ++spawns;
        if (fail_spawns > 0) {
            --fail_spawns;
            return {-1, EAGAIN, "fork"};
        }
        auto p = std::make_unique<FakeProcess>();
        p->pid = next_pid_++;
        p->label = label;
        p->env = spec.env;
        p->fds = spec.pass_fds;
        p->started = now_;
        FakeProcess& ref = *p;
        procs_.emplace(p->pid, std::move(p));
        if (on_spawn) on_spawn(ref);
        return {ref.pid, 0, ""};
    }

    int kill(pid_t target, int sig) override {
        pid_t pid = target < 0 ? -target : target;
        auto it = procs_.find(pid);
        if (it == procs_.end()) {
            if (target > 0)
                violations.push_back("kill(" + std::to_string(target) + ", " + std::to_string(sig) +
                                     "): never spawned");
            return ESRCH;
        }
        FakeProcess& p = *it->second;
        if (p.reaped) {
            // A group may still be signalled for what its reaped leader left (none here); a
            // pid may not: it could belong to another process by now.
            if (target > 0)
                violations.push_back("kill(" + std::to_string(target) + ", " + std::to_string(sig) +
                                     ") after it was reaped (" + p.label + ")");
            return ESRCH;
        }
        if (p.exited) return target > 0 ? 0 : ESRCH;  // a zombie; its group is empty
        p.signals.push_back(sig);
        switch (sig) {
            case SIGKILL:
                exit(p, W_EXITCODE(0, SIGKILL), Duration{0});
                break;
            case SIGABRT:
            case SIGSEGV:
            case SIGQUIT:
                exit(p, W_EXITCODE(0, sig), Duration{1});
                break;
            case SIGTERM:
            case SIGINT:
                if (!p.ignores_term) exit(p, W_EXITCODE(0, 0), term_delay);
                break;
            default:  // CONT, HUP, USR1...: it lives on
                break;
        }
        return 0;
    }

    std::vector<pid_t> children() override { return {}; }

    std::optional<ProcessFigures> figures(pid_t pid) override {
        auto it = procs_.find(pid);
        if (it == procs_.end() || it->second->exited) return std::nullopt;
        auto rss = rss_.find(pid);
        return ProcessFigures{rss == rss_.end() ? 10u << 20 : rss->second, 0.0};
    }

    void load_config(const std::string& path, std::function<void(LoadedConfig)> done) override {
        // Parsed at once, delivered from the queue: commands can land while it is "read".
        LoadedConfig loaded;
        try {
            loaded.config = load_config_file(path);
        } catch (const ConfigError& e) {
            for (const auto& d : e.diagnostics()) loaded.error += d.to_string();
        } catch (const std::exception& e) {
            loaded.error = e.what();
        }
        at(now_ + load_delay, [done = std::move(done), loaded = std::move(loaded)]() mutable {
            done(std::move(loaded));
        });
    }

    // ---- the test's side ----

    /// Run `fn` at `t` (from the queue, in order with timers).
    Key at(TimePoint t, std::function<void()> fn) {
        Key k{t < now_ ? now_ : t, ++seq_};
        queue_.emplace(k, std::move(fn));
        return k;
    }

    /// The process ends with waitpid() status `status` after `delay`; it is reaped (on_exit)
    /// right then. Nothing happens if it already ended.
    void exit(FakeProcess& p, int status, Duration delay) {
        pid_t pid = p.pid;
        at(now_ + delay, [this, pid, status] {
            FakeProcess& q = *procs_.at(pid);
            if (q.exited) return;
            q.exited = true;
            q.reaped = true;
            ++reaps;
            on_exit_(pid, status);
        });
    }

    /// Deliver a signal to the master.
    void signal_master(int sig) {
        at(now_, [this, sig] { on_signal_(sig); });
    }

    /// Run everything due up to now + d, in order; the clock ends at now + d.
    void run_for(Duration d) { run_until(now_ + d); }
    void run_until(TimePoint t) {
        while (!queue_.empty() && queue_.begin()->first.first <= t) {
            auto node = queue_.extract(queue_.begin());
            now_ = std::max(now_, node.key().first);
            node.mapped()();
            ++events;
        }
        now_ = std::max(now_, t);
    }

    FakeProcess* process(pid_t pid) {
        auto it = procs_.find(pid);
        return it == procs_.end() ? nullptr : it->second.get();
    }
    std::vector<FakeProcess*> live() {
        std::vector<FakeProcess*> out;
        for (auto& [pid, p] : procs_)
            if (!p->exited) out.push_back(p.get());
        return out;
    }
    const std::map<pid_t, std::unique_ptr<FakeProcess>>& processes() const { return procs_; }
    void set_rss(pid_t pid, std::uint64_t bytes) { rss_[pid] = bytes; }
    std::size_t pending() const { return queue_.size(); }

    std::function<void(FakeProcess&)> on_spawn;
    Duration term_delay{5};   // a worker's graceful exit after TERM
    Duration load_delay{20};  // reading a config file
    int fail_spawns = 0;      // the next n spawns fail (fork: EAGAIN)
    std::vector<std::string> violations;
    bool finished = false;
    std::uint64_t spawns = 0, reaps = 0, events = 0;

  private:
    class FakeTimer final : public Timer {
      public:
        explicit FakeTimer(FakeExecutor& ex) : ex_(ex) {}
        ~FakeTimer() override { cancel(); }
        void arm(TimePoint at, std::function<void()> fn) override {
            cancel();
            key_ = ex_.at(at, [this, fn = std::move(fn)] {
                key_.reset();
                fn();
            });
        }
        void cancel() override {
            if (key_) ex_.queue_.erase(*key_);
            key_.reset();
        }

      private:
        FakeExecutor& ex_;
        std::optional<Key> key_;
    };

    TimePoint now_;
    std::uint64_t seq_ = 0;
    pid_t next_pid_ = 100000;
    std::map<Key, std::function<void()>> queue_;
    std::map<pid_t, std::unique_ptr<FakeProcess>> procs_;
    std::map<pid_t, std::uint64_t> rss_;
    std::function<void(pid_t, int)> on_exit_;
    std::function<void(int)> on_signal_;
};

}  // namespace clusterd::test

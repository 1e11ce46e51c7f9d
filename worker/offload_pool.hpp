// The worker's offload pool: a few threads for CPU-heavy work that must not run on the loop
// (the analogue of Node's worker_threads). A job runs on a pool thread; its completion is
// posted back to the loop, where it may touch loop-owned state again. While any job is in
// flight the loop has work, so io_context::run() does not return under it. The threads start
// with the first job (on the loop), not before: a worker is ready without them.
//
// Asio stays in the .cpp; the header forward-declares io_context.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

namespace boost::asio {
class io_context;
}

namespace clusterd::worker {

class OffloadPool {
  public:
    /// `threads` pool threads (at least 1) whose completions go to `loop`.
    OffloadPool(boost::asio::io_context& loop, std::size_t threads = 2);
    /// Waits for running jobs; completions not yet run on the loop are dropped with it.
    ~OffloadPool();
    OffloadPool(const OffloadPool&) = delete;
    OffloadPool& operator=(const OffloadPool&) = delete;

    /// Runs `work` on a pool thread, then `done` on the loop; call it on the loop. An exception
    /// from `work` is caught and `done` still runs.
    void submit(std::function<void()> work, std::function<void()> done);
    /// Jobs submitted whose completion has not run yet (read on the loop).
    std::size_t in_flight() const;
    /// Number of pool threads (once started).
    std::size_t threads() const;
    /// Whether the threads run yet (they start with the first submit()).
    bool started() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Spins the calling thread until it has used `ms` milliseconds of CPU time; returns the
/// CPU time actually used, in microseconds.
long long burn_cpu_ms(long long ms);

}  // namespace clusterd::worker

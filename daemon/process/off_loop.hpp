// Work that must not run on the master's loop, on a thread of its own, with its result handed
// back to the loop. Today: parsing a config file at reload (a large file takes seconds of CPU,
// during which the loop could not read a heartbeat).
//
// The work function runs on the thread and must touch nothing the loop owns: it gets its
// inputs by value and returns its result. `done` runs on the loop, never after the OffLoop
// is destroyed, and never when the loop is gone. Destruction never waits for a thread:
// a job still running finishes on its own and its result is dropped.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <functional>
#include <memory>
#include <mutex>

#include "daemon/process/quiet_thread.hpp"

namespace clusterd {

class OffLoop {
  public:
    explicit OffLoop(boost::asio::io_context& io) : shared_(std::make_shared<Shared>()) {
        shared_->io = &io;
    }
    ~OffLoop() {
        std::lock_guard lock(shared_->mutex);
        shared_->io = nullptr;
    }
    OffLoop(const OffLoop&) = delete;
    OffLoop& operator=(const OffLoop&) = delete;

    /// Run `work` on a new thread; then `done(result)` on the loop. Throws std::system_error
    /// when no thread can be started.
    template <class R>
    void run(std::function<R()> work, std::function<void(R)> done) {
        auto shared = shared_;
        start_quiet_thread([shared, work = std::move(work), done = std::move(done)]() mutable {
            auto result = std::make_shared<R>(work());
            std::lock_guard lock(shared->mutex);
            if (shared->io == nullptr) return;
            boost::asio::post(*shared->io, [shared, result, done = std::move(done)] {
                if (shared->io != nullptr) done(std::move(*result));  // on the loop
            });
        });
    }

  private:
    struct Shared {
        std::mutex mutex;
        boost::asio::io_context* io = nullptr;  // null once the OffLoop is gone
    };
    std::shared_ptr<Shared> shared_;
};

}  // namespace clusterd

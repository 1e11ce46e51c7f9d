#include "worker/offload_pool.hpp"

#include <time.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <optional>

namespace clusterd::worker {

namespace asio = boost::asio;

// The threads start with the first job: most workers never offload anything, and a worker
// that does not start two threads is ready sooner (and lighter) after every restart.
struct OffloadPool::Impl {
    Impl(asio::io_context& l, std::size_t n) : loop(l), threads(std::max<std::size_t>(n, 1)) {}
    asio::io_context& loop;
    std::size_t threads;
    std::optional<asio::thread_pool> pool;  // made on the loop, by the first submit()
    // Touched on the loop only; shared so a completion never reaches into a destroyed pool.
    std::shared_ptr<std::size_t> in_flight = std::make_shared<std::size_t>(0);
};

OffloadPool::OffloadPool(asio::io_context& loop, std::size_t threads)
    : impl_(std::make_unique<Impl>(loop, threads)) {}

OffloadPool::~OffloadPool() {
    if (impl_->pool) impl_->pool->join();
}

void OffloadPool::submit(std::function<void()> work, std::function<void()> done) {
    if (!impl_->pool) impl_->pool.emplace(impl_->threads);
    ++*impl_->in_flight;
    // The guard keeps the loop running until the completion is posted back.
    auto guard = asio::make_work_guard(impl_->loop);
    asio::post(*impl_->pool, [&loop = impl_->loop, count = impl_->in_flight, work = std::move(work),
                              done = std::move(done), guard = std::move(guard)]() mutable {
        try {
            work();
        } catch (const std::exception& e) {
            spdlog::error("offloaded job failed: {}", e.what());
        }
        asio::post(loop, [count, done = std::move(done), guard = std::move(guard)]() mutable {
            --*count;
            guard.reset();
            done();
        });
    });
}

std::size_t OffloadPool::in_flight() const {
    return *impl_->in_flight;
}

std::size_t OffloadPool::threads() const {
    return impl_->threads;
}

bool OffloadPool::started() const {
    return impl_->pool.has_value();
}

long long burn_cpu_ms(long long ms) {
    auto now_us = [] {
        timespec ts{};
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return static_cast<long long>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
    };
    long long start = now_us();
    long long until = start + ms * 1000;
    long long now = start;
    while (now < until) now = now_us();
    return now - start;
}

}  // namespace clusterd::worker

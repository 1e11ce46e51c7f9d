// OffloadPool: CPU work on pool threads while the loop keeps turning; completions on the loop.
#include "worker/offload_pool.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <stdexcept>
#include <thread>

using namespace clusterd::worker;
using namespace std::chrono_literals;

TEST_CASE("offload pool: two 300ms CPU jobs run in parallel while the loop ticks on") {
    boost::asio::io_context io{1};
    OffloadPool pool(io);
    CHECK(pool.threads() == 2);
    auto loop_thread = std::this_thread::get_id();
    int done = 0;
    bool done_on_loop = true;
    std::atomic<bool> work_on_loop{false};
    for (int i = 0; i < 2; ++i) {
        pool.submit(
            [&] {
                if (std::this_thread::get_id() == loop_thread) work_on_loop = true;
                burn_cpu_ms(300);
            },
            [&] {
                done_on_loop = done_on_loop && std::this_thread::get_id() == loop_thread;
                ++done;
            });
    }
    CHECK(pool.in_flight() == 2);
    // A 10ms ticker on the loop: it must keep its pace while the jobs burn CPU.
    boost::asio::steady_timer ticker(io);
    int ticks = 0;
    std::chrono::milliseconds worst_gap{0};
    auto last = std::chrono::steady_clock::now();
    std::function<void()> tick = [&] {
        ticker.expires_after(10ms);
        ticker.async_wait([&](const boost::system::error_code& ec) {
            auto now = std::chrono::steady_clock::now();
            worst_gap = std::max(worst_gap,
                                 std::chrono::duration_cast<std::chrono::milliseconds>(now - last));
            last = now;
            ++ticks;
            if (!ec && done < 2) tick();
        });
    };
    tick();
    auto start = std::chrono::steady_clock::now();
    io.run();  // returns only once both completions have run (the pool holds work)
    auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(done == 2);
    CHECK(done_on_loop);
    CHECK_FALSE(work_on_loop.load());
    CHECK(pool.in_flight() == 0);
    CHECK(ticks >= 10);  // 300ms of 10ms ticks, minus scheduling noise on a busy machine
    CHECK(worst_gap < 150ms);
    CHECK(elapsed >= 290ms);
}

TEST_CASE("offload pool: a job that throws still completes on the loop") {
    boost::asio::io_context io{1};
    OffloadPool pool(io, 1);
    bool done = false;
    pool.submit([] { throw std::runtime_error("boom"); }, [&] { done = true; });
    io.run();
    CHECK(done);
}

TEST_CASE("burn_cpu_ms uses about that much CPU time") {
    long long used = burn_cpu_ms(50);
    CHECK(used >= 50'000);
    CHECK(used < 60'000);
}

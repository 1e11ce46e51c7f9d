// OffloadPool: CPU work on pool threads while the loop keeps turning; completions on the loop.
#include "worker/offload_pool.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>

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

TEST_CASE("offload pool: many submits from the loop, chained from completions, all complete") {
    // The loop runs on its own thread; jobs are submitted from it only, as the worker does.
    boost::asio::io_context io{1};
    OffloadPool pool(io, 4);
    constexpr int half = 1000;
    std::vector<long long> results(2 * half, -1);
    int completed = 0;
    long long sum = 0;
    std::size_t max_in_flight = 0;
    std::function<void(int)> submit_one = [&](int i) {
        auto slot = static_cast<std::size_t>(i);
        pool.submit([&results, slot] { results[slot] = static_cast<long long>(slot) * 3; },
                    [&, i, slot] {
                        // The job's write is visible here: the completion runs after it.
                        sum += results[slot];
                        ++completed;
                        // Completions submit the second half while first-half jobs still run.
                        if (i < half) submit_one(i + half);
                    });
        max_in_flight = std::max(max_in_flight, pool.in_flight());
    };
    boost::asio::post(io, [&] {
        for (int i = 0; i < half; ++i) submit_one(i);
    });
    std::thread loop([&] { io.run(); });
    loop.join();
    CHECK(completed == 2 * half);
    CHECK(pool.in_flight() == 0);
    CHECK(sum == 3LL * (2 * half - 1) * (2 * half) / 2);
    CHECK(max_in_flight > 1);
}

TEST_CASE("offload pool: completions racing shutdown never touch a destroyed pool") {
    for (int round = 0; round < 20; ++round) {
        CAPTURE(round);
        boost::asio::io_context io{1};
        std::atomic<int> worked{0};
        int completed = 0;
        {
            OffloadPool pool(io, 3);
            boost::asio::post(io, [&] {
                for (int i = 0; i < 200; ++i)
                    pool.submit([&] { worked.fetch_add(1, std::memory_order_relaxed); },
                                [&] { ++completed; });
            });
            // The loop stops while jobs still run and completions are still being posted.
            std::thread loop([&] {
                io.run_one();
                io.run_for(std::chrono::microseconds(100 * round));
            });
            loop.join();
            io.stop();
        }  // the pool joins its threads here; completions not run stay queued on the loop
        CHECK(worked.load() == 200);
        CHECK(completed <= 200);
        // The queued completions still run safely on the loop after the pool is gone.
        io.restart();
        io.run();
        CHECK(completed == 200);
    }
}

namespace {
std::size_t threads_of_this_process() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task"))
        ++n;
    return n;
}
}  // namespace

TEST_CASE("offload pool: no thread starts before the first job") {
    boost::asio::io_context io{1};
    std::size_t before = threads_of_this_process();
    {
        OffloadPool pool(io, 3);
        CHECK(pool.threads() == 3);
        CHECK_FALSE(pool.started());
        CHECK(threads_of_this_process() == before);
        bool done = false;
        pool.submit([] {}, [&] { done = true; });
        CHECK(pool.started());
        CHECK(threads_of_this_process() == before + 3);
        io.run_for(5s);
        CHECK(done);
    }
    CHECK(threads_of_this_process() == before);
    OffloadPool unused(io);  // never started: nothing to join
}

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <optional>
#include <thread>

#include "daemon/process/off_loop.hpp"

using namespace clusterd;
namespace asio = boost::asio;

TEST_CASE(
    "OffLoop: the work runs on its own thread while the loop goes on; done runs on the loop") {
    asio::io_context io;
    std::atomic<bool> release{false};
    std::thread::id loop_thread = std::this_thread::get_id(), work_thread, done_thread;
    int ticks = 0;
    std::optional<int> result;
    {
        OffLoop off(io);
        off.run<int>(
            [&] {
                work_thread = std::this_thread::get_id();
                while (!release) std::this_thread::yield();
                return 42;
            },
            [&](int r) {
                done_thread = std::this_thread::get_id();
                result = r;
            });
        // The loop keeps serving its timers while the work is blocked.
        asio::steady_timer timer(io);
        std::function<void()> tick = [&] {
            timer.expires_after(std::chrono::milliseconds(1));
            timer.async_wait([&](auto) {
                if (++ticks == 20) release = true;
                if (!result) tick();
            });
        };
        tick();
        io.run();
    }
    CHECK(ticks >= 20);
    REQUIRE(result);
    CHECK(*result == 42);
    CHECK(work_thread != loop_thread);
    CHECK(done_thread == loop_thread);
}

TEST_CASE("OffLoop: a result that arrives after the OffLoop is gone is dropped") {
    asio::io_context io;
    std::atomic<bool> release{false}, finished{false};
    bool done_called = false;
    {
        OffLoop off(io);
        off.run<int>(
            [&] {
                while (!release) std::this_thread::yield();
                finished = true;
                return 1;
            },
            [&](int) { done_called = true; });
    }  // destroyed while the work still runs: never waits for it
    release = true;
    while (!finished) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the thread post, or not
    io.run();
    CHECK_FALSE(done_called);
}

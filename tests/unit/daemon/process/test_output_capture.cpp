// OutputCapture with real pipes on a real io_context, and with a real worker process.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/process/output_capture.hpp"
#include "daemon/process/spawner.hpp"

using namespace clusterd;
using namespace std::chrono_literals;

namespace {

struct Line {
    std::string who;
    std::string text;
    bool continued;
};

struct Recorder {
    std::vector<Line> lines;
    OutputCapture::LineSink sink(const std::string& who) {
        return [this, who](std::string_view text, bool continued) {
            lines.push_back({who, std::string(text), continued});
        };
    }
};

/// Runs the loop until `done()` or 10 s.
template <class Pred>
bool run_until(boost::asio::io_context& io, Pred done) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        io.restart();
        io.run_for(5ms);
    }
    return done();
}

void put(const UniqueFd& fd, const std::string& text) {
    REQUIRE(::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}

}  // namespace

TEST_CASE("output capture: whole lines only, partial lines wait, EOF flushes and closes") {
    boost::asio::io_context io;
    Recorder rec;
    OutputCapture capture(io, "web", 0, rec.sink("web[0]"));
    UniqueFd w = capture.open();
    CHECK(capture.open_pipes() == 1);
    put(w, "abc");
    io.run_for(30ms);
    CHECK(rec.lines.empty());  // no newline yet
    put(w, "def\nghi\r\n\nj");
    REQUIRE(run_until(io, [&] { return rec.lines.size() == 3; }));
    CHECK(rec.lines[0].text == "abcdef");
    CHECK(rec.lines[1].text == "ghi");  // CR LF taken as one line end
    CHECK(rec.lines[2].text == "");
    w.reset();  // the last writer closes: EOF
    REQUIRE(run_until(io, [&] { return capture.open_pipes() == 0; }));
    REQUIRE(rec.lines.size() == 4);
    CHECK(rec.lines[3].text == "j");
    CHECK_FALSE(rec.lines[3].continued);
}

TEST_CASE("output capture: a line over 16 KiB is cut in 16 KiB pieces marked continued") {
    boost::asio::io_context io;
    Recorder rec;
    OutputCapture capture(io, "web", 0, rec.sink("w"));
    UniqueFd w = capture.open();
    std::string big(40000, 'x');
    big[16383] = 'A';
    big[16384] = 'B';
    std::thread writer([&] {  // larger than the pipe buffer: write from another thread
        std::string text = big + "\n" + std::string(OutputCapture::kMaxLine, 'y') + "\n";
        std::size_t done = 0;
        while (done < text.size()) {
            ssize_t n = ::write(w.get(), text.data() + done, text.size() - done);
            if (n <= 0) break;
            done += static_cast<std::size_t>(n);
        }
        w.reset();
    });
    REQUIRE(run_until(io, [&] { return capture.open_pipes() == 0; }));
    writer.join();
    REQUIRE(rec.lines.size() == 4);
    CHECK(rec.lines[0].text.size() == 16384);
    CHECK(rec.lines[0].text.back() == 'A');
    CHECK(rec.lines[0].continued);
    CHECK(rec.lines[1].text.size() == 16384);
    CHECK(rec.lines[1].text.front() == 'B');
    CHECK(rec.lines[1].continued);
    CHECK(rec.lines[2].text.size() == 40000 - 2 * 16384);
    CHECK_FALSE(rec.lines[2].continued);
    CHECK(rec.lines[3].text == std::string(16384, 'y'));  // exactly 16 KiB: one whole line
    CHECK_FALSE(rec.lines[3].continued);
}

TEST_CASE("output capture: two workers' partial lines never mix") {
    boost::asio::io_context io;
    Recorder rec;
    OutputCapture a(io, "web", 0, rec.sink("a"));
    OutputCapture b(io, "web", 1, rec.sink("b"));
    UniqueFd wa = a.open(), wb = b.open();
    put(wa, "a-begins-");
    io.run_for(20ms);
    put(wb, "b-begins-");
    io.run_for(20ms);
    put(wa, "a-ends\n");
    io.run_for(20ms);
    put(wb, "b-ends\n");
    REQUIRE(run_until(io, [&] { return rec.lines.size() == 2; }));
    CHECK(rec.lines[0].who == "a");
    CHECK(rec.lines[0].text == "a-begins-a-ends");
    CHECK(rec.lines[1].who == "b");
    CHECK(rec.lines[1].text == "b-begins-b-ends");
}

TEST_CASE(
    "output capture: many pipes written at once, more than a read at a time, keep every "
    "line whole and in order") {
    // The pipes share one read buffer: a line split across reads, and across the other pipes'
    // reads in between, must come out whole, under its own pipe.
    boost::asio::io_context io;
    Recorder rec;
    constexpr int kPipes = 8;
    std::vector<std::unique_ptr<OutputCapture>> captures;
    std::vector<UniqueFd> ends;
    for (int i = 0; i < kPipes; ++i) {
        captures.push_back(
            std::make_unique<OutputCapture>(io, "web", i, rec.sink(std::to_string(i))));
        ends.push_back(captures.back()->open());
    }
    auto line = [](int pipe, int n) {
        return std::to_string(pipe) + ":" + std::to_string(n) + ":" +
               std::string(static_cast<std::size_t>(n * 37 % 3000), char('a' + pipe));
    };
    constexpr int kLines = 400;  // about 600 KiB a pipe, several times the read buffer
    std::vector<std::thread> writers;
    for (int i = 0; i < kPipes; ++i) {
        writers.emplace_back([&, i] {
            std::string text;
            for (int n = 0; n < kLines; ++n) text += line(i, n) + (n % 2 ? "\r\n" : "\n");
            std::size_t done = 0;
            while (done < text.size()) {
                // Odd sizes, so that lines straddle the reads.
                ssize_t k = ::write(ends[static_cast<std::size_t>(i)].get(), text.data() + done,
                                    std::min<std::size_t>(text.size() - done, 7919));
                if (k <= 0) break;
                done += static_cast<std::size_t>(k);
            }
            ends[static_cast<std::size_t>(i)].reset();
        });
    }
    REQUIRE(run_until(io, [&] {
        for (auto& c : captures)
            if (c->open_pipes() != 0) return false;
        return true;
    }));
    for (auto& t : writers) t.join();
    REQUIRE(rec.lines.size() == static_cast<std::size_t>(kPipes * kLines));
    std::vector<int> next(kPipes, 0);
    for (const Line& l : rec.lines) {
        int pipe = std::stoi(l.who);
        CHECK(l.text == line(pipe, next[static_cast<std::size_t>(pipe)]));
        CHECK_FALSE(l.continued);
        ++next[static_cast<std::size_t>(pipe)];
    }
}

TEST_CASE("output capture: lines left in the pipe are still logged after the capture is gone") {
    boost::asio::io_context io;
    Recorder rec;
    {
        OutputCapture capture(io, "web", 0, rec.sink("w"));
        UniqueFd w = capture.open();
        put(w, "last words\npartial");
    }                // the worker exited and its slot was dropped before the loop read its pipe
    io.run_for(2s);  // returns once the pipe reached EOF: no work left
    REQUIRE(rec.lines.size() == 2);
    CHECK(rec.lines[0].text == "last words");
    CHECK(rec.lines[1].text == "partial");
}

TEST_CASE("output capture: close() stops reading at once") {
    boost::asio::io_context io;
    Recorder rec;
    OutputCapture capture(io, "web", 0, rec.sink("w"));
    UniqueFd w = capture.open();
    put(w, "x");
    io.run_for(20ms);
    capture.close();
    CHECK(capture.open_pipes() == 0);
    REQUIRE(rec.lines.size() == 1);  // the partial line is flushed
    CHECK(rec.lines[0].text == "x");
    io.restart();
    CHECK(io.run_for(1s) >= 1);  // the aborted read completes; nothing is pending after it
    CHECK(io.stopped());
}

TEST_CASE("output capture: the default sink logs \"program[slot] line\" at info") {
    std::ostringstream out;
    auto previous = spdlog::default_logger();
    auto logger = std::make_shared<spdlog::logger>(
        "capture-test", std::make_shared<spdlog::sinks::ostream_sink_st>(out));
    logger->set_pattern("%l %v");
    spdlog::set_default_logger(logger);
    {
        boost::asio::io_context io;
        OutputCapture capture(io, "api", 3);
        UniqueFd w = capture.open();
        put(w, "hello\n" + std::string(16385, 'z') + "\n");
        w.reset();
        run_until(io, [&] { return capture.open_pipes() == 0; });
    }
    spdlog::set_default_logger(previous);
    std::string text = out.str();
    CHECK(text.find("info api[3] hello\n") != std::string::npos);
    CHECK(text.find("info api[3] " + std::string(16384, 'z') + " [continued]\n") !=
          std::string::npos);
    CHECK(text.find("info api[3] z\n") != std::string::npos);
}

TEST_CASE(
    "output capture: a real worker's huge, partial and fast lines arrive whole and in order") {
    boost::asio::io_context io;
    Recorder rec;
    OutputCapture capture(io, "spew", 0, rec.sink("spew"));
    SpawnSpec spec;
    spec.path = CLUSTERD_MISBEHAVE;
    spec.argv = {"misbehave", "spew"};
    UniqueFd w = capture.open();
    spec.output_fd = w.get();
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    w.reset();  // as the master does right after spawn: only the worker holds the write end
    REQUIRE(run_until(io, [&] { return capture.open_pipes() == 0; }));
    int status = 0;
    REQUIRE(::waitpid(r.pid, &status, 0) == r.pid);
    CHECK(WIFEXITED(status));

    std::vector<std::string> texts;
    for (const auto& l : rec.lines) texts.push_back(l.text);
    REQUIRE(texts.size() == 2 + 3 + 5000 + 1 + 1);
    CHECK(texts[0] == "partial-line-end");
    CHECK(texts[1] == "stderr-line");
    CHECK(texts[2] == std::string(16384, 'x'));
    CHECK(rec.lines[2].continued);
    CHECK(rec.lines[3].continued);
    CHECK(texts[4] == std::string(40000 - 2 * 16384, 'x'));
    CHECK_FALSE(rec.lines[4].continued);
    for (int i = 0; i < 5000; ++i) {
        if (texts[5 + i] != "fast " + std::to_string(i)) {
            FAIL_CHECK("line " << 5 + i << " is \"" << texts[5 + i] << "\"");
            break;
        }
    }
    CHECK(texts[5005] == std::string(16384, 'y'));
    CHECK_FALSE(rec.lines[5005].continued);
    CHECK(texts[5006] == "no-newline-at-eof");
}

// The loader's limits: what it reads (regular files only, at most 4 MiB), what text it
// accepts (UTF-8 without NUL, bounded nesting and aliases) and the ranges of its values.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/config.hpp"
#include "common/limits.hpp"

using namespace std::chrono_literals;
using clusterd::ConfigError;
using clusterd::load_config_file;
using clusterd::load_config_string;
namespace limits = clusterd::limits;

namespace {

/// A fresh directory, removed with everything in it.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char tmpl[] = "/tmp/clusterd-limits-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string error_of(const std::function<void()>& load) {
    try {
        load();
    } catch (const ConfigError& e) {
        return e.what();
    }
    FAIL("loaded without an error");
    return {};
}

std::string text_error(const std::string& text) {
    return error_of([&] { load_config_string(text, "t.yaml"); });
}

std::string file_error(const std::string& path) {
    return error_of([&] { load_config_file(path); });
}

const std::string kProgram = "programs:\n  web:\n    cores: 1\n";

std::string with(const std::string& lines) {
    return kProgram + lines;
}

}  // namespace

TEST_CASE("config file: a directory, a FIFO, a socket and a device are refused by kind") {
    TempDir dir;
    CHECK(file_error(dir.path.string()) ==
          dir.path.string() + ": is a directory, not a config file");

    std::string fifo = dir.file("fifo.yaml");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // A FIFO without a writer must not block the loader: it runs in the master.
    auto start = std::chrono::steady_clock::now();
    CHECK(file_error(fifo) == fifo + ": is a FIFO, not a regular file");
    CHECK(std::chrono::steady_clock::now() - start < 1s);

    std::string sock = dir.file("sock.yaml");
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::close(fd);
    CHECK(file_error(sock) == sock + ": is a socket, not a regular file");

    CHECK(file_error("/dev/null") == "/dev/null: is a device, not a regular file");
}

TEST_CASE("config file: a missing file and a symlink loop say so") {
    TempDir dir;
    std::string missing = dir.file("missing.yaml");
    CHECK(file_error(missing) == missing + ": cannot read: No such file or directory");
    std::string loop = dir.file("loop.yaml");
    std::filesystem::create_symlink(loop, loop);
    CHECK(file_error(loop) == loop + ": cannot read: Too many levels of symbolic links");
}

TEST_CASE("config file: the size limit, exactly at it and one byte over") {
    TempDir dir;
    std::string path = dir.file("big.yaml");
    // A valid config padded with a comment to exactly the limit loads.
    std::string text = with("");
    text += "#" + std::string(limits::kMaxConfigBytes - text.size() - 2, 'x') + "\n";
    REQUIRE(text.size() == limits::kMaxConfigBytes - 0);
    std::ofstream(path, std::ios::binary) << text;
    CHECK(load_config_file(path).programs.size() == 1);
    std::ofstream(path, std::ios::binary | std::ios::app) << "\n";
    CHECK(file_error(path) == path + ": is 4194305 bytes, more than the 4 MiB limit");
    // A sparse 50 GB file is refused from its size, not read.
    REQUIRE(::truncate(path.c_str(), off_t{50} << 30) == 0);
    auto start = std::chrono::steady_clock::now();
    CHECK(file_error(path).find("is 53687091200 bytes, more than the 4 MiB limit") !=
          std::string::npos);
    CHECK(std::chrono::steady_clock::now() - start < 1s);
    // The same limit holds for text given directly.
    CHECK(text_error(std::string(limits::kMaxConfigBytes + 1, ' ')) ==
          "t.yaml: is 4194305 bytes, more than the 4 MiB limit");
}

TEST_CASE("config text: a NUL byte and invalid UTF-8 are named with their position") {
    CHECK(text_error(with("    user: ro" + std::string(1, '\0') + "ot\n")) ==
          "t.yaml:4:13: contains a NUL byte at 4:13 (a config is UTF-8 text)");
    CHECK(text_error(with("    user: \xff\n")) ==
          "t.yaml:4:11: invalid UTF-8 at 4:11 (a config is UTF-8 text)");
    // Columns count characters: "é" is one.
    CHECK(text_error(with("    env: {A: \"\xc3\xa9\xc3\"}\n")) ==
          "t.yaml:4:16: invalid UTF-8 at 4:16 (a config is UTF-8 text)");
    for (const char* bad : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80"}) {
        CAPTURE(bad);
        CHECK(text_error(with(std::string("    user: ") + bad + "\n"))
                  .find("invalid UTF-8 at 4:11") != std::string::npos);
    }
    // Valid multi-byte text and a UTF-8 BOM are fine.
    auto config = load_config_string(
        "\xef\xbb\xbf" +
            with("    env: {GREETING: \"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"}\n"),
        "t.yaml");
    CHECK(config.programs[0].env.at("GREETING") == "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
}

TEST_CASE("config text: nesting is bounded, both where yaml-cpp stops and below it") {
    std::string deep = "programs: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
    CHECK(text_error(deep).find("nesting deeper than 32 levels at 1:") != std::string::npos);
    std::string medium = with("    env: " + std::string(40, '[') + std::string(40, ']') + "\n");
    CHECK(text_error(medium).find("nesting deeper than 32 levels at 4:") != std::string::npos);
    // 32 levels of nesting are still read (and then refused for what they are).
    std::string ok_depth = with("    env: " + std::string(29, '[') + std::string(29, ']') + "\n");
    CHECK(text_error(ok_depth).find("programs.web.env: expected a map") != std::string::npos);
}

TEST_CASE("config text: aliases that name a billion nodes are refused quickly") {
    std::string text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 9; ++i) {
        text += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
        for (int k = 0; k < 10; ++k) text += (k ? ", *a" : "*a") + std::to_string(i - 1);
        text += "]\n";
    }
    auto start = std::chrono::steady_clock::now();
    CHECK(text_error(text).find("more than 100000 YAML nodes") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - start < 2s);
}

TEST_CASE("config values: durations stop at 7 days, far from the clock's overflow") {
    for (const char* key : {"start_time", "start_timeout", "watchdog", "stop_timeout", "min_uptime",
                            "abort_timeout"}) {
        CAPTURE(key);
        auto config = load_config_string(with(std::string("    ") + key + ": 168h\n"), "t.yaml");
        CHECK(text_error(with(std::string("    ") + key + ": 168h1ms\n"))
                  .find("expected a duration of at most 168h") != std::string::npos);
        // The measured overflow: 2,562,048 h of nanoseconds is past INT64_MAX.
        CHECK(text_error(with(std::string("    ") + key + ": 2562048h\n"))
                  .find("expected a duration of at most 168h") != std::string::npos);
    }
    CHECK(text_error("daemon:\n  shutdown_timeout: 99999999999999999999h\n" + kProgram)
              .find("t.yaml:2:21: daemon.shutdown_timeout: expected a duration like") !=
          std::string::npos);
}

TEST_CASE("config values: the backoff cannot spin") {
    CHECK(text_error(with("    backoff: {initial: 0s, max: 0s}\n")) ==
          "t.yaml:4:33: programs.web.backoff.max: expected at least 100ms (a slot whose runs "
          "keep failing must not restart in a loop), got 0s");
    CHECK(text_error(with("    backoff: {max: 99ms}\n")).find("expected at least 100ms") !=
          std::string::npos);
    auto config = load_config_string(with("    backoff: {initial: 0s, max: 100ms}\n"), "t.yaml");
    CHECK(config.programs[0].backoff.max == 100ms);
}

TEST_CASE("config values: listeners and workers stop at the limits every other input has") {
    std::string listen = "    listen:\n";
    for (int i = 0; i < limits::kMaxListeners; ++i)
        listen += "      - {name: l" + std::to_string(i) +
                  ", address: \"127.0.0.1:" + std::to_string(2000 + i) + "\"}\n";
    CHECK(load_config_string(with(listen), "t.yaml").programs[0].listen.size() == 256);
    listen += "      - {name: over, address: \"127.0.0.1:1999\"}\n";
    CHECK(text_error(with(listen)).find("expected at most 256 listen entries, got 257") !=
          std::string::npos);

    CHECK(
        load_config_string("programs:\n  web:\n    cores: 4096\n", "t.yaml").programs[0].workers ==
        limits::kMaxWorkers);
    CHECK(text_error("programs:\n  web:\n    cores: 4097\n")
              .find(R"(expected "auto" or an integer from 1 to 4096)") != std::string::npos);
}

TEST_CASE("config values: resource limits a worker cannot start under are refused") {
    CHECK(text_error(with("    rlimits: {nofile: 0}\n")) ==
          "t.yaml:4:23: programs.web.rlimits.nofile: expected at least 16 (nofile below that "
          "stops every worker), got \"0\"");
    CHECK(load_config_string(with("    rlimits: {nofile: 16, core: 0, fsize: 0}\n"), "t.yaml")
              .programs[0]
              .rlimits.size() == 3);
    // The listening sockets come first: 20 of them leave no room under 16.
    std::string many = "    listen:\n";
    for (int i = 0; i < 20; ++i)
        many += "      - {name: l" + std::to_string(i) +
                ", address: \"127.0.0.1:" + std::to_string(20000 + i) + "\"}\n";
    CHECK(text_error(with(many + "    rlimits: {nofile: 30}\n"))
              .find("programs.web.rlimits.nofile: expected at least 31 with 20 listen entries "
                    "(they take fds 3 to 22), got 30") != std::string::npos);
    CHECK(load_config_string(with(many + "    rlimits: {nofile: 31}\n"), "t.yaml")
              .programs[0]
              .rlimits.size() == 1);
    CHECK(text_error(with("    rlimits: {cpu: 0}\n")).find("expected at least 1") !=
          std::string::npos);
    CHECK(text_error(with("    rlimits: {as: 1M}\n")).find("expected at least 64M") !=
          std::string::npos);
}

TEST_CASE("config positions: every value's position is kept for later checks") {
    auto config = load_config_string(with("    user: nobody\n    command: [a, b]\n"), "t.yaml");
    CHECK(config.diagnostic("programs.web.user", "x").to_string() ==
          "t.yaml:4:11: programs.web.user: x");
    CHECK(config.diagnostic("programs.web.command[1]", "x").to_string() ==
          "t.yaml:5:18: programs.web.command[1]: x");
    // A key that is not in the file points at the nearest enclosing value.
    CHECK(config.diagnostic("programs.web.group", "x").to_string() ==
          "t.yaml:3:5: programs.web.group: x");
    CHECK(config.diagnostic("daemon.log_file", "x").to_string() == "t.yaml: daemon.log_file: x");
}

TEST_CASE("config loader: pure, so two threads may load at once") {
    std::string text = with("    env: {A: b}\n");
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 200; ++i)
                if (load_config_string(text, "t.yaml").programs[0].env.at("A") == "b") ++ok;
        });
    for (auto& t : threads) t.join();
    CHECK(ok == 800);
}

TEST_CASE("config messages: a long value is shortened at a character boundary") {
    std::string e_acute = "\xc3\xa9";
    std::string value;
    for (int i = 0; i < 40; ++i) value += e_acute;
    std::string error = text_error(with("    cpu_affinity: " + value + "\n"));
    std::string shown;
    for (int i = 0; i < 28; ++i) shown += e_acute;  // 56 bytes: the 57th would split one
    CHECK(error.find("got \"" + shown + "...\"") != std::string::npos);
}

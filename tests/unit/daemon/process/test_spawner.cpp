// The spawner with real processes: fds, LISTEN_PID, leaks, exec failures.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/exit_codes.hpp"
#include "daemon/process/spawner.hpp"

using namespace clusterd;

namespace {

std::string temp_file() {
    char path[] = "/tmp/clusterd-spawner-XXXXXX";
    int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::close(fd);
    return path;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

int wait_exit(pid_t pid) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("spawn: passed fds land at 3.., LISTEN_PID is the child's pid, nothing else leaks") {
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    int leak = ::open("/dev/null", O_RDONLY);  // not close-on-exec: must not reach the child
    REQUIRE(leak >= 0);
    std::string out = temp_file();
    UniqueFd out_fd(::open(out.c_str(), O_WRONLY | O_CLOEXEC));

    SpawnSpec spec;
    spec.path = "/bin/sh";
    spec.argv = {"sh", "-c",
                 "echo pid=$$ listen_pid=$LISTEN_PID fds=$LISTEN_FDS; "
                 "echo fd3=$(readlink /proc/$$/fd/3); ls /proc/$$/fd | tr '\\n' ' '"};
    spec.env = {"LISTEN_FDS=1", "LISTEN_PID="};
    spec.pass_fds = {pair[1]};
    spec.output_fd = out_fd.get();
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    CHECK(wait_exit(r.pid) == 0);

    struct stat st {};
    REQUIRE(::fstat(pair[1], &st) == 0);
    std::string text = slurp(out);
    INFO(text);
    CHECK(text.find("pid=" + std::to_string(r.pid) + " listen_pid=" + std::to_string(r.pid) +
                    " fds=1") != std::string::npos);
    CHECK(text.find("fd3=socket:[" + std::to_string(st.st_ino) + "]") != std::string::npos);
    CHECK(text.find(" " + std::to_string(leak) + " ") == std::string::npos);
    ::close(leak);
    ::close(pair[0]);
    ::close(pair[1]);
    ::unlink(out.c_str());
}

TEST_CASE("spawn: fds already sitting at 3 and 4 are placed without clobbering each other") {
    // Put two distinguishable files exactly where the child wants them, crossed over.
    std::string a = temp_file(), b = temp_file();
    int fa = ::open(a.c_str(), O_RDONLY | O_CLOEXEC), fb = ::open(b.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fa >= 0);
    REQUIRE(fb >= 0);
    std::string out = temp_file();
    UniqueFd out_fd(::open(out.c_str(), O_WRONLY | O_CLOEXEC));
    SpawnSpec spec;
    spec.path = "/bin/sh";
    spec.argv = {"sh", "-c", "readlink /proc/$$/fd/3 /proc/$$/fd/4"};
    spec.pass_fds = {fb, fa};  // fb must become 3 and fa 4
    spec.output_fd = out_fd.get();
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    CHECK(wait_exit(r.pid) == 0);
    CHECK(slurp(out) == b + "\n" + a + "\n");
    ::close(fa);
    ::close(fb);
    for (auto& p : {a, b, out}) ::unlink(p.c_str());
}

TEST_CASE("spawn: a failed execve is reported on the status pipe and exits 127") {
    SpawnSpec spec;
    spec.path = "/nonexistent/clusterd-no-such-binary";
    spec.argv = {"x"};
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    SpawnFailure failure{};
    ssize_t n = ::read(r.status_pipe.get(), &failure, sizeof failure);
    CHECK(n == static_cast<ssize_t>(sizeof failure));
    CHECK(std::string(spawn_step_name(failure.step)) == "execve");
    CHECK(failure.error == ENOENT);
    CHECK(wait_exit(r.pid) == exit_code::worker_exec_failed);
}

TEST_CASE("spawn: a successful execve closes the status pipe (EOF)") {
    SpawnSpec spec;
    spec.path = "/bin/true";
    spec.argv = {"true"};
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    char c;
    CHECK(::read(r.status_pipe.get(), &c, 1) == 0);
    CHECK(wait_exit(r.pid) == 0);
}

TEST_CASE("spawn: out of file descriptors, no child is made and the failed call is named") {
    // Every fd below the lowest free one is in use; a limit there leaves none for the pipe.
    int lowest = ::dup(0);
    REQUIRE(lowest >= 0);
    ::close(lowest);
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    struct rlimit tight = saved;
    tight.rlim_cur = static_cast<rlim_t>(lowest);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
    SpawnSpec spec;
    spec.path = "/bin/true";
    spec.argv = {"true"};
    SpawnResult r = spawn(spec);
    ::setrlimit(RLIMIT_NOFILE, &saved);
    CHECK(r.pid == -1);
    CHECK(r.error == EMFILE);
    CHECK(std::string(r.call) == "pipe2");
    CHECK(!r.status_pipe);
}

TEST_CASE("find_executable searches PATH like execvp") {
    CHECK(find_executable("sh", "/nonexistent:/bin") == std::optional<std::string>("/bin/sh"));
    CHECK_FALSE(find_executable("clusterd-no-such-binary", "/bin:/usr/bin"));
    CHECK(find_executable("/bin/sh", "") == std::optional<std::string>("/bin/sh"));
    CHECK_FALSE(find_executable("/etc/passwd", ""));  // not executable
}

TEST_CASE("spawn: rlimits are set in the child (soft and hard), the parent's stay as they were") {
    rlimit before{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
    REQUIRE(before.rlim_max >= 200);
    std::string out = temp_file();
    UniqueFd out_fd(::open(out.c_str(), O_WRONLY | O_CLOEXEC));
    SpawnSpec spec;
    spec.path = "/bin/sh";
    spec.argv = {"sh", "-c", "echo $(ulimit -Sn) $(ulimit -Hn) $(ulimit -Sc) $(ulimit -Hc)"};
    spec.rlimits = {{"nofile", RLIMIT_NOFILE, 100, 200}, {"core", RLIMIT_CORE, 0, 0}};
    spec.output_fd = out_fd.get();
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    CHECK(wait_exit(r.pid) == 0);
    CHECK(slurp(out) == "100 200 0 0\n");
    rlimit after{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &after) == 0);
    CHECK(after.rlim_cur == before.rlim_cur);
    CHECK(after.rlim_max == before.rlim_max);
    ::unlink(out.c_str());
}

TEST_CASE("spawn: an impossible rlimit fails the setrlimit step, reported on the status pipe") {
    SpawnSpec spec;
    spec.path = "/bin/true";
    spec.argv = {"true"};
    spec.rlimits = {{"nofile", RLIMIT_NOFILE, 1ull << 40, 1ull << 40}};  // above fs.nr_open
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    SpawnFailure failure{};
    REQUIRE(::read(r.status_pipe.get(), &failure, sizeof failure) ==
            static_cast<ssize_t>(sizeof failure));
    CHECK(std::string(spawn_step_name(failure.step)) == "setrlimit");
    CHECK(failure.error == EPERM);
    CHECK(wait_exit(r.pid) == exit_code::worker_exec_failed);
}

// The spawner with real processes: fds, LISTEN_PID, leaks, exec failures.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

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

TEST_CASE("spawn: the child names itself in pid_word before execve (a scoreboard record)") {
    // Shared memory, as a record is: the child writes through the master's own mapping.
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(page != MAP_FAILED);
    auto* word = static_cast<std::int32_t*>(page);
    SpawnSpec spec;
    spec.path = "/bin/true";
    spec.argv = {"true"};
    spec.pid_word = word;
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    CHECK(__atomic_load_n(word, __ATOMIC_RELAXED) == r.pid);  // already, when spawn() returns
    CHECK(wait_exit(r.pid) == 0);
    ::munmap(page, 4096);
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

namespace {

/// The lines of the child's /proc/self/status that match `grep` (grep reads its own).
std::string child_status(SpawnSpec spec, const std::string& grep) {
    std::string out = temp_file();
    UniqueFd out_fd(::open(out.c_str(), O_WRONLY | O_CLOEXEC));
    spec.path = "/bin/sh";
    spec.argv = {"sh", "-c", "exec grep -E '" + grep + "' /proc/self/status"};
    spec.output_fd = out_fd.get();
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    CHECK(wait_exit(r.pid) == 0);
    std::string text = slurp(out);
    ::unlink(out.c_str());
    return text;
}

int handled = 0;
void on_usr2(int) {
    ++handled;
}

}  // namespace

TEST_CASE(
    "spawn: the child starts with an empty mask and nothing ignored; the parent's "
    "handlers, ignored signals and mask are as they were") {
    struct sigaction handler {};
    struct sigaction old_usr2 {};
    struct sigaction old_pipe {};
    handler.sa_handler = on_usr2;
    REQUIRE(::sigaction(SIGUSR2, &handler, &old_usr2) == 0);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGPIPE, &ignore, &old_pipe) == 0);
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask) == 0);

    // Caught signals are reset by execve anyway (and grep catches SIGSEGV itself): what
    // must not leak into the worker is the mask and the ignored set.
    std::string text = child_status({}, "^Sig(Blk|Ign)");
    CHECK(text == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");

    struct sigaction now {};
    REQUIRE(::sigaction(SIGUSR2, nullptr, &now) == 0);
    CHECK((now.sa_handler == &on_usr2));
    REQUIRE(::sigaction(SIGPIPE, nullptr, &now) == 0);
    CHECK((now.sa_handler == SIG_IGN));
    sigset_t mask;
    REQUIRE(::pthread_sigmask(SIG_SETMASK, nullptr, &mask) == 0);
    CHECK(sigismember(&mask, SIGUSR1) == 1);
    CHECK(sigismember(&mask, SIGUSR2) == 0);
    int before = handled;
    ::raise(SIGUSR2);
    CHECK(handled == before + 1);

    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGPIPE, &old_pipe, nullptr);
    ::sigaction(SIGUSR2, &old_usr2, nullptr);
}

TEST_CASE("spawn: cwd, umask and the CPU are the child's own; the parent's stay") {
    cpu_set_t allowed;
    REQUIRE(::sched_getaffinity(0, sizeof allowed, &allowed) == 0);
    int cpu = 0;
    while (!CPU_ISSET(cpu, &allowed)) ++cpu;
    char cwd_before[4096];
    REQUIRE(::getcwd(cwd_before, sizeof cwd_before) != nullptr);
    mode_t umask_before = ::umask(022);
    ::umask(umask_before);

    std::string out = temp_file();
    UniqueFd out_fd(::open(out.c_str(), O_WRONLY | O_CLOEXEC));
    SpawnSpec spec;
    spec.path = "/bin/sh";
    spec.argv = {"sh", "-c", "pwd; umask; grep ^Cpus_allowed_list /proc/self/status"};
    spec.cwd = "/";
    spec.umask = 0027;
    spec.cpu = cpu;
    spec.output_fd = out_fd.get();
    SpawnResult r = spawn(spec);
    REQUIRE(r.pid > 0);
    CHECK(wait_exit(r.pid) == 0);
    CHECK(slurp(out) == "/\n0027\nCpus_allowed_list:\t" + std::to_string(cpu) + "\n");
    ::unlink(out.c_str());

    char cwd_after[4096];
    REQUIRE(::getcwd(cwd_after, sizeof cwd_after) != nullptr);
    CHECK(std::string(cwd_after) == cwd_before);
    CHECK(::umask(umask_before) == umask_before);
    cpu_set_t after;
    REQUIRE(::sched_getaffinity(0, sizeof after, &after) == 0);
    CHECK(CPU_EQUAL(&after, &allowed));
}

TEST_CASE("spawn: uid, gid and groups change in the child only, not in any thread of the parent") {
    if (::geteuid() != 0) return;  // only root may switch users
    // A second thread of the parent, alive across the spawn: the child's set*id calls must
    // not reach it (glibc's wrappers would signal every thread of the process they run in).
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    pid_t tid = 0;
    std::thread other([&] {
        std::unique_lock lock(m);
        tid = static_cast<pid_t>(::syscall(SYS_gettid));
        cv.notify_all();
        cv.wait(lock, [&] { return done; });
    });
    {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return tid != 0; });
    }
    SpawnSpec spec;
    spec.uid = 65534;
    spec.gid = 65534;
    spec.groups = {65534};
    std::string text = child_status(spec, "^(Uid|Gid|Groups)");
    CHECK(text ==
          "Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n"
          "Groups:\t65534 \n");
    std::string own = slurp("/proc/self/task/" + std::to_string(tid) + "/status");
    CHECK(own.find("\nUid:\t0\t0\t0\t0\n") != std::string::npos);
    CHECK(own.find("\nGid:\t0\t0\t0\t0\n") != std::string::npos);
    CHECK(::getuid() == 0);
    CHECK(::geteuid() == 0);
    {
        std::lock_guard lock(m);
        done = true;
    }
    cv.notify_all();
    other.join();
}

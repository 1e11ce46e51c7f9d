// check_runtime: what `check`, `run` and a reload find on the machine, each at its position.
#include "daemon/process/config_check.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

using namespace clusterd;

namespace {

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char tmpl[] = "/tmp/clusterd-check-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

std::vector<std::string> problems(const std::string& text) {
    Config c = load_config_string(text, "c.yaml");
    std::vector<std::string> out;
    for (const auto& d : check_runtime(c, "/bin/true", {"PATH=/usr/bin:/bin"}))
        out.push_back(d.to_string());
    return out;
}

}  // namespace

TEST_CASE("append_problem: a directory, a missing directory, a file where a directory is") {
    TempDir dir;
    std::string d = dir.path.string();
    CHECK(append_problem(d, false) == d + " is a directory");
    CHECK(append_problem(d + "/new.log", false).empty());
    CHECK(append_problem(d + "/a/b/new.log", false) ==
          "directory " + d + "/a/b of " + d + "/a/b/new.log: No such file or directory");
    // spdlog creates a log file's missing parents: only the nearest existing one matters.
    CHECK(append_problem(d + "/a/b/new.log", true).empty());
    std::ofstream(d + "/file") << "x";
    CHECK(append_problem(d + "/file", false).empty());
    CHECK(append_problem(d + "/file/x.log", true) ==
          "cannot use " + d + "/file/x.log: Not a directory");
    // Nothing was created by asking.
    CHECK_FALSE(std::filesystem::exists(d + "/a"));
    CHECK_FALSE(std::filesystem::exists(d + "/new.log"));
}

TEST_CASE("check_runtime: every problem of every program, at the value's position") {
    auto found = problems(R"(daemon:
  control_group: clusterd-no-such-group
programs:
  a:
    user: clusterd-no-such-user
    output: /proc/self
  b:
    command: [clusterd-no-such-command]
    cwd: /etc/passwd
)");
    REQUIRE(found.size() == 5);
    CHECK(found[0] ==
          R"(c.yaml:2:18: daemon.control_group: unknown group "clusterd-no-such-group")");
    CHECK(found[1] == R"(c.yaml:5:11: programs.a.user: unknown user "clusterd-no-such-user")");
    CHECK(found[2] == "c.yaml:6:13: programs.a.output: /proc/self is a directory");
    CHECK(
        found[3] ==
        R"(c.yaml:8:15: programs.b.command[0]: executable "clusterd-no-such-command" not found in PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)");
    CHECK(found[4] == "c.yaml:9:10: programs.b.cwd: /etc/passwd is not a directory");
}

TEST_CASE("check_runtime: a config that can run has no problems") {
    CHECK(problems("programs:\n  web:\n    command: [sh, -c, 'exit 0']\n    cwd: /tmp\n").empty());
}

TEST_CASE("check_runtime: a control path whose notify sockets cannot be made is refused") {
    TempDir dir;
    // dir is mode 0700: as root the sockets would go to /run/clusterd; open it to all.
    ::chmod(dir.path.c_str(), 0755);
    auto with_control = [](const std::string& control) {
        return "daemon:\n  control: " + control + "\nprograms:\n  web:\n    cores: 1\n";
    };
    std::string control = dir.path.string() + "/c.sock";
    CHECK(notify_dir_for(control) == dir.path.string() + "/c.notify");
    CHECK(problems(with_control(control)).empty());

    std::string long_control = dir.path.string() + "/" + std::string(70, 'y') + ".sock";
    auto found = problems(with_control(long_control));
    REQUIRE(found.size() == 1);
    CHECK(
        found[0].starts_with("c.yaml:2:12: daemon.control: too long for the workers' notify "
                             "sockets: "));
    CHECK(
        found[0].ends_with("a socket path has at most 107: choose a shorter daemon.control "
                           "path"));

    std::ofstream(dir.path / "c.notify") << "a file\n";
    found = problems(with_control(control));
    REQUIRE(found.size() == 1);
    CHECK(
        found[0].ends_with("c.notify (for the workers' notify sockets) is not a directory: "
                           "remove it"));
    std::filesystem::remove(dir.path / "c.notify");

    if (::geteuid() == 0) {
        std::filesystem::create_directory(dir.path / "c.notify");
        REQUIRE(::chown((dir.path / "c.notify").c_str(), 65534, 65534) == 0);
        found = problems(with_control(control));
        REQUIRE(found.size() == 1);
        CHECK(found[0].ends_with("is owned by uid 65534, not clusterd's uid 0: remove it"));
    }
}

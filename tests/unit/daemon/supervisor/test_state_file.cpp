#include "daemon/supervisor/state_file.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;
using clusterd::DaemonState;
using clusterd::load_state;
using clusterd::save_state;
using clusterd::state_file_path;

namespace {

struct TempDir {
    TempDir() {
        char tmpl[] = "/tmp/clusterd-state-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
    std::string path;
};

void write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
}

}  // namespace

TEST_CASE("each config file has its own state file, named after it") {
    TempDir t;
    std::string a = state_file_path("/var/lib/clusterd", "/etc/clusterd/a.yaml");
    std::string b = state_file_path("/var/lib/clusterd", "/srv/a.yaml");
    CHECK(a.starts_with("/var/lib/clusterd/state-a.yaml-"));
    CHECK(a.ends_with(".json"));
    CHECK(a != b);
    CHECK(a == state_file_path("/var/lib/clusterd", "/etc/clusterd/a.yaml"));
    CHECK(state_file_path("/d", "<built-in>") == "/d/state-builtin.json");

    // A relative path and a symlink name the same config as its canonical path.
    write(t.path + "/real.yaml", "");
    fs::create_symlink(t.path + "/real.yaml", t.path + "/link.yaml");
    CHECK(state_file_path("/d", t.path + "/link.yaml") ==
          state_file_path("/d", t.path + "/real.yaml"));
    std::string cwd = fs::current_path();
    fs::current_path(t.path);
    CHECK(state_file_path("/d", "real.yaml") == state_file_path("/d", t.path + "/real.yaml"));
    fs::current_path(cwd);

    // Odd characters in the file name stay out of the state file's name.
    CHECK(state_file_path("/d", "/x/we ird$.yaml").starts_with("/d/state-we_ird_.yaml-"));
}

TEST_CASE("a saved state reads back with the cores it overrode, in a created directory") {
    TempDir t;
    std::string file = state_file_path(t.path + "/deep/state", "/etc/clusterd/clusterd.yaml");
    DaemonState s;
    s.config = "/etc/clusterd/clusterd.yaml";
    s.scale["web"] = {3, "auto"};
    s.scale["api"] = {5, "2"};
    REQUIRE(save_state(file, s) == "");
    CHECK_FALSE(fs::exists(file + ".new"));
    std::vector<std::string> errors;
    DaemonState back = load_state(file, errors);
    CHECK(errors.empty());
    CHECK(back.config == s.config);
    REQUIRE(back.scale.size() == 2);
    CHECK(back.scale["web"].workers == 3);
    CHECK(back.scale["web"].cores == "auto");
    CHECK(back.scale["api"].workers == 5);
    CHECK(back.scale["api"].cores == "2");
}

TEST_CASE("a missing file is an empty state, without an error") {
    TempDir t;
    std::vector<std::string> errors;
    CHECK(load_state(t.path + "/none.json", errors).scale.empty());
    CHECK(errors.empty());
}

TEST_CASE("a state file from before the cores were kept still reads") {
    TempDir t;
    write(t.path + "/state.json", R"({"scale": {"web": 3}})");
    std::vector<std::string> errors;
    DaemonState s = load_state(t.path + "/state.json", errors);
    CHECK(errors.empty());
    REQUIRE(s.scale.count("web") == 1);
    CHECK(s.scale["web"].workers == 3);
    CHECK(s.scale["web"].cores == "");
}

TEST_CASE("saved counts outside 1..4096 are left out, each with an error") {
    TempDir t;
    write(t.path + "/s.json", R"({"scale": {"a": {"workers": 400000, "cores": "2"},
                                            "b": 0, "c": "7", "d": {"workers": 4, "cores": "2"}}})");
    std::vector<std::string> errors;
    DaemonState s = load_state(t.path + "/s.json", errors);
    CHECK(s.scale.size() == 1);
    CHECK(s.scale.count("d") == 1);
    REQUIRE(errors.size() == 3);
    CHECK(errors[0].find("a: the saved worker count 400000") != std::string::npos);
}

TEST_CASE("a malformed file is an empty state and one error naming it") {
    TempDir t;
    write(t.path + "/s.json", "{\"scale\": ");
    std::vector<std::string> errors;
    CHECK(load_state(t.path + "/s.json", errors).scale.empty());
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].starts_with(t.path + "/s.json: "));
}

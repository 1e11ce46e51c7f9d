#include "common/paths.hpp"

#include <doctest/doctest.h>

#include <map>
#include <string>

using clusterd::default_paths;

namespace {

// An environment lookup over a fixed map.
auto env(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) -> const char* {
        auto it = vars.find(name);
        return it == vars.end() ? nullptr : it->second.c_str();
    };
}

}  // namespace

TEST_CASE("root keeps the system paths whatever the environment says") {
    auto p = default_paths(0, env({{"XDG_RUNTIME_DIR", "/run/user/0"}, {"HOME", "/root"}}));
    CHECK(p.control == "/run/clusterd/control.sock");
    CHECK(p.state_dir == "/var/lib/clusterd");
}

TEST_CASE("another user gets the XDG runtime and state directories") {
    auto p = default_paths(1000, env({{"XDG_RUNTIME_DIR", "/run/user/1000"},
                                      {"XDG_STATE_HOME", "/home/ann/state"},
                                      {"HOME", "/home/ann"}}));
    CHECK(p.control == "/run/user/1000/clusterd/control.sock");
    CHECK(p.state_dir == "/home/ann/state/clusterd");
}

TEST_CASE("without XDG variables: a per-user /tmp directory and ~/.local/state") {
    auto p = default_paths(1000, env({{"HOME", "/home/ann"}}));
    CHECK(p.control == "/tmp/clusterd-1000/control.sock");
    CHECK(p.state_dir == "/home/ann/.local/state/clusterd");
}

TEST_CASE("relative XDG values are ignored, as the spec says") {
    auto p = default_paths(
        1000,
        env({{"XDG_RUNTIME_DIR", "run"}, {"XDG_STATE_HOME", "state"}, {"HOME", "/home/ann"}}));
    CHECK(p.control == "/tmp/clusterd-1000/control.sock");
    CHECK(p.state_dir == "/home/ann/.local/state/clusterd");
}

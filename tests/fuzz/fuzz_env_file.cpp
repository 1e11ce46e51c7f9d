// Fuzz target: an `env_file:` file (common/env_file.cpp), which whoever may write it gives
// to every load of the config. Whatever parses must be within the limits, hold only valid,
// unreserved names once each, and read back the same when written out double-quoted.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "common/config.hpp"
#include "common/env_file.hpp"
#include "common/limits.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace clusterd;
    std::string text(reinterpret_cast<const char*>(data), size);
    std::vector<std::pair<std::string, std::string>> vars;
    try {
        vars = parse_env_file(text, "fuzz.env");
    } catch (const ConfigError& e) {
        if (e.diagnostics().empty()) __builtin_trap();
        for (const Diagnostic& d : e.diagnostics())
            if (d.file != "fuzz.env" || d.message.empty() || d.line < 0 || d.column < 0)
                __builtin_trap();
        return 0;
    }
    if (vars.size() > limits::kMaxEnvFileVars) __builtin_trap();
    std::set<std::string> names;
    std::string again;
    for (const auto& [name, value] : vars) {
        if (!is_env_name(name) || is_reserved_env(name) || !names.insert(name).second)
            __builtin_trap();
        again += name + "=\"";
        for (char c : value) {
            if (c == '"' || c == '\\' || c == '`' || c == '$') again += '\\';
            again += c;
        }
        again += "\"\n";
    }
    if (again.size() <= limits::kMaxEnvFileBytes && parse_env_file(again, "again.env") != vars)
        __builtin_trap();
    return 0;
}

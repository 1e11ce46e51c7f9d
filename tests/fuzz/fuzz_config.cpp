// Fuzz target: a config file as an operator (or anyone who can write it) gives it to
// `clusterd check`, `run` or a reload. The bytes go through the file path (a memfd, read by
// read_config_file) and the string path; both must agree, and whatever loads must be within
// the documented limits.
// `include:` and `env_file:` are read from an empty snapshot (ConfigFiles), never the disk:
// a pattern matches nothing, a non-optional env file cannot be read.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "common/config.hpp"
#include "common/limits.hpp"

namespace {

using namespace clusterd;

void check_limits(const Config& c) {
    if (c.programs.empty()) __builtin_trap();
    auto duration_ok = [](Duration d) { return d.count() >= 0 && d <= limits::kMaxDuration; };
    if (!duration_ok(c.daemon.shutdown_timeout)) __builtin_trap();
    for (const ProgramConfig& p : c.programs) {
        if (p.workers < 1 || p.workers > limits::kMaxWorkers) __builtin_trap();
        if (p.max_surge < 1 || p.max_surge > limits::kMaxWorkers) __builtin_trap();
        if (p.listen.size() > static_cast<std::size_t>(limits::kMaxListeners)) __builtin_trap();
        for (Duration d : {p.start_time, p.start_timeout, p.watchdog, p.min_uptime, p.abort_timeout,
                           p.stop_timeout, p.backoff.initial, p.backoff.max})
            if (!duration_ok(d)) __builtin_trap();
        if (p.backoff.max < limits::kMinBackoffMax || p.backoff.max < p.backoff.initial)
            __builtin_trap();
        for (const RLimit& r : p.rlimits)
            if (r.soft > r.hard) __builtin_trap();
        if (!duration_ok(p.max_age) || !duration_ok(p.max_age_jitter)) __builtin_trap();
        if (p.max_age.count() > 0 && p.max_age_jitter >= p.max_age) __builtin_trap();
        if (p.hooks.size() > limits::kMaxHooks) __builtin_trap();
        for (const HookConfig& h : p.hooks)
            if (h.on.empty() || h.command.empty() || h.timeout.count() <= 0 ||
                h.timeout > limits::kMaxHookTimeout)
                __builtin_trap();
    }
}

/// The messages of a load, with the file name (which the two paths give apart, and which a
/// message may repeat: "first at FILE:3:5") replaced by "<file>".
std::string outcome(const std::string& source, const std::function<Config()>& load) {
    try {
        Config c = load();
        check_limits(c);
        return "ok " + std::to_string(c.programs.size());
    } catch (const ConfigError& e) {
        if (e.diagnostics().empty()) __builtin_trap();
        std::string text;
        for (const Diagnostic& d : e.diagnostics()) {
            if (d.message.empty() || d.line < 0 || d.column < 0) __builtin_trap();
            std::string message = d.message;
            for (auto at = message.find(source); at != std::string::npos;
                 at = message.find(source, at + 6))
                message.replace(at, source.size(), "<file>");
            text += std::to_string(d.line) + ":" + std::to_string(d.column) + " " + message + "\n";
        }
        return text;
    }
}

/// Not valid UTF-8, so no accepted input (nor any message about one) contains it.
const std::string kSource = "fuzz\xff.yaml";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    static const ConfigFiles kNoFiles;
    std::string from_string =
        outcome(kSource, [&] { return load_config_string(text, kSource, &kNoFiles); });

    static int fd = ::memfd_create("fuzz.yaml", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size))
        __builtin_trap();
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    std::string from_file =
        outcome(path, [&] { return load_config_string(read_config_file(path), path, &kNoFiles); });
    // A message may quote the input: an input that spells a file name cannot be compared.
    if (text.find(path) == std::string::npos && from_file != from_string) __builtin_trap();
    return 0;
}

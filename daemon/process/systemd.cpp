#include "daemon/process/systemd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <string_view>
#include <vector>

namespace clusterd {

namespace {

long env_number(const char* name) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return -1;
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    return *end == '\0' ? n : -1;
}

}  // namespace

std::map<std::string, int> take_activated_sockets() {
    std::map<std::string, int> out;
    long pid = env_number("LISTEN_PID");
    long n = env_number("LISTEN_FDS");
    if (pid == static_cast<long>(::getpid()) && n > 0) {
        std::vector<std::string> names;
        const char* env = std::getenv("LISTEN_FDNAMES");
        for (std::string_view rest = env ? env : "";;) {
            auto colon = rest.find(':');
            names.emplace_back(rest.substr(0, colon));
            if (colon == std::string_view::npos) break;
            rest.remove_prefix(colon + 1);
        }
        for (long i = 0; i < n; ++i) {
            std::string name = static_cast<std::size_t>(i) < names.size() ? names[i] : "";
            if (name.empty()) name = "unknown";
            int fd = 3 + static_cast<int>(i);
            ::fcntl(fd, F_SETFD, FD_CLOEXEC);
            out.emplace(name, fd);  // a repeated name keeps its first fd
        }
    }
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
    return out;
}

std::chrono::microseconds systemd_watchdog_interval() {
    long usec = env_number("WATCHDOG_USEC");
    long pid = env_number("WATCHDOG_PID");
    if (usec <= 0 || (pid > 0 && pid != static_cast<long>(::getpid())))
        return std::chrono::microseconds(0);
    return std::chrono::microseconds(usec);
}

std::string monotonic_usec_field() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    long long usec = static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
    return "MONOTONIC_USEC=" + std::to_string(usec);
}

}  // namespace clusterd

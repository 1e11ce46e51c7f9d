#include "daemon/process/proc_stats.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <string>

namespace clusterd {

namespace {

/// The whole of a small /proc file, or nullopt when it cannot be opened or read.
std::optional<std::string> read_small(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string out;
    char buf[1024];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

/// The next space-separated field of `text`, consumed.
std::string_view next_field(std::string_view& text) {
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    auto end = text.find_first_of(" \n");
    std::string_view field = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end);
    return field;
}

bool to_u64(std::string_view text, std::uint64_t& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return !text.empty() && ec == std::errc{} && end == text.data() + text.size();
}

}  // namespace

std::optional<ProcStats> parse_proc_stats(std::string_view stat, std::string_view statm,
                                          long page_size, long clock_ticks) {
    if (page_size <= 0 || clock_ticks <= 0) return std::nullopt;
    // "pid (comm) state ppid ...": comm may hold spaces and ')', so cut at the last ')'.
    auto close = stat.rfind(')');
    if (close == std::string_view::npos) return std::nullopt;
    std::string_view rest = stat.substr(close + 1);
    ProcStats out;
    // Fields after comm, 1-based from state (field 3 of proc(5)): utime 14, stime 15,
    // starttime 22.
    std::uint64_t utime = 0, stime = 0, start = 0;
    for (int field = 3; field <= 22; ++field) {
        std::string_view f = next_field(rest);
        if (f.empty()) return std::nullopt;
        if (field == 3) out.state = f.front();
        if (field == 14 && !to_u64(f, utime)) return std::nullopt;
        if (field == 15 && !to_u64(f, stime)) return std::nullopt;
        if (field == 22 && !to_u64(f, start)) return std::nullopt;
    }
    auto ticks = static_cast<double>(clock_ticks);
    out.cpu_seconds = static_cast<double>(utime + stime) / ticks;
    out.start_time = static_cast<double>(start) / ticks;

    std::uint64_t size_pages = 0, resident_pages = 0;
    if (!to_u64(next_field(statm), size_pages) || !to_u64(next_field(statm), resident_pages))
        return std::nullopt;
    out.rss_bytes = resident_pages * static_cast<std::uint64_t>(page_size);
    return out;
}

std::optional<ProcStats> read_proc_stats(pid_t pid) {
    if (pid <= 0) return std::nullopt;
    std::string dir = "/proc/" + std::to_string(pid);
    auto stat = read_small(dir + "/stat");
    auto statm = read_small(dir + "/statm");
    if (!stat || !statm) return std::nullopt;
    static const long page_size = ::sysconf(_SC_PAGESIZE);
    static const long clock_ticks = ::sysconf(_SC_CLK_TCK);
    auto stats = parse_proc_stats(*stat, *statm, page_size, clock_ticks);
    // A zombie has no memory left to recycle and no CPU to use: it is gone for our purposes.
    if (!stats || stats->state == 'Z' || stats->state == 'X') return std::nullopt;
    return stats;
}

double seconds_since_boot() {
    timespec ts{};
    ::clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::optional<std::size_t> free_fds() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return std::nullopt;
    DIR* dir = ::opendir("/proc/self/fd");  // itself one of the entries counted
    if (dir == nullptr) return std::nullopt;
    std::size_t open = 0;
    while (const dirent* e = ::readdir(dir))
        if (e->d_name[0] != '.') ++open;
    ::closedir(dir);
    if (limit.rlim_cur == RLIM_INFINITY) return static_cast<std::size_t>(-1);
    auto soft = static_cast<std::size_t>(limit.rlim_cur);
    return soft > open ? soft - open : 0;
}

}  // namespace clusterd

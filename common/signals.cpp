#include "common/signals.hpp"

#include <csignal>

namespace clusterd {

namespace {

struct SignalEntry {
    std::string_view name;  // without "SIG"
    int number;
};

// The standard Linux signals (x86/arm numbering), names as kill -l prints them. The aliases
// after the first entry of a number are only accepted when parsing.
constexpr SignalEntry kSignals[] = {
    {"HUP", 1},   {"INT", 2},     {"QUIT", 3},  {"ILL", 4},     {"TRAP", 5},  {"ABRT", 6},
    {"BUS", 7},   {"FPE", 8},     {"KILL", 9},  {"USR1", 10},   {"SEGV", 11}, {"USR2", 12},
    {"PIPE", 13}, {"ALRM", 14},   {"TERM", 15}, {"STKFLT", 16}, {"CHLD", 17}, {"CONT", 18},
    {"STOP", 19}, {"TSTP", 20},   {"TTIN", 21}, {"TTOU", 22},   {"URG", 23},  {"XCPU", 24},
    {"XFSZ", 25}, {"VTALRM", 26}, {"PROF", 27}, {"WINCH", 28},  {"IO", 29},   {"PWR", 30},
    {"SYS", 31},  {"IOT", 6},     {"CLD", 17},  {"POLL", 29},
};

constexpr int kMaxSignal = 64;

std::optional<int> parse_number(std::string_view text) {
    if (text.empty() || text.size() > 3) return std::nullopt;
    int n = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + (c - '0');
    }
    return n;
}

char upper(char c) {
    return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (upper(a[i]) != upper(b[i])) return false;
    }
    return true;
}

/// "RTMIN", "RTMIN+n", "RTMAX", "RTMAX-n"; glibc reserves the first few real-time signals,
/// so their numbers are only known at run time.
std::optional<int> parse_realtime(std::string_view text) {
    if (text.size() < 5) return std::nullopt;
    bool from_min = equal_ignoring_case(text.substr(0, 5), "RTMIN");
    if (!from_min && !equal_ignoring_case(text.substr(0, 5), "RTMAX")) return std::nullopt;
    int sig = from_min ? SIGRTMIN : SIGRTMAX;
    std::string_view rest = text.substr(5);
    if (!rest.empty()) {
        if (rest.front() != (from_min ? '+' : '-')) return std::nullopt;
        auto offset = parse_number(rest.substr(1));
        if (!offset) return std::nullopt;
        sig += from_min ? *offset : -*offset;
    }
    if (sig < SIGRTMIN || sig > SIGRTMAX) return std::nullopt;
    return sig;
}

}  // namespace

std::optional<int> parse_signal(std::string_view text) {
    if (auto n = parse_number(text)) {
        if (*n >= 1 && *n <= kMaxSignal) return n;
        return std::nullopt;
    }
    if (text.size() > 3 && equal_ignoring_case(text.substr(0, 3), "SIG")) text.remove_prefix(3);
    for (const auto& entry : kSignals) {
        if (equal_ignoring_case(text, entry.name)) return entry.number;
    }
    return parse_realtime(text);
}

std::string signal_name(int sig) {
    for (const auto& entry : kSignals) {
        if (entry.number == sig) return "SIG" + std::string(entry.name);
    }
    int rtmin = SIGRTMIN;
    int rtmax = SIGRTMAX;
    if (sig >= rtmin && sig <= rtmax) {
        // As kill -l names them: the lower half from RTMIN up, the upper half from RTMAX down.
        if (sig == rtmin) return "SIGRTMIN";
        if (sig == rtmax) return "SIGRTMAX";
        if (sig - rtmin <= (rtmax - rtmin) / 2) return "SIGRTMIN+" + std::to_string(sig - rtmin);
        return "SIGRTMAX-" + std::to_string(rtmax - sig);
    }
    return "SIG" + std::to_string(sig);
}

}  // namespace clusterd

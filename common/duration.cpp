#include "common/duration.hpp"

#include <cstdio>

namespace clusterd {

namespace {

/// Reads the leading decimal digits of `text` into `value`; false on none or overflow.
bool take_number(std::string_view& text, std::uint64_t& value) {
    std::size_t i = 0;
    value = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        if (__builtin_mul_overflow(value, 10u, &value) ||
            __builtin_add_overflow(value, static_cast<unsigned>(text[i] - '0'), &value)) {
            return false;
        }
        ++i;
    }
    text.remove_prefix(i);
    return i > 0;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    if (text == "0") return std::chrono::milliseconds{0};
    if (text.empty()) return std::nullopt;
    std::int64_t total = 0;
    while (!text.empty()) {
        std::uint64_t n = 0;
        if (!take_number(text, n)) return std::nullopt;
        std::int64_t unit_ms = 0;
        // "ms" before "m": the longest unit that matches wins.
        if (text.starts_with("ms")) {
            unit_ms = 1;
            text.remove_prefix(2);
        } else if (text.starts_with("s")) {
            unit_ms = 1000;
            text.remove_prefix(1);
        } else if (text.starts_with("m")) {
            unit_ms = 60 * 1000;
            text.remove_prefix(1);
        } else if (text.starts_with("h")) {
            unit_ms = 60 * 60 * 1000;
            text.remove_prefix(1);
        } else {
            return std::nullopt;
        }
        std::int64_t part = 0;
        if (n > static_cast<std::uint64_t>(INT64_MAX) ||
            __builtin_mul_overflow(static_cast<std::int64_t>(n), unit_ms, &part) ||
            __builtin_add_overflow(total, part, &total)) {
            return std::nullopt;
        }
    }
    return std::chrono::milliseconds{total};
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::uint64_t n = 0;
    if (!take_number(text, n)) return std::nullopt;
    unsigned shift = 0;
    if (!text.empty()) {
        switch (text.front()) {
            case 'K':
            case 'k':
                shift = 10;
                break;
            case 'M':
            case 'm':
                shift = 20;
                break;
            case 'G':
            case 'g':
                shift = 30;
                break;
            case 'T':
            case 't':
                shift = 40;
                break;
            default:
                break;
        }
        if (shift != 0) {
            text.remove_prefix(1);
            if (text == "iB") text.remove_prefix(2);
        }
        if (text == "B") text.remove_prefix(1);
        if (!text.empty()) return std::nullopt;
    }
    if (shift != 0 && n > (UINT64_MAX >> shift)) return std::nullopt;
    return n << shift;
}

std::string format_duration(std::chrono::milliseconds d) {
    std::int64_t count = d.count();
    // The magnitude as unsigned, so that INT64_MIN does not overflow.
    std::uint64_t ms =
        count < 0 ? 0 - static_cast<std::uint64_t>(count) : static_cast<std::uint64_t>(count);
    std::string out = count < 0 ? "-" : "";
    if (ms == 0) return "0s";
    if (ms < 1000) return out + std::to_string(ms) + "ms";
    std::uint64_t hours = ms / 3'600'000;
    std::uint64_t minutes = ms / 60'000 % 60;
    std::uint64_t seconds = ms / 1000 % 60;
    std::uint64_t millis = ms % 1000;
    if (hours > 0) out += std::to_string(hours) + "h";
    if (minutes > 0) out += std::to_string(minutes) + "m";
    if (seconds > 0 || millis > 0) {
        out += std::to_string(seconds);
        if (millis > 0) {
            char frac[8];
            std::snprintf(frac, sizeof frac, ".%03u", static_cast<unsigned>(millis));
            std::string f = frac;
            while (f.back() == '0') f.pop_back();
            out += f;
        }
        out += "s";
    }
    return out;
}

}  // namespace clusterd

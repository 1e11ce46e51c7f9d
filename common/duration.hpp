// Durations ("250ms", "10s", "1m", "1h30m") and sizes ("512M", "2G") as written in configs.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace clusterd {

/// Parse a duration: one or more <integer><unit> groups, unit one of ms s m h; a bare "0"
/// is zero. Returns nullopt on anything else (negative, overflow, unknown unit, empty).
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

/// Parse a size in bytes: <integer>[K|M|G|T] (powers of 1024, optional trailing "B" or
/// "iB"), or a bare integer. Returns nullopt on anything else.
std::optional<std::uint64_t> parse_size(std::string_view text);

/// Human form of a duration for logs: "0s", "250ms", "1.5s", "2m3s", "1h2m".
std::string format_duration(std::chrono::milliseconds d);

}  // namespace clusterd

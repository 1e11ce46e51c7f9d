// Reading `rlimits:`: a map from resource name to a limit, e.g.
//   rlimits: {nofile: 65536, core: unlimited, as: 2G, nproc: {soft: 512, hard: 1024}}
// A bare value sets soft = hard. Byte limits take sizes (512M, 2G); the others integers.
#include <sys/resource.h>

#include <array>
#include <charconv>

#include "common/config_reader.hpp"
#include "common/duration.hpp"
#include "common/limits.hpp"

namespace clusterd::detail {

namespace {

struct Resource {
    std::string_view name;
    int resource;
    bool bytes;  // takes a size like 512M
    /// The smallest soft limit a worker can start under: below it execve or the first
    /// allocation fails, or the kernel kills the worker at once (cpu: 0 s).
    std::uint64_t min;
    std::string_view min_text;
};

constexpr std::array<Resource, 9> kResources = {{
    {"nofile", RLIMIT_NOFILE, false, limits::kMinNofile, "16"},
    {"core", RLIMIT_CORE, true, 0, "0"},
    {"nproc", RLIMIT_NPROC, false, 1, "1"},
    {"memlock", RLIMIT_MEMLOCK, true, 0, "0"},
    {"stack", RLIMIT_STACK, true, std::uint64_t{64} << 10, "64K"},
    {"as", RLIMIT_AS, true, std::uint64_t{64} << 20, "64M"},
    {"fsize", RLIMIT_FSIZE, true, 0, "0"},
    {"cpu", RLIMIT_CPU, false, 1, "1"},
    {"data", RLIMIT_DATA, true, std::uint64_t{16} << 20, "16M"},
}};

// Anything from 2^63 up would read as RLIM_INFINITY or wrap: write "unlimited" instead.
constexpr std::uint64_t kMaxLimit = (std::uint64_t{1} << 63) - 1;

std::optional<std::uint64_t> read_value(ConfigReader& r, const Item& item, const Resource& res) {
    if (item.node.IsScalar()) {
        const std::string& text = item.node.Scalar();
        if (text == "unlimited" || text == "infinity") return RLimit::kUnlimited;
        std::optional<std::uint64_t> value;
        if (res.bytes) {
            value = parse_size(text);
        } else {
            std::uint64_t n = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
            if (!text.empty() && ec == std::errc{} && end == text.data() + text.size()) value = n;
        }
        if (value && *value <= kMaxLimit && *value < res.min) {
            r.expected(item, "at least " + std::string(res.min_text) + " (" +
                                 std::string(res.name) + " below that stops every worker)");
            return std::nullopt;
        }
        if (value && *value <= kMaxLimit) return value;
    }
    r.expected(item, res.bytes ? R"(a size like 65536, 512K, 64M or 2G, or "unlimited")"
                               : R"(a non-negative integer or "unlimited")");
    return std::nullopt;
}

std::string show(std::uint64_t v) {
    return v == RLimit::kUnlimited ? "unlimited" : std::to_string(v);
}

}  // namespace

void read_rlimits(ConfigReader& r, const Item& item, ProgramConfig& p) {
    r.fields(item, {"nofile", "core", "nproc", "memlock", "stack", "as", "fsize", "cpu", "data"},
             [&](const std::string& key, const Item& v) {
                 const Resource* res = nullptr;
                 for (const auto& candidate : kResources)
                     if (candidate.name == key) res = &candidate;
                 RLimit limit{key, res->resource, 0, 0};
                 if (!v.node.IsMap()) {
                     auto value = read_value(r, v, *res);
                     if (!value) return;
                     limit.soft = limit.hard = *value;
                     p.rlimits.push_back(std::move(limit));
                     return;
                 }
                 std::optional<std::uint64_t> soft, hard;
                 std::optional<Item> soft_item;
                 r.fields(v, {"soft", "hard"}, [&](const std::string& k, const Item& value) {
                     if (k == "soft") {
                         soft = read_value(r, value, *res);
                         soft_item = value;
                     } else {
                         hard = read_value(r, value, *res);
                     }
                 });
                 if (!v.node["soft"] || !v.node["hard"]) {
                     r.error(v.mark, v.path, R"(expected both "soft" and "hard")");
                     return;
                 }
                 if (!soft || !hard) return;
                 if (*soft > *hard) {
                     r.error(soft_item->mark, soft_item->path,
                             "the soft limit (" + show(*soft) +
                                 ") must not exceed the hard limit (" + show(*hard) + ")");
                     return;
                 }
                 limit.soft = *soft;
                 limit.hard = *hard;
                 p.rlimits.push_back(std::move(limit));
             });
}

}  // namespace clusterd::detail

// Fuzz target: a request target as any client sends it, reduced to a path under the document
// root. Whatever the target, an accepted path stays beneath the root: relative, no "." or
// ".." segment, no empty segment, no NUL; request_path() only ever cuts the target.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "worker/document_root.hpp"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view target(reinterpret_cast<const char*>(data), size);

    std::string_view path = clusterd::worker::request_path(target);
    bool inside = path.data() >= target.data() && path.data() + path.size() <= target.data() + size;
    check(inside || path == "/");
    check(path.find_first_of("?#") == std::string_view::npos);

    clusterd::worker::RelativePath rel = clusterd::worker::target_to_relative(target);
    check(rel.status == 0 || rel.status == 400 || rel.status == 403);
    if (rel.status != 0) {
        check(rel.path.empty());
        return 0;
    }
    std::string_view p = rel.path;
    check(p.find('\0') == std::string_view::npos);
    check(p.empty() || p.front() != '/');
    check(p.empty() || p.back() != '/');
    while (!p.empty()) {
        auto slash = p.find('/');
        std::string_view segment = p.substr(0, slash);
        check(!segment.empty() && segment != "." && segment != "..");
        p = slash == std::string_view::npos ? std::string_view{} : p.substr(slash + 1);
    }
    return 0;
}

#include "worker/document_root.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <system_error>

namespace clusterd::worker {

namespace {

// O_NONBLOCK so that a FIFO under the root cannot block the loop in open().
constexpr int open_flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int status_for(int error) {
    switch (error) {
        case EXDEV:  // RESOLVE_BENEATH: the path left the root
        case ELOOP:
        case EACCES:
        case EPERM:
            return 403;
        case EMFILE:
        case ENFILE:
        case ENOMEM:
            return 500;
        default:
            return 404;
    }
}

std::string last_component(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::string_view request_path(std::string_view target) {
    target = target.substr(0, target.find_first_of("?#"));
    for (std::string_view scheme : {"http://", "https://"}) {
        if (target.size() < scheme.size()) continue;
        bool match = true;
        for (std::size_t i = 0; i < scheme.size() && match; ++i) {
            char c = target[i];
            match = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == scheme[i];
        }
        if (!match) continue;
        auto slash = target.find('/', scheme.size());
        return slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    return target;
}

RelativePath target_to_relative(std::string_view target) {
    RelativePath out;
    target = request_path(target);
    if (target.empty() || target[0] != '/') return {400, {}, false};

    std::string decoded;
    decoded.reserve(target.size());
    for (std::size_t i = 0; i < target.size(); ++i) {
        char c = target[i];
        if (c == '%') {
            int hi = i + 2 < target.size() ? hex_value(target[i + 1]) : -1;
            int lo = hi >= 0 ? hex_value(target[i + 2]) : -1;
            if (lo < 0) return {400, {}, false};
            c = static_cast<char>(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') return {400, {}, false};
        decoded += c;
    }

    std::string_view rest(decoded);
    rest.remove_prefix(1);
    if (rest.starts_with('/')) return {403, {}, false};  // "//etc" or "/%2Fetc": absolute
    out.directory = decoded.ends_with('/');
    while (!rest.empty()) {
        auto slash = rest.find('/');
        std::string_view segment = rest.substr(0, slash);
        rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
        if (segment.empty() || segment == ".") continue;
        if (segment == "..") return {403, {}, false};
        if (!out.path.empty()) out.path += '/';
        out.path += segment;
    }
    return out;
}

DocumentRoot::DocumentRoot(const std::string& dir, Mode mode) : mode_(mode) {
    char resolved[PATH_MAX];
    if (::realpath(dir.c_str(), resolved) == nullptr) {
        throw std::system_error(errno, std::generic_category(), "realpath(\"" + dir + "\")");
    }
    canonical_ = resolved;
    dir_.reset(::open(resolved, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_) {
        throw std::system_error(errno, std::generic_category(), "open(\"" + canonical_ + "\")");
    }
    if (::faccessat(dir_.get(), ".", R_OK | X_OK, 0) < 0) {
        throw std::system_error(errno, std::generic_category(),
                                "faccessat(\"" + canonical_ + "\", R_OK|X_OK)");
    }
    if (mode_ == Mode::automatic) {
        mode_ = Mode::openat2;
        int error = 0;
        UniqueFd probe(open_beneath(".", error));
        if (!probe && (error == ENOSYS || error == EPERM)) mode_ = Mode::realpath;
    }
}

int DocumentRoot::open_beneath(const std::string& relative, int& error) const {
    int fd = -1;
    if (mode_ == Mode::openat2) {
        open_how how{};
        how.flags = open_flags;
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        fd = static_cast<int>(
            ::syscall(SYS_openat2, dir_.get(), relative.c_str(), &how, sizeof how));
    } else {
        std::string full = canonical_ + '/' + relative;
        char resolved[PATH_MAX];
        if (::realpath(full.c_str(), resolved) == nullptr) {
            error = errno;
            return -1;
        }
        std::string_view r(resolved);
        bool inside = r == canonical_ || canonical_ == "/" ||
                      (r.starts_with(canonical_) && r[canonical_.size()] == '/');
        if (!inside) {
            error = EXDEV;
            return -1;
        }
        fd = ::open(resolved, open_flags | O_NOFOLLOW);
    }
    error = fd < 0 ? errno : 0;
    return fd;
}

RootFile DocumentRoot::open(std::string_view target) const {
    RootFile out;
    RelativePath rel = target_to_relative(target);
    if (rel.status != 0) {
        out.status = rel.status;
        return out;
    }
    std::string path = rel.path.empty() ? std::string(".") : rel.path;
    int error = 0;
    UniqueFd fd(open_beneath(path, error));
    if (!fd) {
        out.status = status_for(error);
        return out;
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) {
        out.status = 500;
        return out;
    }
    if (S_ISDIR(st.st_mode)) {
        path += "/index.html";
        fd.reset(open_beneath(path, error));
        if (!fd) {
            out.status = status_for(error);
            return out;
        }
        if (::fstat(fd.get(), &st) < 0) {
            out.status = 500;
            return out;
        }
    } else if (rel.directory) {
        return out;  // "/file.txt/" names no directory
    }
    if (!S_ISREG(st.st_mode)) return out;
    out.status = 200;
    out.fd = std::move(fd);
    out.size = static_cast<std::uint64_t>(st.st_size);
    out.name = last_component(path);
    return out;
}

}  // namespace clusterd::worker

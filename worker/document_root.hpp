// Serving files from a directory without letting a request escape it.
//
// Two independent walls. First, the request target is checked as text: it is percent-decoded
// once, and a ".." segment, a path that is still absolute after its leading '/', a NUL byte
// or a malformed escape is refused before the filesystem is touched. Second, the file is
// opened relative to a descriptor of the root with openat2(RESOLVE_BENEATH), so a symlink
// (or anything else) that resolves outside the root fails in the kernel. Where openat2 is
// unavailable (old kernel, seccomp), realpath() of the result must lie under the root.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/fd.hpp"

namespace clusterd::worker {

/// A request target reduced to a path relative to the root.
struct RelativePath {
    /// 0 when usable; else the HTTP status to answer (400 malformed, 403 escape).
    int status = 0;
    /// "a/b.txt"; empty for the root itself.
    std::string path;
    /// The target ended in '/': it must name a directory.
    bool directory = false;
};

/// The path of a request target, still encoded: the query and fragment cut off, and an
/// absolute-form target ("http://host/a") reduced to its path ("/a"; "/" when it has none).
std::string_view request_path(std::string_view target);

/// Strips the query, percent-decodes and validates an origin-form target ("/a/b?q").
RelativePath target_to_relative(std::string_view target);

/// What opening a target under the root produced.
struct RootFile {
    /// 200, or 400, 403, 404 or 500.
    int status = 404;
    /// The open regular file when status is 200.
    UniqueFd fd;
    /// Its size in bytes.
    std::uint64_t size = 0;
    /// Last component of the file actually opened ("index.html" for a directory).
    std::string name;
};

/// A directory whose regular files may be served.
class DocumentRoot {
  public:
    /// How a path is confined to the root.
    enum class Mode { automatic, openat2, realpath };

    /// Opens `dir`; throws std::system_error when it is not a readable, searchable directory.
    explicit DocumentRoot(const std::string& dir, Mode mode = Mode::automatic);

    /// Opens the regular file `target` names: a directory means its index.html.
    RootFile open(std::string_view target) const;
    /// The root's canonical path.
    const std::string& path() const { return canonical_; }
    /// The confinement in use (never automatic).
    Mode mode() const { return mode_; }

  private:
    int open_beneath(const std::string& relative, int& error) const;

    UniqueFd dir_;
    std::string canonical_;
    Mode mode_;
};

}  // namespace clusterd::worker

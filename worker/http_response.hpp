// Writing HTTP/1.1 response heads by hand: the worker's responses are few and simple, and
// composing them into a reused string costs no allocation, unlike a Beast message whose
// fields are allocated one by one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace clusterd::worker {

/// The parts of a response head that vary.
struct ResponseHead {
    int status = 200;
    /// 10 or 11: the request's version, which decides the Connection header.
    unsigned version = 11;
    bool keep_alive = true;
    std::string_view content_type = "text/plain; charset=utf-8";
    std::uint64_t content_length = 0;
    /// Adds "Allow: GET, HEAD" (for 405).
    bool allow = false;
};

/// "OK", "Not Found", ...; "Unknown" for a status this worker never sends.
std::string_view reason_phrase(int status);

/// A short text body for an error status ("Not Found\n").
std::string_view error_body(int status);

/// The Content-Type for a file name, by extension; application/octet-stream by default.
std::string_view content_type_for(std::string_view name);

/// Appends the status line, headers (with `date`, an IMF-fixdate) and the blank line to `out`.
void append_head(std::string& out, const ResponseHead& head, std::string_view date);

/// Formats `unix_seconds` as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into `out`,
/// which must hold 29 characters; returns the length written.
std::size_t format_http_date(long long unix_seconds, char* out);

}  // namespace clusterd::worker

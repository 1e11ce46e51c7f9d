#include "worker/http_response.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace clusterd::worker {

namespace {

struct Extension {
    std::string_view ext;
    std::string_view type;
};

constexpr Extension content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"ico", "image/vnd.microsoft.icon"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"woff2", "font/woff2"},
};

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char c = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
        if (c != b[i]) return false;
    }
    return true;
}

}  // namespace

std::string_view reason_phrase(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 403:
            return "Forbidden";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 408:
            return "Request Timeout";
        case 413:
            return "Content Too Large";
        case 417:
            return "Expectation Failed";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        default:
            return "Unknown";
    }
}

std::string_view error_body(int status) {
    switch (status) {
        case 400:
            return "Bad Request\n";
        case 403:
            return "Forbidden\n";
        case 404:
            return "Not Found\n";
        case 405:
            return "Method Not Allowed\n";
        case 408:
            return "Request Timeout\n";
        case 413:
            return "Content Too Large\n";
        case 417:
            return "Expectation Failed\n";
        case 431:
            return "Request Header Fields Too Large\n";
        case 501:
            return "Not Implemented\n";
        default:
            return "Internal Server Error\n";
    }
}

std::string_view content_type_for(std::string_view name) {
    auto dot = name.rfind('.');
    if (dot != std::string_view::npos) {
        std::string_view ext = name.substr(dot + 1);
        for (const auto& entry : content_types) {
            if (iequals(ext, entry.ext)) return entry.type;
        }
    }
    return "application/octet-stream";
}

void append_head(std::string& out, const ResponseHead& head, std::string_view date) {
    char number[24];
    // Always 1.1, the highest version this server conforms to (RFC 9110, 6.2).
    out += "HTTP/1.1 ";
    auto end = std::to_chars(number, number + sizeof number, head.status).ptr;
    out.append(number, end);
    out += ' ';
    out += reason_phrase(head.status);
    out += "\r\nServer: clusterd-worker\r\nDate: ";
    out += date;
    out += "\r\nContent-Type: ";
    out += head.content_type;
    out += "\r\nContent-Length: ";
    end = std::to_chars(number, number + sizeof number, head.content_length).ptr;
    out.append(number, end);
    out += "\r\n";
    if (head.allow) out += "Allow: GET, HEAD\r\n";
    // HTTP/1.0 clients close unless told otherwise; 1.1 clients keep alive unless told.
    if (!head.keep_alive) out += "Connection: close\r\n";
    if (head.keep_alive && head.version == 10) out += "Connection: keep-alive\r\n";
    out += "\r\n";
}

std::size_t format_http_date(long long unix_seconds, char* out) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    // strftime's %a/%b follow the locale; IMF-fixdate needs the English names.
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char buf[64];
    int n = std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                          tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                          tm.tm_sec);
    std::size_t len = n > 29 ? 29 : static_cast<std::size_t>(n);
    std::copy(buf, buf + len, out);
    return len;
}

}  // namespace clusterd::worker

#include "worker/http_response.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace clusterd::worker;

namespace {
constexpr std::string_view date = "Sun, 06 Nov 1994 08:49:37 GMT";
}

TEST_CASE("format_http_date: IMF-fixdate in English whatever the locale") {
    char buf[32];
    std::size_t n = format_http_date(784111777, buf);
    CHECK(std::string_view(buf, n) == date);
    n = format_http_date(0, buf);
    CHECK(std::string_view(buf, n) == "Thu, 01 Jan 1970 00:00:00 GMT");
}

TEST_CASE("append_head: HTTP/1.1 keep-alive says nothing about the connection") {
    std::string out;
    append_head(out, {.status = 200, .content_length = 27}, date);
    CHECK(out ==
          "HTTP/1.1 200 OK\r\nServer: clusterd-worker\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
          "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 27\r\n\r\n");
}

TEST_CASE("append_head: Connection headers for close and HTTP/1.0 keep-alive, Allow for 405") {
    std::string out;
    append_head(out, {.status = 404, .keep_alive = false, .content_length = 10}, date);
    CHECK(out.starts_with("HTTP/1.1 404 Not Found\r\n"));
    CHECK(out.find("Connection: close\r\n") != std::string::npos);

    out.clear();
    append_head(out, {.status = 200, .version = 10, .keep_alive = true}, date);
    CHECK(out.find("Connection: keep-alive\r\n") != std::string::npos);

    out.clear();
    append_head(out, {.status = 405, .allow = true}, date);
    CHECK(out.find("Allow: GET, HEAD\r\n") != std::string::npos);
    CHECK(out.ends_with("\r\n\r\n"));
}

TEST_CASE("content_type_for: by extension, case-insensitive") {
    CHECK(content_type_for("index.html") == "text/html; charset=utf-8");
    CHECK(content_type_for("LOGO.PNG") == "image/png");
    CHECK(content_type_for("app.min.js") == "text/javascript; charset=utf-8");
    CHECK(content_type_for("README") == "application/octet-stream");
    CHECK(content_type_for("archive.tar.zst") == "application/octet-stream");
}

TEST_CASE("reason_phrase and error_body agree on the statuses the worker sends") {
    for (int status : {400, 403, 404, 405, 413, 431, 500}) {
        CAPTURE(status);
        CHECK(std::string(error_body(status)) == std::string(reason_phrase(status)) + "\n");
    }
}

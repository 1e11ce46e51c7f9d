// RequestParser: the head checks that keep the worker's framing the same as any proxy's.
#include "worker/request_parser.hpp"

#include <doctest/doctest.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <string>
#include <string_view>

#include "worker/http_route.hpp"

using namespace clusterd::worker;
namespace http = boost::beast::http;

namespace {

struct Outcome {
    boost::beast::error_code ec;
    int reject = 0;
    std::string reason;
    bool done = false;
    bool expects_continue = false;
    std::size_t used = 0;  // bytes of the input the first request took
    std::string target;
};

// Feeds `data` as the session does (one put per arrival, eager) and stops after the first
// request, done or failed.
Outcome parse(std::string_view data, std::size_t piece = 1 << 20) {
    Outcome out;
    RequestParser p(out.target, 1 << 20);
    p.eager(true);
    std::string pending;
    for (std::size_t at = 0; at < data.size() && !p.is_done(); at += piece) {
        pending += data.substr(at, piece);
        while (!pending.empty() && !p.is_done()) {
            out.ec = {};
            std::size_t n = p.put(boost::asio::buffer(pending), out.ec);
            out.used += n;
            pending.erase(0, n);
            if (out.ec == http::error::need_more) {
                out.ec = {};
                break;
            }
            if (out.ec) {
                out.reject = p.reject_status();
                out.reason = std::string(p.reject_reason());
                out.expects_continue = p.expects_continue();
                return out;
            }
            if (n == 0) break;
        }
    }
    out.done = p.is_done();
    out.expects_continue = p.expects_continue();
    return out;
}

}  // namespace

TEST_CASE("request parser: a plain HTTP/1.1 request with one Host is accepted") {
    auto r = parse("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK_FALSE(r.ec);
    CHECK(r.done);
    CHECK(r.target == "/a?b");
    CHECK(r.reject == 0);
}

TEST_CASE("request parser: Host is required once in HTTP/1.1, optional in HTTP/1.0") {
    auto missing = parse("GET / HTTP/1.1\r\nX: y\r\n\r\n");
    CHECK(missing.ec);
    CHECK(missing.reject == 400);
    CHECK(missing.reason == "missing Host field in an HTTP/1.1 request");
    auto twice = parse("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
    CHECK(twice.reject == 400);
    CHECK(twice.reason == "repeated Host field");
    auto same_twice = parse("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
    CHECK(same_twice.reject == 400);
    auto old = parse("GET / HTTP/1.0\r\n\r\n");
    CHECK_FALSE(old.ec);
    CHECK(old.done);
    CHECK(parse("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").reject == 400);
}

TEST_CASE("request parser: Transfer-Encoding must be exactly chunked") {
    const char* bad[] = {
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: \r\n",
        "Transfer-Encoding: chunked;q=1\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    };
    for (const char* fields : bad) {
        CAPTURE(fields);
        // Whatever follows must not be read as a next request: the parser stops with an error.
        auto r = parse(std::string("POST / HTTP/1.1\r\nHost: x\r\n") + fields +
                       "\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(r.ec);
        CHECK_FALSE(r.done);
        CHECK(r.target == "/");
        // Beast refuses some of these itself (400 through status_for); ours say why.
        CHECK((r.reject == 400 || r.reject == 0));
    }
    auto ok = parse(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED \r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n");
    CHECK_FALSE(ok.ec);
    CHECK(ok.done);
    auto ok_list =
        parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n");
    CHECK(ok_list.done);
    auto coded = parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    CHECK(coded.reject == 501);
    auto old = parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    CHECK(old.reject == 400);
    CHECK(old.reason == "Transfer-Encoding in an HTTP/1.0 request");
}

TEST_CASE("request parser: a bad Content-Length is refused") {
    const char* bad[] = {"Content-Length: 5x\r\n",
                         "Content-Length: -1\r\n",
                         "Content-Length: 5\r\nContent-Length: 6\r\n",
                         "Content-Length: 5, 6\r\n",
                         "Content-Length: 99999999999999999999999\r\n",
                         "Content-Length: \r\n"};
    for (const char* fields : bad) {
        CAPTURE(fields);
        auto r = parse(std::string("POST / HTTP/1.1\r\nHost: x\r\n") + fields + "\r\nhello");
        CHECK(r.ec);
        CHECK_FALSE(r.done);
    }
    std::string same_length =
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    auto same = parse(same_length);
    CHECK(same.done);
    CHECK(same.used == same_length.size());
}

TEST_CASE("request parser: Expect 100-continue is known, other expectations get 417") {
    auto head =
        parse("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n");
    CHECK_FALSE(head.ec);
    CHECK_FALSE(head.done);
    CHECK(head.expects_continue);
    auto all = parse(
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
        "\r\nhello");
    CHECK(all.done);
    auto unknown = parse("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n");
    CHECK(unknown.reject == 417);
    auto old = parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    CHECK_FALSE(old.ec);
    CHECK_FALSE(old.expects_continue);
}

TEST_CASE("request parser: a head split into single bytes is parsed the same") {
    auto r = parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 1);
    CHECK(r.reject == 400);
    auto ok = parse(
        "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\n",
        1);
    CHECK(ok.done);
    CHECK(ok.target == "/p");
}

TEST_CASE("route_request: health, CPU, 405, file or body") {
    using V = http::verb;
    CHECK(route_request(V::post, "/healthz", false, false) == Route::healthz);
    CHECK(route_request(V::get, "/cpu?ms=5", true, false) == Route::cpu);
    CHECK(route_request(V::get, "/cpu?ms=5", false, false) == Route::body);
    CHECK(route_request(V::get, "/cpu?ms=5", true, true) == Route::file);
    CHECK(route_request(V::post, "/", false, false) == Route::method_not_allowed);
    CHECK(route_request(V::head, "/x", false, true) == Route::file);
    CHECK(route_request(V::get, "http://h/healthz", false, false) == Route::healthz);
}

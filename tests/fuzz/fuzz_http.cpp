// Fuzz target: the bytes a client sends on one connection to the built-in worker, parsed as
// the session parses them (a fresh RequestParser per request, eager, fed what has arrived so
// far) and routed. The first byte chooses how the rest arrives (its size per read), so heads
// and bodies are also split at every place. Checks, against an independent reading of each
// accepted head: an HTTP/1.1 request has exactly one Host; a Transfer-Encoding is exactly
// `chunked` and never comes with Content-Length; nothing after a refused request is parsed;
// every status the worker can send has a reason phrase.
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "worker/http_response.hpp"
#include "worker/http_route.hpp"
#include "worker/request_parser.hpp"

namespace http = boost::beast::http;
using namespace clusterd::worker;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

char lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// The framing fields of a head, read line by line without Beast. False when the head has a
// line this simple reading does not understand (obs-fold), so no conclusion is drawn.
struct Head {
    int hosts = 0;
    int content_lengths = 0;
    std::vector<std::string_view> codings;  // every Transfer-Encoding element, in order
    bool transfer_encoding = false;
};

bool read_head(std::string_view head, Head& out) {
    bool first = true;
    while (!head.empty()) {
        auto eol = head.find("\r\n");
        std::string_view line = head.substr(0, eol);
        head = eol == std::string_view::npos ? std::string_view{} : head.substr(eol + 2);
        if (first) {
            if (line.empty()) continue;  // empty lines before the request line
            first = false;
            continue;
        }
        if (line.empty()) break;
        if (line.front() == ' ' || line.front() == '\t') return false;
        auto colon = line.find(':');
        if (colon == std::string_view::npos) return false;
        std::string_view name = line.substr(0, colon);
        std::string_view value = line.substr(colon + 1);
        if (iequals(name, "host")) ++out.hosts;
        if (iequals(name, "content-length")) ++out.content_lengths;
        if (iequals(name, "transfer-encoding")) {
            out.transfer_encoding = true;
            while (true) {
                auto comma = value.find(',');
                std::string_view e = trim(value.substr(0, comma));
                if (!e.empty()) out.codings.push_back(e);
                if (comma == std::string_view::npos) break;
                value.remove_prefix(comma + 1);
            }
        }
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    std::size_t piece = data[0] % 64 + 1;
    std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

    boost::beast::flat_buffer buffer(64 * 1024);
    std::string target;
    std::size_t arrived = 0;   // bytes of input put into the buffer
    std::size_t consumed = 0;  // bytes of input the parsers took
    std::size_t started = 0;   // where the current request began
    for (int requests = 0; requests < 64; ++requests) {
        RequestParser parser(target, 1 << 20);
        parser.eager(true);
        started = consumed;
        boost::beast::error_code ec;
        while (!parser.is_done()) {
            if (buffer.size() == 0 || ec == http::error::need_more) {
                if (arrived == input.size()) break;
                std::size_t n = std::min(piece, input.size() - arrived);
                auto room = buffer.prepare(std::min(n, buffer.max_size() - buffer.size()));
                if (room.size() == 0) {
                    ec = http::error::buffer_overflow;
                    break;
                }
                n = boost::asio::buffer_copy(
                    room, boost::asio::buffer(input.data() + arrived, room.size()));
                buffer.commit(n);
                arrived += n;
            }
            ec = {};
            std::size_t used = parser.put(buffer.data(), ec);
            buffer.consume(used);
            consumed += used;
            if (ec == http::error::need_more) continue;
            if (ec) break;
            if (used == 0 && buffer.size() > 0 && !parser.is_done()) break;
        }
        check(consumed <= input.size());
        if (ec && ec != http::error::need_more) {
            // Refused: the session answers and closes; nothing after is parsed.
            int status = parser.reject_status();
            check(status == 0 || status == 400 || status == 417 || status == 501);
            check((status == 0) == parser.reject_reason().empty());
            if (status != 0) check(reason_phrase(status) != "Unknown");
            return 0;
        }
        if (!parser.is_done()) return 0;  // the connection ends mid-request: no answer

        // Accepted: the independent reading of its head must agree.
        std::string_view raw = input.substr(started, consumed - started);
        Head head;
        if (read_head(raw, head)) {
            if (parser.version() >= 11)
                check(head.hosts == 1);
            else
                check(head.hosts <= 1);
            if (head.transfer_encoding) {
                check(parser.version() >= 11);
                check(head.content_lengths == 0);
                check(head.codings.size() == 1 && iequals(head.codings[0], "chunked"));
            }
        }
        check(!parser.expects_continue() || parser.version() >= 11);
        Route route = route_request(parser.method(), target, true, false);
        int status = route == Route::method_not_allowed ? 405 : 200;
        check(reason_phrase(status) != "Unknown");
        if (!parser.keep_alive()) return 0;
    }
    return 0;
}

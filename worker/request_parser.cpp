#include "worker/request_parser.hpp"

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>

namespace clusterd::worker {

namespace http = boost::beast::http;

namespace {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char c = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
        if (c != b[i]) return false;
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Calls f on each element of a comma-separated field value, trimmed; empty elements are
// skipped (RFC 9110 §5.6.1).
template <class F>
void for_each_element(std::string_view value, F f) {
    while (true) {
        auto comma = value.find(',');
        std::string_view element = trim(value.substr(0, comma));
        if (!element.empty()) f(element);
        if (comma == std::string_view::npos) return;
        value.remove_prefix(comma + 1);
    }
}

}  // namespace

void RequestParser::on_request_impl(http::verb method, string_view, string_view target, int version,
                                    error_code&) {
    method_ = method;
    version_ = static_cast<unsigned>(version);
    target_.assign(target.data(), target.size());
}

void RequestParser::on_field_impl(http::field f, string_view, string_view value, error_code&) {
    std::string_view v(value.data(), value.size());
    switch (f) {
        case http::field::host:
            ++hosts_;
            break;
        case http::field::content_length:
            content_length_ = true;
            break;
        case http::field::transfer_encoding:
            transfer_encoding_ = true;
            // An empty value names no coding, so chunked cannot be final.
            if (trim(v).empty()) {
                chunked_last_ = false;
                other_coding_ = true;
            }
            for_each_element(v, [this](std::string_view c) { transfer_coding(c); });
            break;
        case http::field::expect:
            for_each_element(v, [this](std::string_view e) {
                if (iequals(e, "100-continue"))
                    expect_continue_ = true;
                else
                    expect_unknown_ = true;
            });
            break;
        default:
            break;
    }
}

void RequestParser::transfer_coding(std::string_view coding) {
    if (chunked_last_) coding_after_chunked_ = true;
    chunked_last_ = iequals(coding, "chunked");
    if (!chunked_last_) other_coding_ = true;
}

void RequestParser::reject(int status, std::string_view reason) {
    if (reject_status_ != 0) return;
    reject_status_ = status;
    reject_reason_ = reason;
}

void RequestParser::on_header_impl(error_code& ec) {
    if (hosts_ > 1) reject(400, "repeated Host field");
    if (hosts_ == 0 && version_ >= 11) reject(400, "missing Host field in an HTTP/1.1 request");
    if (transfer_encoding_) {
        if (version_ < 11) reject(400, "Transfer-Encoding in an HTTP/1.0 request");
        if (content_length_) reject(400, "both Content-Length and Transfer-Encoding");
        if (!chunked_last_) reject(400, "Transfer-Encoding does not end in chunked");
        if (coding_after_chunked_) reject(400, "Transfer-Encoding has a coding after chunked");
        if (other_coding_) reject(501, "transfer coding other than chunked not implemented");
    }
    if (expect_unknown_) reject(417, "unknown expectation in the Expect field");
    if (version_ < 11) expect_continue_ = false;
    // Any error of Beast's category stops the parser; the session answers reject_status().
    if (reject_status_ != 0) ec = http::error::bad_value;
}

}  // namespace clusterd::worker

// An HTTP/1.x request parser that keeps only what the worker answers from: method, target,
// version and the few fields that decide how the request is framed. Beast's basic_parser does
// the parsing, keep-alive and limits; other fields and the body are dropped as they stream
// past, so a request costs no allocation once the target string (owned by the connection and
// reused) has grown to fit.
//
// On top of Beast, the head is checked once it is complete (RFC 9112 §3.2, §6.1, §6.3; RFC
// 9110 §10.1.1), so that no proxy in front can frame the request differently than we do:
//   - HTTP/1.1 needs exactly one Host field; HTTP/1.0 may omit it (it predates Host), but
//     may not repeat it.
//   - Transfer-Encoding must be exactly `chunked` (as one field or a list); a final coding
//     other than chunked, chunked applied twice, Transfer-Encoding in HTTP/1.0, or together
//     with Content-Length is a 400. Another coding before a final chunked (`gzip, chunked`)
//     is framed unambiguously but not implemented: 501.
//   - Content-Length: Beast refuses non-digits, overflow and differing repeats (400); equal
//     repeats ("5, 5") are one length, as RFC 9112 §6.3 allows.
//   - Expect: only `100-continue` is known; anything else is a 417. HTTP/1.0 requests'
//     100-continue is ignored, as RFC 9110 requires.
// A refused head stops the parser with an error; reject_status() says what to answer and
// the connection is closed after the answer.
#pragma once

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/verb.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace clusterd::worker {

/// Parses one request; construct a fresh one per request (it cannot be reset).
class RequestParser : public boost::beast::http::basic_parser<true> {
  public:
    /// Writes the request target into `target`; bodies above `body_limit` bytes fail with
    /// http::error::body_limit.
    RequestParser(std::string& target, std::uint64_t body_limit) : target_(target) {
        this->body_limit(body_limit);
    }

    /// The request method.
    boost::beast::http::verb method() const { return method_; }
    /// 10 for HTTP/1.0, 11 for HTTP/1.1.
    unsigned version() const { return version_; }
    /// 0 while the head is acceptable; else the status the refused head gets (400, 417, 501).
    int reject_status() const { return reject_status_; }
    /// Why the head was refused ("repeated Host field"); empty when it was not.
    std::string_view reject_reason() const { return reject_reason_; }
    /// The head is complete and asks for `100 Continue` before the client sends the body.
    bool expects_continue() const { return is_header_done() && expect_continue_; }

  private:
    using error_code = boost::beast::error_code;
    using string_view = boost::beast::string_view;

    void on_request_impl(boost::beast::http::verb method, string_view, string_view target,
                         int version, error_code&) override;
    void on_response_impl(int, string_view, int, error_code&) override {}
    void on_field_impl(boost::beast::http::field f, string_view, string_view value,
                       error_code&) override;
    void on_header_impl(error_code& ec) override;
    void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
    std::size_t on_body_impl(string_view body, error_code&) override { return body.size(); }
    void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code&) override {
        return body.size();
    }
    void on_finish_impl(error_code&) override {}

    void reject(int status, std::string_view reason);
    void transfer_coding(std::string_view coding);

    std::string& target_;
    boost::beast::http::verb method_ = boost::beast::http::verb::unknown;
    unsigned version_ = 11;
    int hosts_ = 0;
    bool content_length_ = false;
    bool transfer_encoding_ = false;
    bool chunked_last_ = false;          // the last coding seen so far is chunked
    bool coding_after_chunked_ = false;  // chunked twice, or not final
    bool other_coding_ = false;          // a coding other than chunked appears
    bool expect_continue_ = false;
    bool expect_unknown_ = false;
    int reject_status_ = 0;
    std::string_view reject_reason_;
};

}  // namespace clusterd::worker

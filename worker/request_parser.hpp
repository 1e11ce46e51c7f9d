// An HTTP/1.x request parser that keeps only what the worker answers from: method, target and
// version. Beast's basic_parser does the parsing, keep-alive and limits; fields and body are
// dropped as they stream past, so a request costs no allocation once the target string (owned
// by the connection and reused) has grown to fit.
#pragma once

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/verb.hpp>

#include <cstdint>
#include <string>

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

  private:
    using error_code = boost::beast::error_code;
    using string_view = boost::beast::string_view;

    void on_request_impl(boost::beast::http::verb method, string_view, string_view target,
                         int version, error_code&) override {
        method_ = method;
        version_ = static_cast<unsigned>(version);
        target_.assign(target.data(), target.size());
    }
    void on_response_impl(int, string_view, int, error_code&) override {}
    void on_field_impl(boost::beast::http::field, string_view, string_view, error_code&) override {}
    void on_header_impl(error_code&) override {}
    void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
    std::size_t on_body_impl(string_view body, error_code&) override { return body.size(); }
    void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code&) override {
        return body.size();
    }
    void on_finish_impl(error_code&) override {}

    std::string& target_;
    boost::beast::http::verb method_ = boost::beast::http::verb::unknown;
    unsigned version_ = 11;
};

}  // namespace clusterd::worker

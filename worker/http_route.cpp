#include "worker/http_route.hpp"

#include "worker/document_root.hpp"

namespace clusterd::worker {

namespace http = boost::beast::http;

Route route_request(http::verb method, std::string_view target, bool cpu_endpoint, bool has_root) {
    std::string_view path = request_path(target);
    if (path == "/healthz") return Route::healthz;
    if (cpu_endpoint && !has_root && path == "/cpu") return Route::cpu;
    if (method != http::verb::get && method != http::verb::head) return Route::method_not_allowed;
    return has_root ? Route::file : Route::body;
}

}  // namespace clusterd::worker

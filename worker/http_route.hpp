// Which answer a request gets, decided from its method and target alone, so the connection
// code, its tests and the fuzz target share one decision.
#pragma once

#include <boost/beast/http/verb.hpp>

#include <ostream>  // verb.hpp streams a string_view without including it

#include <string_view>

namespace clusterd::worker {

/// What a request is answered with.
enum class Route {
    /// `/healthz`, any method: "ok".
    healthz,
    /// `/cpu?ms=N` with the CPU endpoint on and no root: work on the offload pool.
    cpu,
    /// Neither GET nor HEAD on another path: 405 with Allow.
    method_not_allowed,
    /// GET or HEAD with a root: the file the target names.
    file,
    /// GET or HEAD without a root: the fixed body.
    body,
};

/// The route of a request with `method` and `target` (as received, query included).
Route route_request(boost::beast::http::verb method, std::string_view target, bool cpu_endpoint,
                    bool has_root);

}  // namespace clusterd::worker

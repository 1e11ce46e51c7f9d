#include "worker/logging.hpp"

#include <doctest/doctest.h>

using clusterd::worker::log_prefix;

TEST_CASE("log_prefix: program and slot under clusterd, the fallback name otherwise") {
    CHECK(log_prefix("web", "3", "clusterd-worker") == "[web:3]");
    CHECK(log_prefix(nullptr, "0", "clusterd-worker") == "[worker:0]");
    CHECK(log_prefix("web", nullptr, "clusterd-worker") == "[clusterd-worker]");
    CHECK(log_prefix("web", "", "clusterd-worker") == "[clusterd-worker]");
}

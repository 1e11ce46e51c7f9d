// Signal names <-> numbers ("TERM", "SIGTERM", "15" all name SIGTERM).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace clusterd {

/// The signal named by `text` ("TERM", "SIGTERM", or a number 1..64); nullopt otherwise.
std::optional<int> parse_signal(std::string_view text);

/// "SIGTERM" for 15; "SIG<n>" for a signal without a name.
std::string signal_name(int sig);

}  // namespace clusterd

// Placeholders in a program's `command` arguments, expanded per worker (Circus-style):
//
//   {listen.NAME.fd}   the fd number the worker receives listener NAME on: 3 + its index in
//                      `listen:` (e.g. `--fd={listen.http.fd}` becomes `--fd=3`)
//
// Other text, braces included, is left as written. The loader rejects an unknown NAME or a
// malformed `{listen.` placeholder, so expansion at spawn time cannot fail.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.hpp"

namespace clusterd {

/// `arg` with every {listen.NAME.fd} replaced; nullopt with `problem` set when a placeholder
/// is malformed or names no listener of `listen`.
std::optional<std::string> expand_placeholders(std::string_view arg,
                                               const std::vector<ListenConfig>& listen,
                                               std::string& problem);

}  // namespace clusterd

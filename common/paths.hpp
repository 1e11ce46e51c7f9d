// Where clusterd keeps its control socket and its state when the config does not say.
//
// As root: /run/clusterd/control.sock and /var/lib/clusterd (the unit's RuntimeDirectory and
// StateDirectory). As any other user, the XDG base directories, so a non-root `clusterd run`
// and `clusterd status` of the same user meet without a config line:
//   control socket  $XDG_RUNTIME_DIR/clusterd/control.sock, else /tmp/clusterd-UID/control.sock
//   state           $XDG_STATE_HOME/clusterd, else $HOME/.local/state/clusterd
// A relative XDG value is ignored, as the XDG base directory spec says.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>

namespace clusterd {

struct DefaultPaths {
    std::string control;    // control socket
    std::string state_dir;  // runtime scale overrides
};

/// The defaults for `uid`, reading the environment through `getenv` (pure: for tests).
DefaultPaths default_paths(uid_t uid, const std::function<const char*(const char*)>& getenv);

/// The defaults for this process (its effective uid and environment).
const DefaultPaths& default_paths();

}  // namespace clusterd

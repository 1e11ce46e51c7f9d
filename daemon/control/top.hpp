// `clusterd top`: a live view of the daemon, like `pm2 monit`. A plain client of the control
// socket (poll(), no Asio): one connection asks `status` once per refresh, one follows the
// events (`events` with "follow": the daemon sends an event when it happens, so the view
// costs the master one status a refresh and nothing more). What is drawn: TopView.
//
// On a terminal it draws in place on the alternate screen (home, clear to end of line, no
// scrolling), in colour unless NO_COLOR is set or TERM is dumb, fitted to the terminal's
// width and height and redrawn when they change (SIGWINCH). Keys are read unbuffered
// without echo; `q` or Ctrl-C quits. The terminal is given back as it was on every way out:
// q, SIGINT, SIGTERM, SIGHUP, an error, the daemon going away (which it then says); Ctrl-Z
// gives it back until the view is resumed.
//
// When stdout is not a terminal it prints one frame, plain, `COLUMNS` wide (default 120),
// after two status samples one interval apart (2 s at least: rates need two, and workers
// report their counts about once a second), and exits.
#pragma once

#include <string>

namespace clusterd {

/// Runs the view of `program` ("" = every program) of the daemon at `socket_path`,
/// refreshing every `interval` seconds. Returns the exit code: 0 when the user quits (or
/// the one frame was printed), 1 when the daemon cannot be reached or goes away.
int run_top(const std::string& socket_path, const std::string& program, double interval);

}  // namespace clusterd

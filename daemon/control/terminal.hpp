// The terminal of an interactive client (`clusterd top`), taken for a full-screen view and
// given back exactly as it was: on destruction, so every way out (a return, an exception)
// restores it. Signals that end or disturb the view (INT, TERM, HUP, WINCH, TSTP, CONT) are
// caught while it is held and arrive as bytes on a pipe (signals()), for the client's poll()
// loop; their previous handlers come back with the terminal.
#pragma once

#include <signal.h>
#include <termios.h>

#include <iterator>
#include <string>

namespace clusterd {

class Terminal {
  public:
    /// Takes the terminal: see enter(). Throws std::system_error when the pipe cannot be made.
    Terminal();
    ~Terminal();
    Terminal(const Terminal&) = delete;
    Terminal& operator=(const Terminal&) = delete;

    /// Keys unbuffered and unechoed (signals still on: Ctrl-C is SIGINT), the alternate
    /// screen, no cursor. Again after a stop: the shell may have reset the modes.
    void enter();
    /// The normal screen, the cursor and the modes as they were.
    void leave();
    /// Ctrl-Z: the terminal back, stopped until `fg`, then the view again.
    void suspend();
    /// The read end of the signal pipe: one byte per signal caught (its number).
    int signals() const;
    /// Columns and rows of stdout's terminal; 80x24 when it does not say.
    static void size(int& columns, int& rows);
    /// All of `s` to stdout; false when it cannot be written (the terminal went away).
    static bool write(const std::string& s);

    /// The signals caught while the terminal is held.
    static constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP, SIGCONT};

  private:
    termios saved_{};
    bool have_termios_ = false;
    bool on_screen_ = false;
    struct sigaction saved_actions_[std::size(kSignals)]{};
};

}  // namespace clusterd

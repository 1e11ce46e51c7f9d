#include "daemon/control/terminal.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace clusterd {

namespace {

// One terminal at a time per process: the handler needs the pipe without an argument.
int signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
    int saved = errno;
    unsigned char c = static_cast<unsigned char>(sig);
    [[maybe_unused]] ssize_t n = ::write(signal_pipe[1], &c, 1);
    errno = saved;
}

}  // namespace

Terminal::Terminal() {
    if (::pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        throw std::system_error(errno, std::generic_category(), "pipe2");
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigemptyset(&sa.sa_mask);
    for (std::size_t i = 0; i < std::size(kSignals); ++i)
        ::sigaction(kSignals[i], &sa, &saved_actions_[i]);
    have_termios_ = ::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &saved_) == 0;
    enter();
}

Terminal::~Terminal() {
    leave();
    for (std::size_t i = 0; i < std::size(kSignals); ++i)
        ::sigaction(kSignals[i], &saved_actions_[i], nullptr);
    ::close(signal_pipe[0]);
    ::close(signal_pipe[1]);
    signal_pipe[0] = signal_pipe[1] = -1;
}

void Terminal::enter() {
    if (have_termios_) {
        termios raw = saved_;
        raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    if (!on_screen_) write("\033[?1049h\033[?25l\033[H\033[2J");
    on_screen_ = true;
}

void Terminal::leave() {
    if (on_screen_) write("\033[0m\033[?25h\033[?1049l");
    on_screen_ = false;
    if (have_termios_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
}

void Terminal::suspend() {
    leave();
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    struct sigaction ours {};
    ::sigaction(SIGTSTP, &dfl, &ours);
    ::raise(SIGTSTP);  // stopped here until SIGCONT
    ::sigaction(SIGTSTP, &ours, nullptr);
    enter();
}

int Terminal::signals() const {
    return signal_pipe[0];
}

void Terminal::size(int& columns, int& rows) {
    winsize ws{};
    columns = 80;
    rows = 24;
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
        columns = ws.ws_col;
        rows = ws.ws_row;
    }
}

bool Terminal::write(const std::string& s) {
    std::size_t done = 0;
    while (done < s.size()) {
        ssize_t n = ::write(STDOUT_FILENO, s.data() + done, s.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace clusterd

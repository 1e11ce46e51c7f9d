#include "common/signals.hpp"

#include <doctest/doctest.h>

#include <csignal>

using clusterd::parse_signal;
using clusterd::signal_name;

TEST_CASE("parse_signal accepts a name with or without SIG, any case, or a number") {
    CHECK(parse_signal("TERM") == SIGTERM);
    CHECK(parse_signal("SIGTERM") == SIGTERM);
    CHECK(parse_signal("15") == SIGTERM);
    CHECK(parse_signal("term") == SIGTERM);
    CHECK(parse_signal("SigInt") == SIGINT);
    CHECK(parse_signal("HUP") == SIGHUP);
    CHECK(parse_signal("KILL") == SIGKILL);
    CHECK(parse_signal("USR1") == SIGUSR1);
    CHECK(parse_signal("SIGUSR2") == SIGUSR2);
    CHECK(parse_signal("QUIT") == SIGQUIT);
    CHECK(parse_signal("WINCH") == SIGWINCH);
    CHECK(parse_signal("TTIN") == SIGTTIN);
    CHECK(parse_signal("IOT") == SIGABRT);
    CHECK(parse_signal("CLD") == SIGCHLD);
    CHECK(parse_signal("POLL") == SIGIO);
    CHECK(parse_signal("1") == 1);
    CHECK(parse_signal("64") == 64);
}

TEST_CASE("parse_signal accepts real-time signals relative to RTMIN and RTMAX") {
    CHECK(parse_signal("RTMIN") == SIGRTMIN);
    CHECK(parse_signal("SIGRTMIN+2") == SIGRTMIN + 2);
    CHECK(parse_signal("RTMAX") == SIGRTMAX);
    CHECK(parse_signal("RTMAX-1") == SIGRTMAX - 1);
    CHECK_FALSE(parse_signal("RTMIN-1").has_value());
    CHECK_FALSE(parse_signal("RTMAX+1").has_value());
    CHECK_FALSE(parse_signal("RTMIN+99").has_value());
}

TEST_CASE("parse_signal rejects unknown names and numbers out of range") {
    for (const char* text : {"", "0", "65", "100", "-15", "SIG", "SIGFOO", "TERMINATE", " TERM",
                             "15 ", "0x0f", "SIGSIGTERM"}) {
        CAPTURE(text);
        CHECK_FALSE(parse_signal(text).has_value());
    }
}

TEST_CASE("signal_name gives the standard Linux names") {
    CHECK(signal_name(SIGTERM) == "SIGTERM");
    CHECK(signal_name(SIGKILL) == "SIGKILL");
    CHECK(signal_name(SIGHUP) == "SIGHUP");
    CHECK(signal_name(SIGSEGV) == "SIGSEGV");
    CHECK(signal_name(SIGABRT) == "SIGABRT");
    CHECK(signal_name(SIGCHLD) == "SIGCHLD");
    CHECK(signal_name(SIGIO) == "SIGIO");
    CHECK(signal_name(SIGSYS) == "SIGSYS");
    CHECK(signal_name(SIGRTMIN) == "SIGRTMIN");
    CHECK(signal_name(SIGRTMIN + 1) == "SIGRTMIN+1");
    CHECK(signal_name(SIGRTMAX) == "SIGRTMAX");
    CHECK(signal_name(SIGRTMAX - 2) == "SIGRTMAX-2");
    CHECK(signal_name(0) == "SIG0");
    CHECK(signal_name(99) == "SIG99");
}

TEST_CASE("signal_name and parse_signal round-trip for every signal number") {
    for (int sig = 1; sig <= 64; ++sig) {
        CAPTURE(sig);
        auto name = signal_name(sig);
        if (name == "SIG" + std::to_string(sig)) continue;  // glibc-reserved 32, 33
        CHECK(parse_signal(name) == sig);
    }
}

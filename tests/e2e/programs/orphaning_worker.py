#!/usr/bin/env python3
"""A worker that leaves an orphan behind, for tests/e2e/test_reuseport_orphans.py.

Usage: orphaning_worker.py PIDFILE SECONDS PROGRAM [ARGS...]

Forks a helper that starts its own session (setsid), keeps every inherited fd open (the
listening sockets clusterd passed, fd 3 and up), appends its pid to PIDFILE and sleeps
SECONDS before it exits; then the worker itself becomes PROGRAM (exec, same pid, so
LISTEN_PID stays right). Killing the master and the worker with SIGKILL leaves the helper
holding the worker's listening sockets."""

import os
import sys
import time


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: orphaning_worker.py PIDFILE SECONDS PROGRAM [ARGS...]")
    pidfile, seconds, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    if os.fork() == 0:
        os.setsid()
        with open(pidfile, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        os._exit(0)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()

"""A Python worker on python3-systemd: READY=1 and heartbeats with systemd.daemon.notify, as
a service written for systemd's Type=notify does (tests/e2e/test_notify_access.py)."""
import os
import signal
import sys
import time

from systemd import daemon

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
usec = int(os.environ.get("WATCHDOG_USEC", "0"))
daemon.notify(f"READY=1\nSTATUS=python worker {os.getpid()} ready")
while True:
    if usec:
        daemon.notify("WATCHDOG=1")
    time.sleep(usec / 2e6 if usec else 0.2)

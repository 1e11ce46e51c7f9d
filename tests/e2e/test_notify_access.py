"""End to end: sd_notify from any process of a worker (`notify_access: all`, the default), with
the clients existing services use: systemd's systemd-notify from a shell worker running as a
non-root user, python3-systemd's daemon.notify, and a C++ worker linked to libsystemd (whose
sd_watchdog_enabled() reads WATCHDOG_PID). A sender is the worker's when it is the worker, in
its process group, or below it; anything else is dropped with a warning that says why."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from harness import BIN, CLUSTERD, Daemon, environ_of, wait_for
from test_supervise import TEST_USER, ensure_test_user

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")
LIBSYSTEMD_WORKER = os.path.join(BIN, "clusterd-libsystemd-worker")
SYSTEM_PYTHON = "/usr/bin/python3"  # python3-systemd is Debian's, for Debian's python


def has_python_systemd():
    return subprocess.run([SYSTEM_PYTHON, "-c", "import systemd.daemon"],
                          capture_output=True).returncode == 0


class NotifyAccessTest(unittest.TestCase):
    def start(self, programs):
        d = Daemon("programs:\n" + programs)
        self.addCleanup(d.close)
        return d

    def status(self, d):
        r = subprocess.run([CLUSTERD, "status", "--json", "-s", os.path.join(d.dir, "control.sock")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return {p["name"]: p for p in json.loads(r.stdout.strip().splitlines()[-1])["status"]["programs"]}

    def shell_worker(self):
        """notify_shell.sh in a directory the test user can read (the checkout may not be)."""
        d = tempfile.mkdtemp(prefix="clusterd-notify-")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        path = os.path.join(d, "notify_shell.sh")
        shutil.copy(os.path.join(PROGRAMS, "notify_shell.sh"), path)
        os.chmod(path, 0o755)
        return path

    @unittest.skipUnless(os.geteuid() == 0, "needs root to run the worker as another user")
    @unittest.skipUnless(shutil.which("systemd-notify"), "systemd-notify not found (systemd)")
    def test_systemd_notify_from_a_shell_worker_as_a_non_root_user(self):
        ensure_test_user()
        script = self.shell_worker()
        d = self.start(f"""
  sh:
    command: ["{script}"]
    cores: 2
    user: {TEST_USER}
    start_timeout: 10s
  strict:
    command: ["{script}"]
    cores: 1
    user: {TEST_USER}
    notify_access: main
    start_timeout: 2s
""")
        d.wait_log(r"sh: all 2 workers ready")
        st = self.status(d)
        for slot in st["sh"]["slots"]:
            self.assertEqual(slot["state"], "ready")
            self.assertEqual(slot["status"], f"shell worker {slot['pid']} ready as {TEST_USER}")
        # notify_access: main takes the worker's own pid only: systemd-notify is its child.
        # (As a non-root user it cannot claim its parent's pid; it sends with its own.)
        lines = d.wait_log(r"strict\[0\]: READY=1 from pid \d+ dropped: it is not the worker's "
                           r"pid \d+ \(notify_access: main\)")
        self.assertTrue(lines)
        d.wait_log(r"strict\[0\]: pid \d+ not ready after 2s", timeout=10)

    @unittest.skipUnless(os.path.exists(SYSTEM_PYTHON) and has_python_systemd(),
                         "python3-systemd not installed")
    def test_python_systemd_daemon_notify(self):
        d = self.start(f"""
  py:
    command: ["{SYSTEM_PYTHON}", "{os.path.join(PROGRAMS, 'notify_python.py')}"]
    cores: 2
    watchdog: 1s
""")
        d.wait_log(r"py: all 2 workers ready")
        workers = d.workers()
        time.sleep(2.5)  # heartbeats keep them past the watchdog
        self.assertEqual(d.workers(), workers)
        for slot in self.status(d)["py"]["slots"]:
            self.assertEqual(slot["status"], f"python worker {slot['pid']} ready")
        self.assertNotIn("no heartbeat", d.log_text())

    @unittest.skipUnless(os.path.exists(LIBSYSTEMD_WORKER),
                         "clusterd-libsystemd-worker not built (libsystemd-dev missing)")
    def test_libsystemd_worker_sees_the_watchdog_and_its_child_does_not(self):
        d = self.start(f"""
  c:
    command: ["{LIBSYSTEMD_WORKER}"]
    cores: 2
    watchdog: 1s
""")
        d.wait_log(r"c: all 2 workers ready")
        workers = d.workers()
        for pid in workers.values():
            self.assertEqual(environ_of(pid)["WATCHDOG_PID"], str(pid))
        # sd_watchdog_enabled(): yes in the worker (1 s), no in the child it forked.
        for slot in self.status(d)["c"]["slots"]:
            self.assertEqual(slot["status"], "watchdog 1 usec 1000000 child 0")
        time.sleep(2.5)
        self.assertEqual(d.workers(), workers)
        self.assertNotIn("no heartbeat", d.log_text())

    @unittest.skipUnless(shutil.which("systemd-notify"), "systemd-notify not found (systemd)")
    def test_descendants_count_and_strangers_are_dropped_with_the_reason(self):
        # A worker whose readiness comes from a grandchild in a session of its own (setsid: out
        # of the worker's process group, still below it), and a stranger on the same socket.
        d = self.start("""
  deep:
    command: ["/bin/sh", "-c", "setsid sh -c 'systemd-notify --ready --status=from-below' & wait; exec sleep 600"]
    cores: 1
    start_timeout: 10s
""")
        d.wait_log(r"deep: all 1 workers ready")
        self.assertEqual(self.status(d)["deep"]["slots"][0]["status"], "from-below")
        path = environ_of(d.workers()[0])["NOTIFY_SOCKET"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"STATUS=stranger", path)
        d.wait_log(rf"deep\[0\]: notify message from pid {os.getpid()} dropped: it is neither in "
                   r"the worker's process group \(\d+\) nor below pid \d+")
        time.sleep(0.2)
        self.assertEqual(self.status(d)["deep"]["slots"][0]["status"], "from-below")


if __name__ == "__main__":
    unittest.main()

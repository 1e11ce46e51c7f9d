"""End to end: the master as systemd sees it, with this test playing systemd's part: the
notify socket (READY, STATUS, RELOADING, STOPPING, WATCHDOG) and socket activation
(LISTEN_FDS), including connections that wait in the passed socket while no master runs."""

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import CLUSTERD, free_port, http_get, pid_alive, wait_for


class FakeSystemd:
    """An abstract notify socket collecting datagrams, and the listening socket it passes."""

    def __init__(self, port):
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.address = f"@clusterd-test-{os.getpid()}-{port}"
        self.notify.bind("\0" + self.address[1:])
        self.notify.settimeout(0.1)
        self.messages = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.collect, daemon=True)
        self.thread.start()

    def collect(self):
        while not self.stop.is_set():
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except socket.timeout:
                pass

    def seen(self, text):
        return any(text in m for m in self.messages)

    def start_master(self, config, log, watchdog_usec=None):
        """Start clusterd as systemd would: the socket at fd 3, LISTEN_PID = its own pid."""
        fd = self.listener.fileno()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": self.address,
               "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)

        # The socket goes to fd 3 in the child; LISTEN_PID must be the pid of the exec'd
        # clusterd, which the shell's $$ is (exec keeps the pid).
        return subprocess.Popen(
            ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', CLUSTERD, "run", "-c", config],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            pass_fds=(3,), preexec_fn=lambda: os.dup2(fd, 3))

    def close(self):
        self.stop.set()
        self.thread.join()
        self.notify.close()
        self.listener.close()


class SystemdProtocolTest(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="clusterd-sd-")
        self.config = os.path.join(self.dir, "clusterd.yaml")
        self.write("1")
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.systemd = FakeSystemd(self.port)
        self.addCleanup(self.systemd.close)
        self.procs = []
        self.addCleanup(self.cleanup)

    def write(self, release, cores=2, more=""):
        with open(self.config, "w") as f:
            f.write(f"""
daemon:
  control: {self.dir}/control.sock
  state_dir: {self.dir}/state
programs:
  web:
    cores: {cores}
    env: {{RELEASE: "{release}"}}
    listen:
      - {{name: http, address: "127.0.0.1:{self.port}"}}
{more}""")

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.log.close()

    def start(self, **kw):
        p = self.systemd.start_master(self.config, self.log, **kw)
        self.procs.append(p)
        return p

    def logtext(self):
        with open(os.path.join(self.dir, "log")) as f:
            return f.read()

    def test_ready_status_reloading_stopping_and_watchdog(self):
        master = self.start(watchdog_usec=200000)
        wait_for(lambda: self.systemd.seen("READY=1"), 10, what="READY=1")
        wait_for(lambda: self.systemd.seen("STATUS=web 2/2 ready"), 5, what="STATUS")
        wait_for(lambda: sum("WATCHDOG=1" in m for m in self.systemd.messages) >= 3, 5,
                 what="WATCHDOG=1 every 100ms")
        self.assertIn("used instead of binding", self.logtext())
        self.assertEqual(http_get(self.port)[0], 200)
        self.write("2")
        r = subprocess.run([CLUSTERD, "reload", "-s", f"{self.dir}/control.sock"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        reloading = [i for i, m in enumerate(self.systemd.messages) if "RELOADING=1" in m]
        self.assertTrue(reloading, self.systemd.messages)
        self.assertIn("MONOTONIC_USEC=", self.systemd.messages[reloading[0]])
        wait_for(lambda: any("READY=1" in m for m in self.systemd.messages[reloading[0]:]), 5,
                 what="READY=1 after the reload")
        master.send_signal(signal.SIGTERM)
        self.assertEqual(master.wait(15), 0)
        self.assertTrue(self.systemd.seen("STOPPING=1"))

    def test_a_crash_looping_program_does_not_hold_back_ready(self):
        self.write("1", cores=1, more="""  broken:
    command: ["/bin/sh", "-c", "exit 1"]
    cores: 2
""")
        self.start()
        # Under systemd, a READY=1 that never comes means the start timeout kills every
        # program; clusterd is up once each slot has tried, and STATUS says what serves.
        wait_for(lambda: self.systemd.seen("READY=1"), 5, what="READY=1")
        wait_for(lambda: self.systemd.seen("STATUS=web 1/1 ready, broken 0/2 ready"), 5,
                 what="STATUS with the crash-looping program")
        self.assertEqual(http_get(self.port)[0], 200)

    def test_connections_wait_in_the_passed_socket_across_a_master_restart(self):
        master = self.start()
        wait_for(lambda: self.systemd.seen("READY=1"), 10, what="READY=1")
        with open(f"/proc/{master.pid}/task/{master.pid}/children") as f:
            workers = [int(p) for p in f.read().split()]
        master.kill()
        master.wait()
        wait_for(lambda: not any(pid_alive(p) for p in workers), 5, what="workers gone")
        # No clusterd runs now; the socket systemd holds still queues this connection.
        result = {}
        client = threading.Thread(target=lambda: result.update(r=http_get(self.port, timeout=20)))
        client.start()
        time.sleep(0.5)
        self.assertTrue(client.is_alive(), "the request waits for a master")
        self.systemd.messages.clear()
        self.start()
        client.join(20)
        self.assertEqual(result["r"][0], 200)


if __name__ == "__main__":
    unittest.main()

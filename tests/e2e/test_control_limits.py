"""End to end: the master's control socket and metrics endpoint under floods from real sockets.

1000 idle control connections, pipelined requests whose replies are never read, a daemon out
of file descriptors, and 200+ slowloris connections on /metrics: the master's descriptors,
memory and CPU stay bounded, `clusterd status` and /healthz keep answering, and a killed
worker is replaced once the flood is gone."""

import os
import resource
import socket
import subprocess
import threading
import time
import unittest

from harness import CLUSTERD, SANITIZED, Daemon, free_port, http_get, wait_for
from test_metrics import sample

CONTROL_LIMIT = 64  # ControlServerOptions::max_connections


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        raise unittest.SkipTest(f"RLIMIT_NOFILE hard limit {hard} < {n}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


class LimitedDaemon(Daemon):
    """A daemon started with a given RLIMIT_NOFILE."""

    def __init__(self, config_text, nofile=None):
        self.nofile = nofile
        super().__init__(config_text)

    def launch(self):
        if self.nofile is None:
            return super().launch()
        n = self.nofile
        own = ["--control", os.path.join(self.dir, "control.sock"),
               "--state-dir", os.path.join(self.dir, "state")]
        self.proc = subprocess.Popen(
            [CLUSTERD, "run", "-c", self.config, *own], stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)))


class ControlLimitsTest(unittest.TestCase):
    def start(self, nofile=None, cores=1):
        self.mport, self.port = free_port(), free_port()
        self.d = LimitedDaemon(f"""
daemon:
  metrics: "127.0.0.1:{self.mport}"
programs:
  web:
    cores: {cores}
    backoff: {{initial: 0s, max: 1s}}
    listen:
      - {{name: http, address: "127.0.0.1:{self.port}"}}
""", nofile)
        self.addCleanup(self.d.close)
        self.d.wait_log(rf"web: all {cores} workers? ready")
        self.sock = os.path.join(self.d.dir, "control.sock")

    def ctl(self, *args):
        return subprocess.run([CLUSTERD, *args, "-s", self.sock], capture_output=True, text=True,
                              timeout=30)

    def metrics(self):
        status, body = http_get(self.mport, "/metrics")
        self.assertEqual(status, 200)
        return body.decode()

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        return s

    def test_1000_idle_connections_leave_the_cli_working_and_descriptors_bounded(self):
        raise_nofile(4096)
        self.start()
        base = fd_count(self.d.pid)
        for rnd in range(2):  # the flood twice: the limit holds, not just once
            held = [self.connect() for _ in range(1000)]
            try:
                wait_for(lambda: sample(self.metrics(), "clusterd_server_connections",
                                        server="control") == CONTROL_LIMIT, 10,
                         what="the control server at its limit")
                self.assertLessEqual(fd_count(self.d.pid), base + CONTROL_LIMIT + 4)
                for _ in range(5):
                    start = time.monotonic()
                    r = self.ctl("status")
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertIn("web: 1 workers", r.stdout)
                    self.assertLess(time.monotonic() - start, 3)
                # Those shed were told why.
                s = held[0]
                s.settimeout(5)
                self.assertIn(b"idle the longest", s.recv(4096))
            finally:
                for s in held:
                    s.close()
        text = self.metrics()
        self.assertGreaterEqual(sample(text, "clusterd_server_connections_closed_total",
                                       server="control", reason="shed"), 2 * (1000 - 64))
        self.assertEqual(sample(text, "clusterd_server_connections_limit", server="control"),
                         CONTROL_LIMIT)
        wait_for(lambda: fd_count(self.d.pid) <= base + 1, 10, what="descriptors back")

    def test_pipelined_status_requests_never_read_keep_the_master_small(self):
        self.start(cores=4)
        for _ in range(3):
            self.assertEqual(self.ctl("status").returncode, 0)
        before = rss_kib(self.d.pid)
        line = b'{"cmd":"status"}\n'
        clients = []
        sent = 0
        deadline = time.monotonic() + 5
        for _ in range(20):
            s = self.connect()
            s.setblocking(False)
            clients.append(s)
        # Push requests until the kernel takes no more; never read a reply.
        while time.monotonic() < deadline:
            progress = False
            for s in clients:
                try:
                    sent += s.send(line * 1000) // len(line)
                    progress = True
                except BlockingIOError:
                    pass
            if not progress:
                break
            time.sleep(0.01)
        time.sleep(1)
        during = rss_kib(self.d.pid)
        self.assertEqual(self.ctl("status").returncode, 0)
        for s in clients:
            s.close()
        time.sleep(0.5)
        after = rss_kib(self.d.pid)
        self.assertGreater(sent, 10000)
        # Before: 574 MB for this. One reply per connection is a few KiB.
        if not SANITIZED:
            self.assertLess(during - before, 8 * 1024, f"RSS {before} -> {during} KiB")
            self.assertLess(after - before, 8 * 1024, f"RSS {before} -> {after} KiB")

    def test_out_of_descriptors_no_spin_and_a_killed_worker_comes_back(self):
        raise_nofile(4096)
        self.start(nofile=64)
        [worker] = self.d.workers().values()
        held = []
        for _ in range(200):  # far more than the 64 descriptors
            try:
                held.append(self.connect())
            except OSError:
                break
        try:
            time.sleep(0.5)
            cpu0, t0 = cpu_seconds(self.d.pid), time.monotonic()
            # Keep connecting while it is out of descriptors.
            for _ in range(100):
                try:
                    held.append(self.connect())
                except OSError:
                    pass
            time.sleep(2)
            used = cpu_seconds(self.d.pid) - cpu0
            self.assertLess(used / (time.monotonic() - t0), 0.2, f"{used:.2f}s CPU")
            text = self.d.log_text()
            self.assertIn("Too many open files", text)
            # The CLI still gets through: an idle connection makes room for it.
            r = self.ctl("status")
            self.assertEqual(r.returncode, 0, r.stderr)
            os.kill(worker, 9)
            time.sleep(1.5)
        finally:
            for s in held:
                s.close()
        wait_for(lambda: self.d.workers() and worker not in self.d.workers().values(), 15,
                 what="a new worker")
        wait_for(lambda: http_get(self.port)[0] == 200, 10, what="served again")
        self.assertGreater(sample(self.metrics(), "clusterd_server_accept_errors_total",
                                  server="control"), 0)
        # Rate-limited: one message per 10 s, not one per failed accept().
        self.assertLessEqual(self.d.log_text().count("accept() failed on the control"), 2)

    def test_slowloris_on_metrics_does_not_delay_healthz(self):
        raise_nofile(4096)
        self.start()
        stop = threading.Event()
        opened = [0]

        def slowloris():
            conns = []
            while not stop.is_set():
                while len(conns) < 250:
                    try:
                        conns.append(socket.create_connection(("127.0.0.1", self.mport), 2))
                        opened[0] += 1
                    except OSError:
                        break
                keep = []
                for c in conns:  # one byte of a request head per second each
                    try:
                        c.send(b"G")
                        keep.append(c)
                    except OSError:
                        c.close()
                conns = keep
                stop.wait(1)
            for c in conns:
                c.close()

        t = threading.Thread(target=slowloris, daemon=True)
        t.start()
        worst = 0.0
        try:
            time.sleep(1)
            for _ in range(40):
                start = time.monotonic()
                status, body = http_get(self.mport, "/healthz", timeout=5)
                worst = max(worst, time.monotonic() - start)
                self.assertEqual((status, body), (200, b"ok\n"))
                time.sleep(0.1)
        finally:
            stop.set()
            t.join(10)
        self.assertGreater(opened[0], 250)
        self.assertLess(worst, 1.0, f"worst /healthz latency {worst:.3f}s")
        text = self.metrics()
        self.assertGreater(sample(text, "clusterd_server_connections_closed_total",
                                  server="metrics", reason="shed"), 0)


if __name__ == "__main__":
    unittest.main()

"""End to end: what would stall a single-threaded master does not.

A config file that takes seconds to parse is parsed off the loop at reload. A master whose log output stalls (stderr is a pipe nobody reads, as with a
stuck log collector) keeps supervising: heartbeats are judged, control requests answered,
and the log lines it could not write are dropped, counted in /metrics and reported in the
first line that gets through."""

import json
import os
import signal
import subprocess
import sys
import shutil
import tempfile
import time
import unittest

from harness import CLUSTERD, Daemon, free_port, http_get, sample, wait_for

# Writes a 300-byte line every half millisecond: with `output: capture` each one becomes a
# line of the master's log, ~600 KB/s, which fills a 64 KiB pipe and the master's 1 MiB log
# queue within seconds.
CHATTY = ("import sys, time\n"
          "line = 'x' * 300 + '\\n'\n"
          "while True:\n"
          "    sys.stdout.write(line); sys.stdout.flush(); time.sleep(0.0005)\n")


class LogStallTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="clusterd-e2e-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.port, self.mport = free_port(), free_port()
        self.config = os.path.join(self.dir, "clusterd.yaml")
        with open(self.config, "w") as f:
            f.write(f"""
daemon:
  metrics: "127.0.0.1:{self.mport}"
programs:
  web:
    cores: 2
    watchdog: 1s
    listen:
      - {{name: http, address: "127.0.0.1:{self.port}"}}
  chatty:
    cores: 1
    command: ["{sys.executable}", "-c", {CHATTY!r}]
    ready: started
    start_time: 200ms
    output: capture
""")
        self.control = os.path.join(self.dir, "control.sock")
        # stderr is a pipe this test does not read until the end: the master's log stalls.
        self.proc = subprocess.Popen(
            [CLUSTERD, "run", "-c", self.config, "--control", self.control,
             "--state-dir", os.path.join(self.dir, "state")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(self.stop)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            # Its log is read from here on, so the exit is not held up by it.
            try:
                self.proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()

    def cli(self, *args, timeout=5):
        start = time.monotonic()
        out = subprocess.run([CLUSTERD, *args, "-s", self.control], capture_output=True,
                             text=True, timeout=timeout)
        return out, time.monotonic() - start

    def web_pids(self):
        if not os.path.exists(self.control):
            return []
        out, _ = self.cli("status", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        for p in json.loads(out.stdout)["status"]["programs"]:
            if p["name"] == "web":
                return sorted(w["pid"] for w in p["slots"] if w["state"] == "ready")
        return []

    def test_stalled_log_output_does_not_stall_the_master(self):
        wait_for(lambda: len(self.web_pids()) == 2, 15, what="web: 2 workers ready")
        pids = self.web_pids()
        # Let the pipe (64 KiB) and the master's queue (1 MiB) fill: then lines are dropped.
        def dropped():
            status, body = http_get(self.mport, "/metrics")
            return status == 200 and (sample(body, "clusterd_log_lines_dropped_total") or 0) > 0
        wait_for(dropped, 30, interval=0.2, what="log lines dropped")
        # From here on every line is dropped; the master must go on as if nothing happened,
        # over several watchdog periods.
        slowest = 0.0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            out, took = self.cli("status")
            self.assertEqual(out.returncode, 0, out.stderr)
            slowest = max(slowest, took)
            status, _ = http_get(self.port, "/")
            self.assertEqual(status, 200)
            time.sleep(0.2)
        self.assertEqual(self.web_pids(), pids, "a healthy worker was replaced during the stall")
        self.assertLess(slowest, 2.0, "a control request waited on the stalled log")
        _, body = http_get(self.mport, "/metrics")
        lost = sample(body, "clusterd_log_lines_dropped_total")
        print(f"\nstalled log: slowest status {slowest * 1000:.0f} ms, {lost:.0f} lines dropped",
              file=sys.stderr)
        # Read the log from now on: the first line through says how many were lost.
        os.set_blocking(self.proc.stderr.fileno(), False)
        text = b""
        end = time.monotonic() + 10
        while time.monotonic() < end and b"log line(s): the log output" not in text:
            try:
                chunk = os.read(self.proc.stderr.fileno(), 1 << 20)
                if chunk:
                    text += chunk
                    continue
            except BlockingIOError:
                pass
            time.sleep(0.05)
        self.assertRegex(text.decode(errors="replace"),
                         r"clusterd dropped \d+ log line\(s\): the log output was not being read")
        os.set_blocking(self.proc.stderr.fileno(), True)


def big_invalid_config(path, port, size=3_500_000):
    """A config of `size` bytes, under the 4 MiB limit, that parses slowly: an unknown
    top-level key holding ~100,000 small maps, more YAML nodes than a config may have. The
    loader reads until the node limit stops it, most of the file."""
    lines = ["programs:", "  web:", "    cores: 2", "    watchdog: 1s",
             f'    listen: [{{name: http, address: "127.0.0.1:{port}"}}]', "junk:"]
    n, total = 0, 0
    while total < size:
        line = f'  - {{a{n}: [1, 2, 3], b: "text {n}"}}'
        lines.append(line)
        total += len(line) + 1
        n += 1
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class ReloadParseTest(unittest.TestCase):
    def test_a_slow_config_parse_does_not_stop_the_loop(self):
        port = free_port()
        d = Daemon(f"""
programs:
  web:
    cores: 2
    watchdog: 1s
    listen: [{{name: http, address: "127.0.0.1:{port}"}}]
""")
        self.addCleanup(d.close)
        d.wait_log(r"web: all 2 workers ready")
        pids = sorted(d.workers().values())
        control = os.path.join(d.dir, "control.sock")
        big_invalid_config(d.config, port)
        for attempt in range(2):
            reload = subprocess.Popen([CLUSTERD, "reload", "-s", control], text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            answered = 0
            while reload.poll() is None:
                out = subprocess.run([CLUSTERD, "status", "-s", control], capture_output=True,
                                     timeout=10)
                if reload.poll() is None and out.returncode == 0:
                    answered += 1
            text = reload.stdout.read()
            reload.stdout.close()
            print(f"\nreload of a {os.path.getsize(d.config)} byte config: {answered} status "
                  "replies while it was parsed", file=sys.stderr)
            self.assertNotEqual(reload.returncode, 0, text)
            self.assertRegex(text, r"clusterd\.yaml:\d+:\d+: more than 100000 YAML nodes")
            # The loop answered while the file was being parsed (a parse on the loop
            # would have left every status waiting until the reload's reply).
            self.assertGreaterEqual(answered, 3, f"reload {attempt}: {answered} status replies")
            status, _ = http_get(port, "/")
            self.assertEqual(status, 200)
        self.assertEqual(sorted(d.workers().values()), pids)
        self.assertNotRegex(d.log_text(), r"watchdog|not ready")


if __name__ == "__main__":
    unittest.main()

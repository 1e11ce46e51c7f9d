"""End to end: the built clusterd and clusterd-worker over real sockets and signals."""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import unittest

from harness import (CLUSTERD, MISBEHAVE, Daemon, Load, environ_of, free_port, http_get,
                     pid_alive, wait_for)


def web_config(port, workers=2, extra=""):  # noqa: D103
    return f"""
daemon:
  shutdown_timeout: 10s
programs:
  web:
    cores: {workers}
    watchdog: 5s
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
{extra}
"""


class ServeTest(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.daemon = Daemon(web_config(self.port))
        self.addCleanup(self.daemon.close)
        self.daemon.wait_log(r"web: all 2 workers ready")

    def test_every_slot_has_a_worker_that_serves(self):
        workers = wait_for(lambda: len(self.daemon.workers()) == 2 and self.daemon.workers(), 5)
        self.assertEqual(sorted(workers), [0, 1])
        for _ in range(20):
            status, body = http_get(self.port, "/")
            self.assertEqual(status, 200)
            self.assertTrue(body)
        self.assertEqual(http_get(self.port, "/healthz")[0], 200)
        # The CPU-burning demo endpoint is off unless asked for (--cpu-endpoint).
        self.assertEqual(http_get(self.port, "/cpu?ms=5000", timeout=2)[1],
                         b"Hello from clusterd-worker\n")

    def test_worker_environment_is_the_contract(self):
        for slot, pid in self.daemon.workers().items():
            env = environ_of(pid)
            self.assertEqual(env["LISTEN_PID"], str(pid))
            self.assertEqual(env["LISTEN_FDS"], "1")
            self.assertEqual(env["LISTEN_FDNAMES"], "http")
            self.assertEqual(env["CLUSTERD_PROGRAM"], "web")
            self.assertEqual(env["CLUSTERD_WORKER_ID"], str(slot))
            self.assertEqual(env["CLUSTERD_WORKERS"], "2")
            self.assertEqual(env["CLUSTERD_GENERATION"], "1")
            self.assertEqual(env["WATCHDOG_USEC"], "5000000")
            self.assertEqual(env["WATCHDOG_PID"], str(pid))  # sd_watchdog_enabled() reads it
            # Its own socket, which only its uid may reach (see test_notify_hostile).
            self.assertRegex(env["NOTIFY_SOCKET"], r"^/.*\.notify/\d+$|^/run/clusterd/notify-")
            self.assertEqual(os.stat(env["NOTIFY_SOCKET"]).st_mode & 0o777, 0o600)
            expected = {"PATH", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "CLUSTERD_PROGRAM",
                        "CLUSTERD_WORKER_ID", "CLUSTERD_WORKERS", "CLUSTERD_GENERATION",
                        "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CLUSTERD_SCOREBOARD"}
            self.assertEqual(set(env), expected)
            # Its scoreboard record: the memfd after the listeners (the built-in worker maps
            # it and closes that fd), at an offset of its own.
            self.assertRegex(env["CLUSTERD_SCOREBOARD"], r"^4:\d+$")

    def test_kill9_replaces_the_worker_in_its_slot_without_losing_requests(self):
        before = self.daemon.workers()
        victim = before[1]
        with Load(self.port, threads=2) as load:
            time.sleep(0.5)
            os.kill(victim, signal.SIGKILL)
            self.daemon.wait_log(rf"web\[1\]: pid {victim} killed by SIGKILL")
            after = wait_for(lambda: (w := self.daemon.workers()).get(1, victim) != victim and w, 5,
                             what="replacement in slot 1")
            self.daemon.wait_log(rf"web\[1\]: pid {after[1]} ready")
            time.sleep(0.5)
        self.assertEqual(after[0], before[0], "the other slot's worker was left alone")
        self.assertNotEqual(after[1], victim)
        self.assertEqual(environ_of(after[1])["CLUSTERD_WORKER_ID"], "1")
        self.assertGreater(load.ok, 50)
        # Only a connection the killed worker had already accepted may fail: at most one per
        # client thread. Queued connections wait in the master-owned socket for the new worker.
        self.assertLessEqual(len(load.errors), 2, load.errors)


class IsolationTest(unittest.TestCase):
    def test_new_connections_avoid_a_slot_whose_worker_waits_out_its_backoff(self):
        port = free_port()
        # A min_uptime it cannot reach: the kill ends a failing run, backed off 4 s.
        d = Daemon(web_config(port, extra="    backoff: {initial: 4s, max: 4s}\n    min_uptime: 60s"))
        self.addCleanup(d.close)
        d.wait_log(r"web: all 2 workers ready")
        os.kill(d.workers()[1], signal.SIGKILL)
        d.wait_log(r"web\[1\]: .* restarting in 4s")
        # Slot 1's socket keeps what was queued for its replacement, but new connections
        # all go to slot 0 meanwhile: none waits 4 s.
        start = time.monotonic()
        for _ in range(40):
            self.assertEqual(http_get(port, timeout=2)[0], 200)
        self.assertLess(time.monotonic() - start, 3)

    def test_a_worker_holds_only_stdio_and_its_listening_sockets(self):
        # The built-in worker opens its own epoll/eventfd; the idle helper opens nothing. After
        # the listeners comes its program's scoreboard memfd (CLUSTERD_SCOREBOARD), which the
        # idle helper leaves open.
        port2 = free_port()
        d = Daemon(f"""
programs:
  idle:
    command: ["{MISBEHAVE}", ready]
    cores: 2
    listen:
      - {{name: a, address: "127.0.0.1:{free_port()}"}}
      - {{name: b, address: "127.0.0.1:{port2}", reuseport: false}}
""")
        self.addCleanup(d.close)
        d.wait_log(r"idle: all 2 workers ready")
        master_sockets = {os.readlink(f"/proc/{d.pid}/fd/{fd}")
                          for fd in os.listdir(f"/proc/{d.pid}/fd")}
        def fds_of(pid):
            return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}

        for pid in d.workers().values():
            # The master logs "ready" when READY=1 arrives, which can be just before the
            # worker closes the socket it sent it with: allow that one a moment to go.
            try:
                fds = wait_for(lambda: sorted(f := fds_of(pid)) == [0, 1, 2, 3, 4, 5] and f, 2)
            except AssertionError:
                fds = fds_of(pid)
            self.assertEqual(sorted(fds), [0, 1, 2, 3, 4, 5], fds)
            for fd in (3, 4):
                self.assertTrue(fds[fd].startswith("socket:"), fds)
                self.assertIn(fds[fd], master_sockets, "fd 3.. are the master's own listeners")
            self.assertEqual(fds[5], "/memfd:clusterd-scoreboard:idle (deleted)")
            self.assertEqual(environ_of(pid)["CLUSTERD_SCOREBOARD"].split(":")[0], "5")
        # reuseport entry: one socket per slot; shared entry: one socket for both.
        w = d.workers()
        fd3 = {os.readlink(f"/proc/{pid}/fd/3") for pid in w.values()}
        fd4 = {os.readlink(f"/proc/{pid}/fd/4") for pid in w.values()}
        self.assertEqual(len(fd3), 2)
        self.assertEqual(len(fd4), 1)


class LifecycleTest(unittest.TestCase):
    def test_term_stops_everything_and_exits_0(self):
        port = free_port()
        d = Daemon(web_config(port))
        self.addCleanup(d.close)
        d.wait_log(r"web: all 2 workers ready")
        pids = list(d.workers().values())
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(15), 0)
        for pid in pids:
            self.assertFalse(pid_alive(pid), f"worker {pid} outlived the master")
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_kill9_of_the_master_leaves_no_worker(self):
        d = Daemon(web_config(free_port()))
        self.addCleanup(d.close)
        d.wait_log(r"web: all 2 workers ready")
        pids = list(d.workers().values())
        self.assertEqual(len(pids), 2)
        d.signal(signal.SIGKILL)
        d.wait_exit(5)
        wait_for(lambda: not any(pid_alive(p) for p in pids), 5, what="workers to die")

    def test_a_worker_ignoring_term_is_killed_after_stop_timeout(self):
        d = Daemon(f"""
programs:
  stubborn:
    command: ["{MISBEHAVE}", ignore-term]
    cores: 1
    stop_timeout: 500ms
""")
        self.addCleanup(d.close)
        d.wait_log(r"stubborn: all 1 workers ready")
        pid = d.workers()[0]
        start = time.monotonic()
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(10), 0)
        self.assertGreaterEqual(time.monotonic() - start, 0.45)
        self.assertFalse(pid_alive(pid))
        self.assertIn("sending SIGKILL", d.log_text())

    def test_a_crash_loop_is_paced_to_one_start_a_second(self):
        # Each worker writes the time it started, then fails. The exact pace (starts 0.999 to
        # 1.01 s apart, whatever each run lasts) is proven on simulated time in test_pacing;
        # here the real daemon shows it is wired to it, with room for a host that stalls a
        # process now and then: no two starts closer than the pace allows, and the typical
        # gap a second, not backoff.max.
        stamps_dir = tempfile.mkdtemp(prefix="clusterd-pace-")
        self.addCleanup(shutil.rmtree, stamps_dir, True)
        stamps_file = os.path.join(stamps_dir, "starts")
        d = Daemon(f"""
programs:
  crashy:
    command: ["/bin/sh", "-c", "date +%s.%N >> {stamps_file}; exit 3"]
    cores: 2
    backoff: {{initial: 0s, max: 2s}}
""")
        self.addCleanup(d.close)
        d.wait_log(r"crashy\[\d\]: pid \d+ exited with code 3", count=11, timeout=20)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(10), 0)
        with open(stamps_file) as f:
            starts = [float(line) for line in f if line.strip()]
        # Both slots start, fail and restart once at once (the first failure of a run of
        # failures); from then on nothing serves, and the program's starts are paced to one
        # a second, whichever slot's turn it is.
        later = starts[4:]
        gaps = [b - a for a, b in zip(later, later[1:])]
        self.assertGreaterEqual(len(gaps), 6, starts)
        # A start is timed by the worker after its exec: one exec slower than the next
        # shortens that gap by the difference.
        self.assertGreater(min(gaps), 0.8, gaps)
        self.assertLess(statistics.median(gaps), 1.2, gaps)
        self.assertLess(sum(gaps) / len(gaps), 1.6, gaps)
        self.assertIn("restarting in", d.log_text())

    def test_a_crash_storm_is_logged_as_a_summary_not_line_by_line(self):
        # 16 slots failing at once: 32 exits in the first second (each slot's first retry is
        # immediate). The log takes 10 worker events per 5 s window, then one summary line.
        d = Daemon(f"""
programs:
  storm:
    command: ["{MISBEHAVE}", exit, "3"]
    cores: 16
    backoff: {{initial: 0s, max: 2s}}
""")
        self.addCleanup(d.close)
        line = d.wait_log(r"storm: \d+ more worker events in the last \S+ not logged one by "
                          r"one; 0/16 ready; exits since start: exited \d+", timeout=15)[0]
        held_back = int(re.search(r"storm: (\d+) more worker events", line).group(1))
        self.assertGreater(held_back, 0)
        logged = len(re.findall(r"storm\[\d+\]: pid \d+ exited with code 3", d.log_text()))
        exits = int(re.search(r"exits since start: exited (\d+)", line).group(1))
        self.assertLess(logged, exits, line)

    def test_bad_config_exit_code_fails_the_slot(self):
        d = Daemon(f"""
programs:
  misconfigured:
    command: ["{MISBEHAVE}", exit, "78"]
    cores: 1
""")
        self.addCleanup(d.close)
        d.wait_log(r"misconfigured\[0\]: .*bad configuration.*slot failed")
        time.sleep(0.5)
        self.assertEqual(d.log_text().count("exited with code 78"), 1)

    def test_a_worker_never_ready_is_stopped_after_start_timeout_and_replaced(self):
        d = Daemon(f"""
programs:
  slow:
    command: ["{MISBEHAVE}", never-ready]
    cores: 1
    start_timeout: 300ms
""")
        self.addCleanup(d.close)
        # Not waited for: TERM, and the replacement starts at once (the first failure).
        first = d.wait_log(r"slow\[0\]: pid \d+ not ready after 300ms: sent SIGTERM")[0]
        d.wait_log(r"slow\[0\]: abandoned pid \d+ exited with code 0", count=2, timeout=10)
        pid = int(re.search(r"pid (\d+) not ready", first).group(1))
        self.assertFalse(pid_alive(pid))


class MemoryLimitTest(unittest.TestCase):
    def test_a_worker_over_memory_limit_is_replaced_first_then_recycled(self):
        d = Daemon(f"""
programs:
  leaky:
    command: ["{MISBEHAVE}", leak, "40", "60"]
    cores: 1
    memory_limit: 30M
""")
        self.addCleanup(d.close)
        d.wait_log(r"leaky: all 1 workers ready")
        first = d.workers()[0]
        d.wait_log(rf"leaky\[0\]: pid {first} uses \d+ MiB, over memory_limit 30 MiB", timeout=10)
        # Any exit code: under LeakSanitizer the deliberately leaking helper exits 1.
        d.wait_log(rf"leaky\[0\]: pid {first} exited with code \d+ .*recycled: memory_limit",
                   timeout=10)
        log = d.log_text()
        # The replacement was ready before the old worker was told to stop.
        over = log.index("over memory_limit")
        ready = re.search(r"leaky\[0\]: pid (\d+) ready", log[over:])
        self.assertIsNotNone(ready, log)
        self.assertNotEqual(int(ready.group(1)), first)
        self.assertLess(over + ready.start(), log.index(f"pid {first} exited"))


class OutputFileTest(unittest.TestCase):
    def test_output_file_gets_the_workers_output_and_is_reopened_on_usr1(self):
        d = Daemon()
        self.addCleanup(d.close)
        out = os.path.join(d.dir, "web.out")
        d.write_config(web_config(free_port(), workers=1).replace(
            "    watchdog: 5s", f"    watchdog: 5s\n    output: {out}"))
        d.launch()
        d.wait_log(r"web: all 1 workers ready")
        wait_for(lambda: "[web:0]" in open(out).read(), 5, what="worker output in the file")
        self.assertNotIn("[web:0]", d.log_text())
        os.rename(out, out + ".1")
        d.signal(signal.SIGUSR1)
        d.wait_log(r"output files reopened")
        os.kill(d.workers()[0], signal.SIGKILL)  # its replacement writes to the new file
        wait_for(lambda: os.path.exists(out) and "[web:0]" in open(out).read(), 5,
                 what="output in the reopened file")


    def test_output_capture_puts_whole_worker_lines_in_the_daemon_log(self):
        d = Daemon(web_config(free_port(), workers=2).replace(
            "    watchdog: 5s", "    watchdog: 5s\n    output: capture"))
        self.addCleanup(d.close)
        d.wait_log(r"web: all 2 workers ready")
        for slot in (0, 1):
            d.wait_log(rf"info web\[{slot}\] \[web:{slot}\] info: ")


class CheckTest(unittest.TestCase):
    def run_check(self, text):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"clusterd-check-{os.getpid()}.yaml")
        with open(path, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        r = subprocess.run([CLUSTERD, "check", "-c", path], capture_output=True, text=True)
        return path, r

    def test_check_reports_file_line_column_and_fails(self):
        path, r = self.run_check("programs:\n  web:\n    cores: lots\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"{path}:3:12:", r.stderr)
        self.assertIn("cores", r.stderr)

    def test_the_shipped_example_configs_are_valid(self):
        root = os.path.join(os.path.dirname(__file__), "..", "..")
        r = subprocess.run([CLUSTERD, "check", "-c", os.path.join(root, "etc/clusterd.yaml")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(root, "etc/kubernetes/deployment.yaml")) as f:
            block = f.read().split("clusterd.yaml: |\n", 1)[1].split("---", 1)[0]
        path, r = self.run_check("\n".join(line[4:] for line in block.splitlines()))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("web:", r.stdout)

    def test_check_summarises_a_valid_file(self):
        path, r = self.run_check(web_config(8080, workers=3))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("web: 3 workers", r.stdout)
        self.assertIn("http=127.0.0.1:8080", r.stdout)


if __name__ == "__main__":
    unittest.main()

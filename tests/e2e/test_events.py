"""End to end: the event stream (`clusterd events`), hooks on events, and `clusterd logs`."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import CLUSTERD, MISBEHAVE, Daemon, free_port, http_get, sample, wait_for

# A hook that records its environment (CLUSTERD_*) into DIR/EVENT.SEQ.
RECORDER = """import os, sys
env = {k: v for k, v in os.environ.items() if k.startswith("CLUSTERD_")}
path = os.path.join(sys.argv[1], env["CLUSTERD_EVENT"] + "." + env["CLUSTERD_SEQ"])
with open(path + ".tmp", "w") as f:
    for k in sorted(env):
        f.write(k + "=" + env[k].replace("\\n", "\\\\n") + "\\n")
os.rename(path + ".tmp", path)
"""


def read_env(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            out[k] = v
    return out


class Follower:
    """`clusterd events|logs ... --json` (or plain) running in the background, its lines kept."""

    def __init__(self, args):
        self.proc = subprocess.Popen([CLUSTERD, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.err = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True).start()

    def _read(self, stream, into):
        for line in stream:
            with self.lock:
                into.append(line.rstrip("\n"))

    def wait_following(self):
        wait_for(lambda: any("following" in l for l in self.err), 5,
                 what="the client to say it follows")

    def events(self):
        with self.lock:
            return [json.loads(l) for l in self.lines if l.startswith("{")]

    def wait_event(self, pred, timeout=10, what="event"):
        def found():
            return next((e for e in self.events() if pred(e)), None)
        try:
            return wait_for(found, timeout, what=what)
        except AssertionError:
            raise AssertionError(f"{what} not seen; got:\n" + "\n".join(self.lines))

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except ValueError:  # a reader thread is in the middle of it
                pass


def line_count(path):
    try:
        with open(path) as f:
            return f.read().count("\n")
    except FileNotFoundError:
        return 0


class EventsTest(unittest.TestCase):
    def start(self, config):
        self.d = Daemon(config)
        self.addCleanup(self.d.close)
        self.sock = os.path.join(self.d.dir, "control.sock")
        wait_for(lambda: os.path.exists(self.sock), 5, what="control socket")

    def ctl(self, *args, timeout=30):
        return subprocess.run([CLUSTERD, *args, "-s", self.sock], capture_output=True, text=True,
                              timeout=timeout)

    def follow(self, *args):
        f = Follower([*args, "-s", self.sock])
        self.addCleanup(f.close)
        return f

    def test_events_follows_a_crash_and_its_restart(self):
        self.start(f"""
programs:
  app:
    cores: 2
    command: ["{MISBEHAVE}", "ready"]
""")
        self.d.wait_log(r"app: all 2 workers ready")
        f = self.follow("events", "--json")
        f.wait_following()
        victim = self.d.workers()[0]
        os.kill(victim, signal.SIGKILL)
        exited = f.wait_event(lambda e: e["event"] == "exited" and e.get("pid") == victim,
                              what="the exit of the killed worker")
        self.assertEqual(exited["program"], "app")
        self.assertEqual(exited["slot"], 0)
        self.assertEqual(exited["cause"], "crashed")
        self.assertEqual(exited["signal"], "SIGKILL")
        self.assertNotIn("code", exited)
        restarted = f.wait_event(lambda e: e["event"] == "restarted" and e["slot"] == 0,
                                 what="the slot's restart")
        ready = f.wait_event(lambda e: e["event"] == "ready" and e.get("pid") == restarted["pid"],
                             what="the new worker ready")
        self.assertLess(exited["seq"], restarted["seq"])
        self.assertLess(restarted["seq"], ready["seq"])
        # The human form, and the last events asked for with -n.
        r = self.ctl("events", "-n", "3", "--no-follow")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 3, r.stdout)
        self.assertRegex(lines[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z exited\s+app\[0\] "
                                   rf"pid {victim} killed by SIGKILL \(crashed\)$")
        self.assertRegex(lines[2], rf"ready\s+app\[0\] pid {restarted['pid']} ready")
        # A second follower of another program sees none of app's events.
        other = self.ctl("events", "nosuch", "--no-follow")
        self.assertNotEqual(other.returncode, 0)
        self.assertIn('no program "nosuch"', other.stderr)

    def test_a_follower_that_leaves_is_forgotten_and_many_can_follow(self):
        metrics = free_port()
        self.start(f"""
daemon:
  metrics: "127.0.0.1:{metrics}"
programs:
  app:
    cores: 1
    command: ["{MISBEHAVE}", "ready"]
""")
        self.d.wait_log(r"app: all 1 workers ready")
        followers = [self.follow("events", "--json") for _ in range(5)]
        for f in followers:
            f.wait_following()

        def count():
            _, body = http_get(metrics, "/metrics")
            return sample(body.decode(), "clusterd_feed_followers", feed="events")

        self.assertEqual(count(), 5)
        for f in followers[:3]:
            f.close()
        wait_for(lambda: count() == 2, 5, what="the followers that left to be forgotten")
        os.kill(self.d.workers()[0], signal.SIGKILL)
        for f in followers[3:]:
            f.wait_event(lambda e: e["event"] == "exited", what="the exit, for each follower")

    def test_hooks_get_the_event_and_a_hanging_hook_delays_nothing(self):
        out = os.path.join(self.d_dir(), "hooks")
        os.mkdir(out)
        recorder = os.path.join(self.d_dir(), "recorder.py")
        with open(recorder, "w") as fh:
            fh.write(RECORDER)
        metrics = free_port()
        # The worker says something, then crashes: its last words reach the exit hook.
        crasher = (f'echo "starting up"; echo "something broke" >&2; '
                   f'exec {MISBEHAVE} crash 300')
        self.start(f"""
daemon:
  metrics: "127.0.0.1:{metrics}"
programs:
  app:
    cores: 1
    command: ["/bin/sh", "-c", '{crasher}']
    backoff: {{initial: 0s}}
    hooks:
      - on: ready
        command: ["/bin/sleep", "60"]
        timeout: 1s
      - on: [exited]
        command: ["{sys.executable}", "{recorder}", "{out}"]
""")
        f = self.follow("events", "--json")
        f.wait_following()
        # The worker crashes every ~300 ms: supervision goes on at that pace while each
        # ready hook hangs until its 1 s timeout.
        started = time.monotonic()
        f.wait_event(lambda e: e["event"] == "restarted" and e.get("message", "").endswith(
            "(restart 3)"), timeout=10, what="three restarts")
        self.assertLess(time.monotonic() - started, 3.0,
                        "restarts were delayed by the hanging hook")
        files = wait_for(lambda: sorted(os.listdir(out)) or None, 10,
                         what="the exit hook to run (after the hanging one's timeout)")
        env = read_env(os.path.join(out, files[0]))
        self.assertEqual(env["CLUSTERD_EVENT"], "exited")
        self.assertEqual(env["CLUSTERD_PROGRAM"], "app")
        self.assertEqual(env["CLUSTERD_SLOT"], "0")
        self.assertEqual(env["CLUSTERD_CAUSE"], "crashed")
        self.assertEqual(env["CLUSTERD_SIGNAL"], "SIGSEGV")
        self.assertNotIn("CLUSTERD_EXIT_CODE", env)
        self.assertRegex(env["CLUSTERD_PID"], r"^\d+$")
        self.assertIn("something broke", env["CLUSTERD_LAST_OUTPUT"])
        self.assertIn("starting up", env["CLUSTERD_LAST_OUTPUT"])
        self.assertRegex(env["CLUSTERD_TIME"], r"^\d{4}-\d\d-\d\dT")
        # The hook ran for exactly the event recorded in the stream.
        exited = [e for e in f.events() if e["event"] == "exited"]
        self.assertIn(int(env["CLUSTERD_PID"]), [e["pid"] for e in exited])

        def runs(result):
            _, body = http_get(metrics, "/metrics")
            return sample(body.decode(), "clusterd_hook_runs_total", program="app",
                          result=result) or 0

        wait_for(lambda: runs("timeout") >= 2, 10, what="the hanging hooks to time out")
        wait_for(lambda: runs("ok") >= 1, 10, what="an exit hook counted ok")
        self.d.wait_log(r"app ready hook: pid \d+ killed after its timeout")
        self.assertEqual(runs("failed"), 0)

    def test_logs_shows_the_last_lines_then_follows(self):
        self.start("""
programs:
  talker:
    cores: 2
    ready: started
    start_time: 100ms
    command: ["/bin/sh", "-c", "i=0; while :; do echo \\"line $i\\"; i=$((i+1)); sleep 0.05; done"]
  quiet:
    cores: 1
    ready: started
    start_time: 100ms
    output: inherit
    command: ["/bin/sleep", "600"]
""")
        wait_for(lambda: self.ctl("logs", "talker", "-n", "30").stdout.count("\n") >= 30, 10,
                 what="30 lines of output kept")
        r = self.ctl("logs", "talker", "-n", "30")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 30)
        for line in lines:
            self.assertRegex(line, r"^talker\[[01]\] line \d+$")
        self.assertEqual({l.split()[0] for l in lines}, {"talker[0]", "talker[1]"})
        # Follow: lines printed after the request arrive.
        f = self.follow("logs", "talker", "-f", "-n", "0", "--json")
        f.wait_following()
        first = f.wait_event(lambda e: "line" in e, what="a new line")
        self.assertEqual(first["program"], "talker")
        last_number = max(int(l.split()[-1]) for l in lines if l.startswith("talker[0]"))
        later = f.wait_event(lambda e: e["slot"] == 0 and int(e["line"].split()[-1]) > last_number,
                             what="a line printed after the request")
        self.assertIn("line", later)
        # A program whose output is not captured says so.
        q = self.ctl("logs", "quiet")
        self.assertNotEqual(q.returncode, 0)
        self.assertIn("not captured (output: inherit)", q.stderr)

    def test_logs_of_an_output_file_reads_the_file(self):
        d = self.d_dir()
        path = os.path.join(d, "app.log")
        self.start(f"""
programs:
  app:
    cores: 1
    ready: started
    start_time: 100ms
    output: {path}
    command: ["/bin/sh", "-c", "i=0; while :; do echo \\"file line $i\\"; i=$((i+1)); sleep 0.05; done"]
""")
        wait_for(lambda: line_count(path) >= 10, 10,
                 what="10 lines in the output file")
        r = self.ctl("logs", "app", "-n", "5")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 5, r.stdout)
        for line in lines:
            self.assertRegex(line, r"^file line \d+$")
        f = self.follow("logs", "app", "-f", "-n", "1")
        n = int(lines[-1].split()[-1])
        wait_for(lambda: any(re.fullmatch(r"file line \d+", l) and int(l.split()[-1]) > n + 5
                             for l in list(f.lines)), 10, what="lines appended to the file")

    def d_dir(self):
        """A temp dir of the test's own (hook output, output files), removed at its end."""
        if not hasattr(self, "_tmp"):
            self._tmp = tempfile.mkdtemp(prefix="clusterd-e2e-events-")
            self.addCleanup(shutil.rmtree, self._tmp, True)
        return self._tmp


if __name__ == "__main__":
    unittest.main()

"""End to end: clusterd supervising existing programs (issue 4): a worker written with the
C++ SDK, Python and Node.js servers, user/group drop, watchdog, exec failure, grandchildren."""

import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import signal
import sys
import threading
import time
import unittest
from datetime import datetime

from harness import (BIN, MISBEHAVE, WORKER, Daemon, free_port, http_get, pid_alive,
                     wait_for)

SDK_EXAMPLE = os.path.join(BIN, "clusterd-sdk-example")
NODE = "/usr/bin/node"
PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")


def program_config(name, command, port, extra="", workers=2):
    args = ", ".join(f'"{a}"' for a in command)
    return f"""
daemon:
  shutdown_timeout: 10s
programs:
  {name}:
    command: [{args}]
    cores: {workers}
    stop_timeout: 3s
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
{extra}
"""


def bodies(port, n):
    return [http_get(port, "/")[1].decode() for _ in range(n)]


class SupervisedProgram:
    """Shared checks: 2 workers serve, a kill -9'd one is replaced, TERM stops cleanly."""

    def check_serves_and_survives_kill9(self, d, name, port, body_pattern):
        d.wait_log(rf"{name}: all 2 workers ready", timeout=20)
        workers = wait_for(lambda: len(d.workers()) == 2 and d.workers(), 5, what="2 workers")
        for body in bodies(port, 10):
            self.assertRegex(body, body_pattern)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        d.wait_log(rf"{name}\[0\]: pid {victim} killed by SIGKILL")
        after = wait_for(lambda: (w := d.workers()).get(0, victim) != victim and w, 10,
                         what="replacement in slot 0")
        d.wait_log(rf"{name}\[0\]: pid {after[0]} ready", timeout=20)
        self.assertEqual(after[1], workers[1])
        served = bodies(port, 20)
        for body in served:
            self.assertRegex(body, body_pattern)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(15), 0)
        self.assertFalse(any(pid_alive(p) for p in after.values()))
        return served


class SdkExampleTest(unittest.TestCase, SupervisedProgram):
    def test_sdk_example_serves_heartbeats_and_is_replaced(self):
        port = free_port()
        d = Daemon(program_config("sdk", [SDK_EXAMPLE], port, "    watchdog: 1s\n"))
        self.addCleanup(d.close)
        d.wait_log(r"sdk: all 2 workers ready")
        # Heartbeats from its loop keep it alive well past the 1s watchdog.
        time.sleep(2.5)
        self.assertNotIn("sent no heartbeat", d.log_text())
        served = self.check_serves_and_survives_kill9(d, "sdk", port,
                                                      r"^sdk_example worker [01] pid \d+\n$")
        self.assertEqual({b.split()[2] for b in served}, {"0", "1"}, "both slots serve")
        self.assertIn("exited with code 0", d.log_text())  # graceful stop after TERM


class PythonServerTest(unittest.TestCase, SupervisedProgram):
    def test_python_stdlib_server_takes_fd3_notifies_and_is_replaced(self):
        port = free_port()
        d = Daemon(program_config("py", [sys.executable, os.path.join(PROGRAMS, "py_server.py")],
                                  port, "    ready: notify\n    watchdog: 2s\n"))
        self.addCleanup(d.close)
        served = self.check_serves_and_survives_kill9(d, "py", port,
                                                      r"^python worker [01] pid \d+ port \d+\n$")
        self.assertNotIn("sent no heartbeat", d.log_text())
        self.assertIn("exited with code 0", d.log_text())  # graceful stop on TERM
        print(f"\npython workers served: {sorted(set(b.split()[2] for b in served))}")


    def test_listen_fd_placeholder_hands_the_second_listener_to_the_program(self):
        http_port, admin_port = free_port(), free_port()
        script = os.path.join(PROGRAMS, "py_server.py")
        d = Daemon(f"""
programs:
  py:
    command: ["{sys.executable}", "{script}", "--fd={{listen.admin.fd}}"]
    cores: 1
    listen:
      - {{name: http, address: "127.0.0.1:{http_port}"}}
      - {{name: admin, address: "127.0.0.1:{admin_port}"}}
""")
        self.addCleanup(d.close)
        d.wait_log(r"py: all 1 workers ready")
        pid = d.workers()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            self.assertEqual(f.read().split(b"\0")[2], b"--fd=4")
        self.assertRegex(http_get(admin_port, "/")[1].decode(), rf" port {admin_port}\n$")

    def test_an_unknown_listener_in_a_placeholder_is_a_config_error(self):
        d = Daemon(f"""
programs:
  py:
    command: [/bin/true, "--fd={{listen.nope.fd}}"]
    listen:
      - {{name: http, address: "127.0.0.1:{free_port()}"}}
""")
        self.addCleanup(d.close)
        self.assertEqual(d.wait_exit(10), 3)
        self.assertRegex(d.log_text(), r'clusterd.yaml:4:26: programs.py.command\[1\]: unknown '
                                       r'listener "nope" in \{listen.nope.fd\} \(listeners: http\)')


@unittest.skipUnless(os.access(NODE, os.X_OK), f"{NODE} not installed")
class NodeServerTest(unittest.TestCase, SupervisedProgram):
    def test_node_http_server_takes_fd3_and_is_replaced(self):
        # Node cannot send to a unix datagram socket without a native module: ready: started.
        port = free_port()
        d = Daemon(program_config("node", [NODE, os.path.join(PROGRAMS, "node_server.js")], port,
                                  "    ready: started\n    start_time: 500ms\n"))
        self.addCleanup(d.close)
        self.check_serves_and_survives_kill9(d, "node", port, r"^node worker [01] pid \d+\n$")
        self.assertIn("exited with code 0", d.log_text())


class OffloadTest(unittest.TestCase):
    def test_cpu_work_runs_off_the_loop(self):
        port = free_port()
        d = Daemon(f"""
programs:
  web:
    cores: 1
    command: ["{WORKER}", --cpu-endpoint]
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
        self.addCleanup(d.close)
        d.wait_log(r"web: all 1 workers ready")
        result = {}

        def burn():
            start = time.monotonic()
            result["cpu"] = http_get(port, "/cpu?ms=1500", timeout=20)
            result["took"] = time.monotonic() - start

        t = threading.Thread(target=burn)
        t.start()
        time.sleep(0.3)  # the burn is under way on the pool
        latencies = []
        for _ in range(10):
            start = time.monotonic()
            self.assertEqual(http_get(port, "/healthz"), (200, b"ok\n"))
            latencies.append(time.monotonic() - start)
        t.join(20)
        print(f"\n/healthz during a 1500ms /cpu burn: max {max(latencies) * 1000:.1f} ms")
        self.assertLess(max(latencies), 0.5, "the one worker's loop stayed responsive")
        self.assertEqual(result["cpu"][0], 200)
        self.assertRegex(result["cpu"][1].decode(), r"^burned 1[45]\d\d ms of CPU off the loop")
        self.assertGreaterEqual(result["took"], 1.4)
        self.assertEqual(http_get(port, "/cpu?ms=99999")[0], 400)


TEST_USER = "clusterd-test"


def ensure_test_user():
    """The system user and group clusterd-test (created when missing); (uid, gid)."""
    if subprocess.run(["getent", "group", TEST_USER], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", "--system", TEST_USER], check=True)
    if subprocess.run(["getent", "passwd", TEST_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--gid", TEST_USER,
                        "--shell", "/usr/sbin/nologin", TEST_USER], check=True)
    return pwd.getpwnam(TEST_USER).pw_uid, grp.getgrnam(TEST_USER).gr_gid


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def proc_limits(pid):
    """{"Max open files": ("1000", "2000"), ...} from /proc/PID/limits."""
    out = {}
    with open(f"/proc/{pid}/limits") as f:
        for line in f.readlines()[1:]:
            name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
            out[name] = (soft, hard)
    return out


class CredentialsTest(unittest.TestCase):
    @unittest.skipUnless(os.geteuid() == 0, "needs root to drop privileges")
    def test_workers_run_as_the_configured_user_and_group(self):
        uid, gid = ensure_test_user()
        d = Daemon(f"""
programs:
  dropped:
    command: ["{MISBEHAVE}", ready]
    cores: 2
    user: {TEST_USER}
    group: {TEST_USER}
""")
        self.addCleanup(d.close)
        d.wait_log(r"dropped: all 2 workers ready")
        workers = d.workers()
        self.assertEqual(len(workers), 2)
        for pid in workers.values():
            st = proc_status(pid)
            self.assertEqual(st["Uid"].split(), [str(uid)] * 4, st["Uid"])
            self.assertEqual(st["Gid"].split(), [str(gid)] * 4, st["Gid"])
            self.assertEqual(st["Groups"].split(), [str(gid)], "no supplementary group of root")
        master = proc_status(d.pid)
        self.assertEqual(master["Uid"].split()[0], "0", "the master keeps its own credentials")


class RlimitsTest(unittest.TestCase):
    def test_rlimits_reach_the_worker(self):
        d = Daemon(f"""
programs:
  limited:
    command: ["{MISBEHAVE}", ready]
    cores: 1
    rlimits:
      nofile: {{soft: 1000, hard: 2000}}
      core: 0
      as: 4G
""")
        self.addCleanup(d.close)
        d.wait_log(r"limited: all 1 workers ready")
        limits = proc_limits(d.workers()[0])
        self.assertEqual(limits["Max open files"], ("1000", "2000"))
        self.assertEqual(limits["Max core file size"], ("0", "0"))
        self.assertEqual(limits["Max address space"], (str(4 << 30), str(4 << 30)))
        self.assertNotEqual(proc_limits(d.pid)["Max open files"], ("1000", "2000"))


def log_time(line):
    return datetime.strptime(line[:26], "%Y-%m-%d %H:%M:%S.%f")


class WatchdogTest(unittest.TestCase):
    def test_a_blocked_loop_is_detected_killed_and_replaced(self):
        port = free_port()
        d = Daemon(f"""
programs:
  stuck:
    command: ["{WORKER}", --debug-block-after, "300"]
    cores: 1
    watchdog: 1s
    stop_timeout: 1s
    rlimits: {{core: 0}}     # SIGABRT must not leave core files behind
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
        self.addCleanup(d.close)
        ready = d.wait_log(r"stuck\[0\]: pid \d+ ready after")[0]
        first = int(re.search(r"pid (\d+) ready", ready).group(1))
        # The worker's own log has no timestamp under clusterd: note when its line appears.
        wait_for(lambda: "blocking the event loop forever" in d.log_text(), 5, interval=0.005,
                 what="the loop to block")
        blocked_at = datetime.now()
        detected = d.wait_log(rf"stuck\[0\]: pid {first} sent no heartbeat for 1s", timeout=5)[0]
        self.assertIn("SIGABRT", detected)
        exited = d.wait_log(rf"stuck\[0\]: abandoned pid {first} killed by SIGABRT", timeout=5)[0]
        replaced = d.wait_log(r"stuck\[0\]: pid (?!%d)\d+ ready after" % first, timeout=10)[0]
        self.assertFalse(pid_alive(first))
        after_ready = (log_time(detected) - log_time(ready)).total_seconds()
        after_block = (log_time(detected) - blocked_at).total_seconds()
        to_replacement = (log_time(replaced) - blocked_at).total_seconds()
        print(f"\nwatchdog 1s (heartbeat every 0.5s), loop blocked 300ms after start: "
              f"detected {after_block:.3f}s after the block, {after_ready:.3f}s after READY; "
              f"exit seen {(log_time(exited) - log_time(detected)).total_seconds():.3f}s "
              f"after SIGABRT; replacement ready {to_replacement:.3f}s after the block")
        # The last heartbeat came at most 0.5s before the block: detection within (0.5, 1.0]
        # seconds of it, plus timer and polling slop.
        self.assertGreater(after_block, 0.4)
        self.assertLess(after_block, 1.5)
        self.assertGreaterEqual(after_ready, 0.99)


    def test_a_worker_that_stops_heartbeating_is_replaced(self):
        d = Daemon(f"""
programs:
  silent:
    command: ["{MISBEHAVE}", stop-heartbeat, "4"]
    cores: 1
    watchdog: 600ms
    stop_timeout: 500ms
    rlimits: {{core: 0}}
""")
        self.addCleanup(d.close)
        ready = d.wait_log(r"silent\[0\]: pid \d+ ready after")[0]
        first = int(re.search(r"pid (\d+) ready", ready).group(1))
        d.wait_log(rf"misbehave: pid {first} stops heartbeating")
        detected = d.wait_log(rf"silent\[0\]: pid {first} sent no heartbeat for 600ms", timeout=5)[0]
        d.wait_log(rf"silent\[0\]: abandoned pid {first} killed by SIGABRT", timeout=5)
        d.wait_log(r"silent\[0\]: pid (?!%d)\d+ ready after" % first, timeout=10)
        # Heartbeats at READY + 0, 0.3, 0.6, 0.9s, none after: detection due 0.6s after the
        # last one, 1.5s after READY; never while it was still beating.
        lifetime = (log_time(detected) - log_time(ready)).total_seconds()
        print(f"\nwatchdog 600ms, 4 heartbeats 300ms apart then silence: detected "
              f"{lifetime:.3f}s after READY (due at 1.5s: last heartbeat 0.9s + 0.6s)")
        self.assertGreater(lifetime, 1.45)
        self.assertLess(lifetime, 1.9)


class ExecFailureTest(unittest.TestCase):
    def test_a_missing_binary_at_start_is_a_clear_start_up_error(self):
        d = Daemon("""
programs:
  ghost:
    command: ["/nonexistent/clusterd-no-such-binary"]
    cores: 1
""")
        self.addCleanup(d.close)
        # Refused as an invalid config (exit 3), at the line of the command, before anything
        # starts: `clusterd check` finds the same error.
        self.assertEqual(d.wait_exit(10), 3)
        self.assertIn(f'{d.config}:4:15: programs.ghost.command[0]: executable '
                      '"/nonexistent/clusterd-no-such-binary" not found', d.log_text())

    def test_a_binary_that_vanishes_is_reported_and_backs_off(self):
        tmp = tempfile.mkdtemp(prefix="clusterd-exec-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        binary = os.path.join(tmp, "worker")
        shutil.copy(MISBEHAVE, binary)
        d = Daemon(f"""
programs:
  vanishing:
    command: ["{binary}", ready]
    cores: 1
    backoff: {{initial: 0s, max: 2s}}
""")
        self.addCleanup(d.close)
        d.wait_log(r"vanishing: all 1 workers ready")
        os.unlink(binary)
        os.kill(d.workers()[0], signal.SIGKILL)
        lines = d.wait_log(rf'execve\("{binary}"\) failed in pid \d+: No such file or directory',
                           count=5, timeout=10)
        stamps = [log_time(l) for l in lines]
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
        print(f"\nexec failures, gaps between attempts: {[round(g, 3) for g in gaps]}")
        # Nothing serves: one attempt a second (backoff.max 2s would allow sparser ones).
        for g in gaps[1:]:
            self.assertGreater(g, 0.9, gaps)
            self.assertLess(g, 2.3, gaps)
        self.assertRegex(d.log_text(), r"vanishing\[0\]: pid \d+ exited with code 127")


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def ppid_and_pgid(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2])


class GrandchildrenTest(unittest.TestCase):
    def start(self, then):
        d = Daemon(f"""
daemon:
  shutdown_timeout: 5s
programs:
  family:
    command: ["{MISBEHAVE}", spawn-grandchildren, "2", {then}]
    cores: 1
    restart: never
    stop_timeout: 500ms
    rlimits: {{core: 0}}
""")
        self.addCleanup(d.close)
        d.wait_log(r"family: all 1 workers ready")
        worker = d.workers()[0]
        grandchildren = wait_for(lambda: len(c := children_of(worker)) == 2 and c, 5,
                                 what="2 grandchildren")
        # Whatever the outcome, none of them outlives the test.
        self.addCleanup(lambda: [os.kill(p, signal.SIGKILL) for p in grandchildren if pid_alive(p)])
        return d, worker, grandchildren

    def test_stop_escalation_kills_the_workers_whole_process_group(self):
        d, worker, grandchildren = self.start("ignore-term")
        for p in grandchildren:
            self.assertEqual(ppid_and_pgid(p), (worker, worker))
        d.signal(signal.SIGTERM)  # ignored by the worker and its children: KILL after 500ms
        self.assertEqual(d.wait_exit(10), 0)
        self.assertIn("sending SIGKILL", d.log_text())
        wait_for(lambda: not any(pid_alive(p) for p in grandchildren), 5,
                 what="the grandchildren to die with the group")

    def test_a_crashed_worker_leaves_no_grandchild(self):
        # However a worker ends, the master kills what it left in its process group.
        d, worker, grandchildren = self.start('crash, "300"')
        d.wait_log(rf"family\[0\]: pid {worker} killed by SIGSEGV")
        time.sleep(0.3)
        survivors = [p for p in grandchildren if pid_alive(p)]
        if survivors:
            facts = {p: ppid_and_pgid(p) for p in survivors}
            print(f"\nafter worker {worker} crashed, master {d.pid}: grandchildren alive "
                  f"(pid: (ppid, pgid)) {facts}")
        self.assertEqual(survivors, [])


if __name__ == "__main__":
    unittest.main()

"""End to end: `clusterd upgrade` and SIGUSR2 re-exec the master in its own pid, under load,
with the built-in worker and with a foreign (Python) one. clusterd-next is the same master
built as version X.Y.Z+next (daemon/CMakeLists.txt)."""

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import (BIN, CLUSTERD, MISBEHAVE, Daemon, Load, Wrk, free_port, http_get, sample,
                     wait_for)

NEXT = os.path.join(BIN, "clusterd-next")
PY_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs", "py_server.py")


def config(d, port, metrics, program, daemon=""):
    return f"""
daemon:
  control: {d}/control.sock
  state_dir: {d}/state
  metrics: 127.0.0.1:{metrics}
{daemon}
programs:
  web:
{program}
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
"""


BUILTIN = "    cores: 2"
PYTHON = f"""    command: ["{sys.executable}", "{PY_SERVER}"]
    cores: 2
    output: capture"""


@unittest.skipUnless(os.path.exists(NEXT), "clusterd-next is built with BUILD_TESTING")
class UpgradeTest(unittest.TestCase):
    def start(self, program=BUILTIN, ready=r"web: all 2 workers ready", daemon=""):
        self.port = free_port()
        self.metrics = free_port()
        self.d = Daemon()
        self.addCleanup(self.d.close)
        self.d.write_config(config(self.d.dir, self.port, self.metrics, program, daemon))
        self.d.launch()
        self.d.wait_log(ready)
        wait_for(lambda: os.path.exists(self.sock), 5, what="control socket")

    @property
    def sock(self):
        return os.path.join(self.d.dir, "control.sock")

    def ctl(self, *args, timeout=60):
        return subprocess.run([CLUSTERD, *args, "-s", self.sock], capture_output=True, text=True,
                              timeout=timeout)

    def upgrade(self, binary, ok=True):
        r = self.ctl("upgrade", "--binary", binary, "--json")
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        final = lines[-1] if lines else {}
        if ok:
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + self.d.log_text()[-3000:])
            self.assertTrue(final.get("ok"), final)
        else:
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertFalse(final.get("ok"), final)
        return final

    def daemon_status(self):
        r = self.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])["status"]

    def version(self, binary):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        return out.split()[-1]

    def script(self, name, body):
        """An executable file in the daemon's directory."""
        path = os.path.join(self.d.dir, name)
        with open(path, "w") as f:
            f.write(body)
        os.chmod(path, 0o755)
        return path

    def slow_next(self):
        """clusterd-next behind a wrapper that sleeps 0.5 s after the exec, before it resumes."""
        return self.script("slow-next", f"""#!{sys.executable}
import os, sys, time
if "--resume-state-fd" in sys.argv:
    time.sleep(0.5)
os.execv("{NEXT}", ["{NEXT}"] + sys.argv[1:])
""")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.d.pid}/fd"))

    def test_upgrade_under_load_keeps_workers_and_requests(self):
        self.start()
        before = self.d.workers()
        self.assertEqual(len(before), 2)
        fds = self.fd_count()
        old, new = self.version(CLUSTERD), self.version(NEXT)
        self.assertNotEqual(old, new)
        wrk = Wrk(self.port, 6)
        with Load(self.port, threads=2) as load:  # a new connection per request
            time.sleep(0.5)
            # Two in a row each way: next, back, next, back.
            for k, binary in enumerate([NEXT, CLUSTERD, NEXT, CLUSTERD]):
                reply = self.upgrade(binary)
                expect = new if binary == NEXT else old
                self.assertEqual(reply["version"], expect)
                self.assertEqual(reply["upgrades"], k + 1)
                self.assertEqual(sorted(reply["pids"]), sorted(before.values()))
                self.assertEqual(self.daemon_status()["daemon"]["version"], expect)
                self.assertEqual(self.d.workers(), before)
                time.sleep(0.3)
            time.sleep(0.5)
        requests, errors, out = wrk.result()
        self.assertEqual(load.errors, [], load.errors[:5])
        self.assertGreater(load.ok, 50)
        self.assertGreater(requests, 1000, out)
        self.assertEqual(errors, 0, out)
        self.assertEqual(self.d.proc.poll(), None)  # the same pid all along
        # It still looks like what was started: `run` and its arguments (then the state's fd).
        with open(f"/proc/{self.d.pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")[:-1]
        self.assertEqual(cmdline[1:4], [b"run", b"-c", self.d.config.encode()], cmdline)
        self.assertEqual(self.fd_count(), fds, os.listdir(f"/proc/{self.d.pid}/fd"))
        status = self.daemon_status()
        self.assertEqual(status["daemon"]["upgrades"], 4)
        self.assertEqual([s["restarts"] for s in status["programs"][0]["slots"]], [0, 0])
        metrics = http_get(self.metrics, "/metrics")[1]
        self.assertEqual(sample(metrics, "clusterd_upgrades_total"), 4)
        self.assertEqual(sample(metrics, "clusterd_build_info", version=old), 1)

    def test_upgrades_in_a_crash_storm_lose_track_of_nothing(self):
        # web serves under load while `storm` crash-loops (SIGSEGV 150 ms after READY) and
        # `hung` stops heartbeating (watchdog, abandoned, killed): ten upgrades in the middle
        # of it. Every fault goes on being handled, and in the end the master's children are
        # exactly the workers it knows: nothing handed over was lost or left behind.
        extra = f"""
  storm:
    command: ["{MISBEHAVE}", crash, "150"]
    cores: 2
    output: capture
    backoff: {{initial: 50ms, max: 200ms}}
  hung:
    command: ["{MISBEHAVE}", stop-heartbeat, "2"]
    cores: 1
    watchdog: 1s
    abort_timeout: 300ms
    backoff: {{initial: 50ms, max: 200ms}}"""
        self.start()
        self.d.write_config(config(self.d.dir, self.port, self.metrics, BUILTIN) + extra)
        self.assertEqual(self.ctl("reload").returncode, 0)
        self.d.wait_log(r"storm\[\d\]: pid \d+ killed by SIGSEGV", count=4)
        web = {p["slot"]: p["pid"] for p in self.program("web")["slots"]}

        def exits(name):
            return sum(self.program(name)["exits"].values())

        storm0, hung0 = exits("storm"), exits("hung")
        with Load(self.port, threads=2) as load:
            for k in range(10):
                self.upgrade(NEXT if k % 2 == 0 else CLUSTERD)
                time.sleep(0.3)
            wait_for(lambda: exits("storm") > storm0 + 10 and exits("hung") > hung0 + 1, 20,
                     what="the storm going on after the upgrades")
        self.assertEqual(load.errors, [], load.errors[:5])
        self.assertEqual({p["slot"]: p["pid"] for p in self.program("web")["slots"]}, web)
        self.assertEqual(self.daemon_status()["daemon"]["upgrades"], 10)
        for name in ("storm", "hung"):
            self.assertEqual(self.ctl("stop", name).returncode, 0)

        def children():
            with open(f"/proc/{self.d.pid}/task/{self.d.pid}/children") as f:
                return sorted(int(p) for p in f.read().split())

        wait_for(lambda: children() == sorted(web.values()), 15,
                 what=f"only web's workers left as children (have {children()})")

    def program(self, name):
        return next(p for p in self.daemon_status()["programs"] if p["name"] == name)

    def test_foreign_worker_and_captured_output_carry_over(self):
        self.start(PYTHON)
        before = self.d.workers()
        with Load(self.port, threads=2) as load:
            time.sleep(0.3)
            reply = self.upgrade(NEXT)
            time.sleep(0.5)
        self.assertEqual(load.errors, [], load.errors[:5])
        self.assertGreater(load.ok, 10)
        self.assertEqual(sorted(reply["pids"]), sorted(before.values()))
        self.assertEqual(self.d.workers(), before)
        # The output pipes were handed over: what a worker prints now is still logged.
        for pid in before.values():
            os.kill(pid, signal.SIGTERM)
        self.d.wait_log(r"web\[\d\]: pid \d+ exited", count=2)
        self.d.wait_log(r"web\[\d\] py_server: pid \d+ ready", count=4)
        # The restarted workers report to the new image (ready means their notify socket
        # and the master's reaper work there).
        self.assertEqual(len(self.d.workers()), 2)
        self.assertEqual(http_get(self.port)[0], 200)

    def test_worker_killed_during_the_upgrade_is_restarted(self):
        self.start()
        before = self.d.workers()
        victim = before[0]
        # A new binary that takes its time before it runs: the worker dies during the exec.
        slow = self.slow_next()
        t0 = time.monotonic()
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=self.upgrade(slow)))
        thread.start()
        wait_for(lambda: "exec " + slow in self.d.log_text(), 10, what="the exec")
        os.kill(victim, signal.SIGKILL)
        thread.join(30)
        self.assertTrue(result["r"]["ok"])
        self.assertLess(time.monotonic() - t0, 15)
        self.d.wait_log(r"web\[0\]: pid %d killed by SIGKILL" % victim)
        after = wait_for(lambda: (w := self.d.workers()) and len(w) == 2 and w[0] != victim and w,
                         10, what="slot 0 restarted")
        self.assertEqual(after[1], before[1])
        self.assertFalse(os.path.exists(f"/proc/{victim}"))  # reaped, not a zombie
        self.assertEqual(self.daemon_status()["daemon"]["version"], self.version(NEXT))

    def test_sigterm_during_the_exec_is_not_lost(self):
        self.start()
        before = self.d.workers()
        slow = self.slow_next()
        client = subprocess.Popen([CLUSTERD, "upgrade", "--binary", slow, "-s", self.sock],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: "exec " + slow in self.d.log_text(), 10, what="the exec")
        self.d.signal(signal.SIGTERM)  # pending across the exec, for the new image
        self.assertEqual(self.d.wait_exit(20), 0, self.d.log_text()[-2000:])
        client.communicate(timeout=10)
        self.assertIn("upgraded from", self.d.log_text())
        for pid in before.values():
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, what=f"worker {pid} gone")

    def test_bad_binaries_leave_the_daemon_running(self):
        self.start()
        before = self.d.workers()
        version = self.version(CLUSTERD)
        d = self.d.dir

        exits = self.script("exits", "#!/bin/sh\nexit 0\n")
        old_format = self.script("old-format", "#!/bin/sh\n"
                            "echo '{\"ok\":false,\"message\":\"state format 1 is not one this "
                            "clusterd reads (it reads 2)\"}'\nexit 4\n")
        # Passes the check, then cannot read what it is handed after the exec: the old image
        # comes back by its fd and answers.
        garbage = os.path.join(d, "garbage")
        with open(garbage, "w") as f:
            f.write("clusterd-state 1\n{not json")
        cannot_read = self.script("cannot-read", f"""#!{sys.executable}
import os, sys
a = sys.argv[1:]
if "--resume-state-fd" in a:
    fd = os.open("{garbage}", os.O_RDONLY)
    os.set_inheritable(fd, True)
    a[a.index("--resume-state-fd") + 1] = str(fd)
os.execv("{NEXT}", ["{NEXT}"] + a)
""")
        not_exec = os.path.join(d, "clusterd.yaml")
        cases = [
            (exits, r"exited with code 0 before confirming it reads the state: no answer"),
            (old_format, r"state format 1 is not one this clusterd reads"),
            (os.path.join(d, "missing"), r"No such file or directory"),
            (not_exec, r"is not executable"),
            (d, r"is not a regular file"),
            (cannot_read, r"upgrade failed: the state does not decode.*still running " +
             re.escape(version)),
        ]
        with Load(self.port, threads=2) as load:
            for binary, why in cases:
                reply = self.upgrade(binary, ok=False)
                self.assertRegex(reply["message"], why)
                self.assertEqual(self.d.proc.poll(), None)
                self.assertEqual(self.d.workers(), before)
                self.assertEqual(self.daemon_status()["daemon"]["version"], version)
        self.assertEqual(load.errors, [], load.errors[:5])
        # The way back leaves nothing behind, and a good upgrade still works.
        self.assertEqual(self.upgrade(NEXT)["version"], self.version(NEXT))
        self.assertEqual(self.d.workers(), before)
        fds = os.listdir(f"/proc/{self.d.pid}/fd")
        targets = [os.readlink(f"/proc/{self.d.pid}/fd/{fd}") for fd in fds]
        self.assertFalse([t for t in targets if "clusterd" in t and "/bin/" in t], targets)
        # No state memfd left (the programs' scoreboards are the daemon's own).
        self.assertFalse([t for t in targets if "memfd" in t and "scoreboard" not in t], targets)

    def test_a_program_whose_executable_is_gone_keeps_its_workers(self):
        # The program's executable was removed since it started (a half-done deploy): the new
        # image cannot resolve it, keeps the running workers, and a new one fails to start
        # as it would have in the old image, until the executable is back.
        d = tempfile.mkdtemp(prefix="clusterd-e2e-exe-")
        self.addCleanup(shutil.rmtree, d, True)
        server = os.path.join(d, "server.py")
        shutil.copy(PY_SERVER, server)
        os.chmod(server, 0o755)
        self.start(f'    command: ["{server}"]\n    cores: 2\n    backoff: {{initial: 100ms, max: 500ms}}')
        before = self.d.workers()
        os.rename(server, server + ".away")
        reply = self.upgrade(NEXT)
        self.assertEqual(sorted(reply["pids"]), sorted(before.values()))
        self.d.wait_log(r"web: its workers are kept, but a new one cannot start: .*server\.py")
        self.assertEqual(http_get(self.port)[0], 200)
        os.kill(before[0], signal.SIGKILL)
        self.d.wait_log(r"web\[0\]: cannot start a worker: .*server\.py", timeout=10)
        self.assertEqual(self.d.proc.poll(), None)
        self.assertEqual(self.d.workers()[1], before[1])
        os.rename(server + ".away", server)
        wait_for(lambda: len(self.d.workers()) == 2, 10, what="slot 0 back with its executable")

    def test_only_root_or_the_daemons_user_names_the_binary(self):
        # control_group members may upgrade to the daemon's own binary, not run another one
        # as the daemon's user; and no file others could have written is run.
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
        self.start(daemon=f"  control_group: {group}")
        os.chmod(self.d.dir, 0o755)

        def as_nobody(*args):
            return subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}",
                                   f"--regid={nobody.pw_gid}", "--clear-groups", CLUSTERD,
                                   *args, "-s", self.sock], capture_output=True, text=True,
                                  timeout=60)

        r = as_nobody("upgrade", "--binary", NEXT)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("only root or the daemon's own user may name the binary", r.stderr)
        r = as_nobody("upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("upgraded from", r.stdout)
        writable = os.path.join(self.d.dir, "next-writable")
        shutil.copy(NEXT, writable)
        os.chmod(writable, 0o777)
        reply = self.upgrade(writable, ok=False)
        self.assertRegex(reply["message"], r"is writable by its group or others")
        self.assertEqual(self.daemon_status()["daemon"]["upgrades"], 1)

    def test_a_binary_that_never_answers_is_killed_and_refused(self):
        self.start()
        hang = self.script("hang", "#!/bin/sh\nexec sleep 60\n")
        t0 = time.monotonic()
        reply = self.upgrade(hang, ok=False)
        self.assertRegex(reply["message"], r"did not confirm within 10s")
        self.assertLess(time.monotonic() - t0, 15)
        self.assertEqual(self.d.proc.poll(), None)
        self.assertEqual(http_get(self.port)[0], 200)

    def test_rolling_restart_in_progress_is_waited_for(self):
        # Slow starters (ready once up for 1.5 s): a roll of 2 slots takes 3 s. The upgrade is
        # refused while it runs (busy, by the operations table), and the CLI asks again
        # until it has ended.
        self.start(f'    command: ["{MISBEHAVE}", never-ready]\n    cores: 2\n'
                   "    ready: started\n    start_time: 1500ms")
        roll = subprocess.Popen([CLUSTERD, "restart", "web", "--rolling", "-s", self.sock],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: self.daemon_status()["programs"][0]["rolling"], 5, what="the roll")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(b'{"cmd":"upgrade"}\n')
            raw = json.loads(s.makefile().readline())
        self.assertFalse(raw.get("ok", True), raw)
        self.assertTrue(raw["busy"])
        self.assertRegex(raw["message"], r"web: a rolling restart is in progress")
        r = self.ctl("upgrade", "--binary", NEXT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("asking again", r.stderr)
        out, _ = roll.communicate(timeout=30)
        self.assertEqual(roll.returncode, 0, out)
        status = self.daemon_status()
        self.assertEqual(status["daemon"]["version"], self.version(NEXT))
        self.assertEqual({s["generation"] for s in status["programs"][0]["slots"]}, {2})

    def test_sigusr2_upgrades_to_the_binary_it_was_started_from(self):
        self.start()
        before = self.d.workers()
        self.d.signal(signal.SIGUSR2)
        self.d.wait_log(r"upgraded from \S+ to \S+ in \S+: 2 workers carried over, upgrade 1")
        self.assertEqual(self.d.workers(), before)
        self.assertEqual(self.daemon_status()["daemon"]["upgrades"], 1)
        self.assertEqual(http_get(self.port)[0], 200)


if __name__ == "__main__":
    unittest.main()

"""End to end: clusterd as PID 1 of a container (unshare --pid) and as a child subreaper:
orphans of workers are reaped, TERM stops everything, the exit code says how it ended."""

import os
import re
import shutil
import signal
import subprocess
import time
import unittest

from harness import CLUSTERD, MISBEHAVE, Daemon, pid_alive, wait_for

# A worker that leaves an orphan behind: the subshell exits at once, its `sleep` is
# re-parented to the nearest subreaper (clusterd) or to PID 1 (clusterd in a container).
ORPHANING = f"""
programs:
  app:
    cores: 1
    command: ["/bin/sh", "-c", "(sleep 300 &); exec {MISBEHAVE} ready"]
"""


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


class SubreaperTest(unittest.TestCase):
    def test_orphans_of_workers_are_reaped_and_do_not_outlive_the_master(self):
        d = Daemon(ORPHANING, args=["--log-level", "debug"])
        self.addCleanup(d.close)
        d.wait_log(r"app: all 1 workers ready")
        orphan = wait_for(lambda: [p for p in children(d.pid) if comm(p) == "sleep"], 5,
                          what="the orphan re-parented to clusterd")[0]
        os.kill(orphan, signal.SIGTERM)
        wait_for(lambda: state(orphan) == "gone", 5, what="the orphan to be reaped, not a zombie")
        d.wait_log(rf"reaped pid {orphan} \(not a worker\)")
        # Another orphan, left running: it must not outlive the master.
        d2 = Daemon(ORPHANING)
        self.addCleanup(d2.close)
        d2.wait_log(r"app: all 1 workers ready")
        orphan2 = wait_for(lambda: [p for p in children(d2.pid) if comm(p) == "sleep"], 5,
                           what="orphan")[0]
        d2.signal(signal.SIGTERM)
        self.assertEqual(d2.wait_exit(15), 0)
        wait_for(lambda: not pid_alive(orphan2), 5, what="the orphan to be killed")
        self.assertIn("left behind by stopped workers", d2.log_text())


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare")
class Pid1Test(unittest.TestCase):
    def test_as_pid_1_it_reaps_every_orphan_and_forwards_term(self):
        d = Daemon()
        self.addCleanup(d.close)
        d.write_config(ORPHANING)
        d.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", CLUSTERD, "run", "-c", d.config,
             "--control", os.path.join(d.dir, "control.sock"),
             "--state-dir", os.path.join(d.dir, "state"), "--log-level", "debug"],
            stdin=subprocess.DEVNULL, stdout=d.log, stderr=subprocess.STDOUT)
        d.wait_log(r"running as PID 1")
        d.wait_log(r"app: all 1 workers ready")
        master = wait_for(lambda: children(d.proc.pid), 5, what="clusterd under unshare")[0]
        orphan = wait_for(lambda: [p for p in children(master) if comm(p) == "sleep"], 5,
                          what="the orphan re-parented to PID 1")[0]
        os.kill(orphan, signal.SIGKILL)
        wait_for(lambda: state(orphan) == "gone", 5, what="PID 1 to reap the orphan")
        os.kill(master, signal.SIGTERM)
        self.assertEqual(d.proc.wait(15), 0)
        self.assertRegex(d.log_text(), r"SIGTERM received: stopping all workers")


if __name__ == "__main__":
    unittest.main()

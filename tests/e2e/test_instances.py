"""End to end: daemons side by side on one machine, and a daemon run by a user other than root.

Each daemon keeps its runtime scale in a state file of its own config, even in a shared
state_dir; a second daemon on a control socket in use refuses to start; a non-root daemon
puts its control socket and state in the user's XDG directories, where `clusterd status`
of the same user finds them."""

import glob
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

from harness import CLUSTERD, Daemon, free_port, http_get, wait_for


def program_config(control, state_dir, port, cores, name="web"):
    return f"""
daemon:
  control: {control}
  state_dir: {state_dir}
programs:
  {name}:
    cores: {cores}
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
"""


def ctl(sock, *args, env=None, user=None):
    cmd = [CLUSTERD, *args] + (["-s", sock] if sock else [])
    return subprocess.run(as_user(user, cmd), capture_output=True, text=True, timeout=30, env=env)


def as_user(user, cmd):
    if user is None:
        return cmd
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            *cmd]


def slots(sock, **kw):
    r = ctl(sock, "status", "--json", **kw)
    assert r.returncode == 0, r.stderr
    return len(json.loads(r.stdout.strip().splitlines()[-1])["status"]["programs"][0]["slots"])


class InstancesTest(unittest.TestCase):
    def setUp(self):
        # One state_dir for both daemons, as two configs left at the default would share.
        self.shared = tempfile.mkdtemp(prefix="clusterd-shared-")
        self.addCleanup(shutil.rmtree, self.shared, True)
        self.state = os.path.join(self.shared, "state")

    def daemon(self, cores, port=None):
        d = Daemon()
        self.addCleanup(d.close)
        d.port = port or free_port()
        d.sock = os.path.join(d.dir, "control.sock")
        d.write_config(program_config(d.sock, self.state, d.port, cores))
        d.launch()
        d.wait_log(r"web: all \d+ workers ready")
        wait_for(lambda: ctl(d.sock, "status").returncode == 0, 5, what="control socket")
        return d

    def restart(self, d):
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(15), 0)
        d.launch()
        d.wait_log(r"web: all \d+ workers ready")
        wait_for(lambda: ctl(d.sock, "status").returncode == 0, 5, what="control socket")

    def test_two_configs_with_a_program_of_one_name_keep_their_own_scale(self):
        a = self.daemon(cores=2)
        b = self.daemon(cores=2)
        self.assertEqual(ctl(a.sock, "scale", "web", "1").returncode, 0)
        self.assertEqual(ctl(b.sock, "scale", "web", "3").returncode, 0)
        files = sorted(glob.glob(os.path.join(self.state, "state-*.json")))
        self.assertEqual(len(files), 2, files)
        for d in (a, b):
            self.restart(d)
        self.assertEqual(slots(a.sock), 1)
        self.assertEqual(slots(b.sock), 3)
        a.wait_log(r"web: 1 workers from a runtime scale \(config says 2")
        b.wait_log(r"web: 3 workers from a runtime scale \(config says 2")
        self.assertEqual(http_get(a.port)[0], 200)
        self.assertEqual(http_get(b.port)[0], 200)

    def test_a_scale_is_dropped_when_cores_changed_while_the_daemon_was_down(self):
        a = self.daemon(cores=2)
        self.assertEqual(ctl(a.sock, "scale", "web", "3").returncode, 0)
        a.signal(signal.SIGTERM)
        self.assertEqual(a.wait_exit(15), 0)
        a.write_config(program_config(a.sock, self.state, a.port, 1))
        a.launch()
        a.wait_log(r"web: runtime scale of 3 workers ignored: cores in the config changed "
                   r"from 2 to 1")
        a.wait_log(r"web: all 1 workers ready")
        wait_for(lambda: ctl(a.sock, "status").returncode == 0, 5, what="control socket")
        self.assertEqual(slots(a.sock), 1)
        # ... and forgotten: the next start does not say it again.
        self.restart(a)
        self.assertEqual(len([l for l in a.log_text().splitlines() if "ignored" in l]), 1)

    def test_a_second_daemon_on_a_control_socket_in_use_refuses_and_starts_nothing(self):
        a = self.daemon(cores=1)
        port = free_port()
        other = tempfile.mkdtemp(prefix="clusterd-second-")
        self.addCleanup(shutil.rmtree, other, True)
        conf = os.path.join(other, "b.yaml")
        with open(conf, "w") as f:
            f.write(program_config(a.sock, self.state, port, 1))
        r = subprocess.run([CLUSTERD, "run", "-c", conf], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertRegex(r.stderr, rf"control socket {a.sock} is in use by clusterd pid "
                         rf"{a.pid} \(config {a.config}\): set daemon.control in {conf} or pass "
                         r"--control PATH")
        self.assertNotIn("starting", r.stderr)
        self.assertNotIn("listening", r.stderr)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # The first daemon is untouched and still answers on its socket.
        self.assertEqual(slots(a.sock), 1)
        # With --control it runs beside the first one.
        b = Daemon()
        self.addCleanup(b.close)
        b.write_config(program_config(a.sock, self.state, port, 1))
        b.args = ["--control", os.path.join(b.dir, "control.sock")]
        b.launch()
        b.wait_log(r"web: all 1 workers ready")
        self.assertEqual(http_get(port)[0], 200)
        self.assertEqual(slots(a.sock), 1)


class UnsatisfiableScaleTest(unittest.TestCase):
    """A runtime scale the machine cannot hold (here: file descriptors) is never saved, and
    a saved one that no longer fits does not keep the daemon from starting."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="clusterd-fds-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sock = os.path.join(self.dir, "control.sock")
        self.state = os.path.join(self.dir, "state")
        self.port = free_port()
        self.config = os.path.join(self.dir, "app.yaml")
        with open(self.config, "w") as f:
            f.write(program_config(self.sock, self.state, self.port, 2))

    def launch(self):
        log = open(os.path.join(self.dir, "clusterd.log"), "a")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            [CLUSTERD, "run", "-c", self.config], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)))
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        wait_for(lambda: ctl(self.sock, "status").returncode == 0 or proc.poll() is not None,
                 10, what="control socket")
        self.assertIsNone(proc.poll(), self.log())
        return proc

    def log(self):
        with open(os.path.join(self.dir, "clusterd.log")) as f:
            return f.read()

    def status(self):
        r = ctl(self.sock, "status", "--json")
        return json.loads(r.stdout.strip().splitlines()[-1])["status"]["programs"][0]

    def test_a_failed_scale_is_not_saved_and_a_saved_one_that_no_longer_fits_is_ignored(self):
        proc = self.launch()
        wait_for(lambda: len([s for s in self.status()["slots"] if s["state"] == "ready"]) == 2,
                 10, what="2 ready workers")
        r = ctl(self.sock, "scale", "web", "200")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("web: cannot scale up", r.stdout + r.stderr)
        st = self.status()
        self.assertEqual(len(st["slots"]), 2)
        self.assertIsNone(st["runtime_scale"])
        self.assertEqual(glob.glob(os.path.join(self.state, "state-*.json")), [])
        self.assertEqual(http_get(self.port)[0], 200)
        # 60 listening sockets fit in 128 descriptors, but not with a notify socket for each
        # new worker as well: refused the same way, before any of them starts.
        r = ctl(self.sock, "scale", "web", "60")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("web: cannot scale up", r.stdout + r.stderr)
        self.assertEqual(len(self.status()["slots"]), 2)
        self.assertIsNone(self.status()["runtime_scale"])
        self.assertEqual(glob.glob(os.path.join(self.state, "state-*.json")), [])

        # A scale that fits is saved; then the machine (the state file) changes under it.
        self.assertEqual(ctl(self.sock, "scale", "web", "3").returncode, 0)
        [file] = glob.glob(os.path.join(self.state, "state-*.json"))
        with open(file) as f:
            saved = json.load(f)
        self.assertEqual(saved["scale"]["web"], {"workers": 3, "cores": "2"})
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(15), 0)
        saved["scale"]["web"]["workers"] = 200
        with open(file, "w") as f:
            json.dump(saved, f)
        self.launch()
        wait_for(lambda: "web: all 2 workers ready" in self.log(), 10, what="2 workers ready")
        self.assertRegex(self.log(), r"web: runtime scale of 200 workers ignored: ")
        self.assertIsNone(self.status()["runtime_scale"])
        self.assertEqual(http_get(self.port)[0], 200)


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                     "needs root to switch to the user nobody (setpriv)")
class NonRootTest(unittest.TestCase):
    """A daemon of the user nobody, with no control or state_dir in its config."""

    def setUp(self):
        self.user = pwd.getpwnam("nobody")
        self.home = tempfile.mkdtemp(prefix="clusterd-home-")
        self.addCleanup(shutil.rmtree, self.home, True)
        os.chmod(self.home, 0o755)
        self.runtime = os.path.join(self.home, "run")
        os.mkdir(self.runtime, 0o700)
        for p in (self.home, self.runtime):
            os.chown(p, self.user.pw_uid, self.user.pw_gid)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
                    "XDG_RUNTIME_DIR": self.runtime}
        self.port = free_port()
        self.config = os.path.join(self.home, "app.yaml")
        with open(self.config, "w") as f:
            f.write(f"""
programs:
  web:
    cores: 2
    listen:
      - {{name: http, address: "127.0.0.1:{self.port}"}}
""")
        self.log = open(os.path.join(self.home, "clusterd.log"), "w")
        self.addCleanup(self.log.close)

    def ctl(self, *args):
        return ctl(None, *args, env=self.env, user=self.user)

    def test_run_status_reload_scale_stop_as_nobody(self):
        proc = subprocess.Popen(as_user(self.user, [CLUSTERD, "run", "-c", self.config]),
                                env=self.env, stdin=subprocess.DEVNULL, stdout=self.log,
                                stderr=subprocess.STDOUT)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        sock = os.path.join(self.runtime, "clusterd", "control.sock")
        wait_for(lambda: self.ctl("status").returncode == 0, 10, what="status as nobody")
        self.assertEqual(os.stat(sock).st_uid, self.user.pw_uid)
        self.assertEqual(os.stat(os.path.dirname(sock)).st_mode & 0o777, 0o700)
        wait_for(lambda: http_get(self.port)[0] == 200, 10, what="HTTP 200")
        self.assertEqual(slots(None, env=self.env, user=self.user), 2)

        r = self.ctl("scale", "web", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        state = glob.glob(os.path.join(self.home, ".local/state/clusterd/state-app.yaml-*.json"))
        self.assertEqual(len(state), 1)
        self.assertEqual(os.stat(state[0]).st_uid, self.user.pw_uid)

        r = self.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = self.ctl("stop", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: json.loads(self.ctl("status", "--json").stdout.splitlines()[-1])
                 ["status"]["programs"][0]["slots"][0]["state"] == "stopped", 10,
                 what="web stopped")
        # A stopped slot shows no figures of the process it no longer has.
        stopped = json.loads(self.ctl("status", "--json").stdout.splitlines()[-1])
        self.assertEqual(stopped["status"]["programs"][0]["slots"][0]["fields"], {})
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(15), 0)
        self.assertFalse(os.path.exists(sock))
        with open(self.log.name) as f:
            text = f.read()
        self.assertNotIn("warn", text.replace("warning", ""), text)
        self.assertIn(f"control socket {sock}", text)


if __name__ == "__main__":
    unittest.main()

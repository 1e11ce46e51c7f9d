"""End to end: live operations through the control socket and signals, under load."""

import json
import os
import signal
import socket
import subprocess
import time
import unittest

from harness import CLUSTERD, MISBEHAVE, Daemon, Load, free_port, http_get, wait_for


def config(d, port, workers=2, env="A: '1'", extra="", reuseport="true", state=None):
    return f"""
daemon:
  control: {d}/control.sock
  state_dir: {state or d + '/state'}
  shutdown_timeout: 10s
programs:
  web:
    cores: {workers}
    stop_timeout: 5s
    env: {{{env}}}
    listen:
      - {{name: http, address: "127.0.0.1:{port}", reuseport: {reuseport}}}
{extra}
"""


class LiveTest(unittest.TestCase):
    reuseport = "true"

    def start(self, **kw):
        self.port = free_port()
        self.d = Daemon()
        self.addCleanup(self.d.close)
        self.write(**kw)
        self.d.launch()
        self.d.wait_log(r"web: all \d+ workers ready")
        wait_for(lambda: os.path.exists(self.sock), 5, what="control socket")

    def write(self, **kw):
        kw.setdefault("reuseport", self.reuseport)
        self.d.write_config(config(self.d.dir, self.port, **kw))

    @property
    def sock(self):
        return os.path.join(self.d.dir, "control.sock")

    def ctl(self, *args):
        return subprocess.run([CLUSTERD, *args, "-s", self.sock], capture_output=True, text=True,
                              timeout=60)

    def status(self):
        r = self.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])["status"]["programs"][0]

    def pids(self):
        return {s["slot"]: (s["pid"], s["generation"]) for s in self.status()["slots"]}

    def test_reload_of_a_worker_visible_field_rolls_every_worker_without_a_failed_request(self):
        self.start(workers=3)
        before = self.pids()
        self.write(workers=3, env="A: '2'")
        with Load(self.port, threads=3) as load:
            time.sleep(0.3)
            r = self.ctl("reload")
            time.sleep(0.3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("slot 3/3 ready", r.stdout)
        after = self.pids()
        self.assertEqual(sorted(after), [0, 1, 2])
        for slot, (pid, gen) in after.items():
            self.assertEqual(gen, before[slot][1] + 1)
            self.assertNotIn(pid, {p for p, _ in before.values()})
        self.assertGreater(load.ok, 100)
        self.assertEqual(load.errors, [])

    def test_status_prints_a_table_of_every_worker(self):
        self.start(workers=2)
        r = self.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        header = next(l for l in r.stdout.splitlines() if l.startswith("SLOT"))
        for column in ("PID", "STATE", "GEN", "UPTIME", "CPU%", "RSS", "LAG", "CONNS",
                       "RESTARTS", "LAST EXIT", "STATUS"):
            self.assertIn(column, header)
        for slot, (pid, gen) in self.pids().items():
            self.assertRegex(r.stdout, rf"(?m)^{slot} +{pid} +ready +{gen} ")
        self.assertRegex(r.stdout, r"\d+\.\dM")  # RSS
        watch = subprocess.run(["timeout", "1.5", CLUSTERD, "status", "--watch", "0.5", "-s",
                                self.sock], capture_output=True, text=True)
        self.assertGreaterEqual(watch.stdout.count("SLOT"), 2, "it refreshes")

    def test_an_address_moved_to_a_new_program_loses_no_request(self):
        self.start(workers=2)
        # Rename the program: "web" goes, "site" takes over its address and socket group.
        text = config(self.d.dir, self.port, workers=2, reuseport=self.reuseport)
        with Load(self.port, threads=3) as load:
            time.sleep(0.3)
            self.d.write_config(text.replace("  web:", "  site:"))
            r = self.ctl("reload")
            self.d.wait_log(r"web: removed$", timeout=10)
            time.sleep(0.3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.status()["name"], "site")
        self.assertGreater(load.ok, 100)
        self.assertEqual(load.errors, [])

    def test_reload_of_a_master_only_field_keeps_every_worker(self):
        self.start()
        before = self.pids()
        self.write(extra="    start_timeout: 20s\n    restart: on-failure")
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("applied in place", r.stdout)
        self.assertEqual(self.pids(), before)

    def test_an_invalid_reload_changes_nothing_and_says_where(self):
        self.start()
        before = self.pids()
        with open(self.d.config, "a") as f:
            f.write("    bogus_key: 1\n")
        r = self.ctl("reload")
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, rf"{self.d.config}:\d+:\d+: .*bogus_key")
        self.assertEqual(self.pids(), before)
        self.assertEqual(http_get(self.port)[0], 200)
        self.assertEqual(self.status()["generation"], 1)

    def test_scale_up_and_down_under_load_loses_no_request(self):
        self.start(workers=2)
        with Load(self.port, threads=3) as load:
            time.sleep(0.3)
            up = self.ctl("scale", "web", "4")
            time.sleep(0.3)
            down = self.ctl("scale", "web", "1")
            time.sleep(0.5)
        self.assertEqual(up.returncode, 0, up.stderr)
        self.assertEqual(down.returncode, 0, down.stderr)
        self.assertEqual(len(self.status()["slots"]), 1)
        self.assertGreater(load.ok, 100)
        self.assertEqual(load.errors, [])
        self.assertNotIn("lost", self.d.log_text())

    def test_a_generation_that_never_gets_ready_stops_the_roll_and_keeps_the_old_workers(self):
        self.start(workers=2)
        before = self.pids()
        self.write(extra=f'    command: ["{MISBEHAVE}", never-ready]\n    start_timeout: 500ms')
        r = self.ctl("reload")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("did not become ready", r.stdout + r.stderr)
        self.assertEqual(self.pids(), before)
        self.assertEqual(http_get(self.port)[0], 200)
        # The failed roll left the config as it was: a fixed file reloads normally.
        self.write(env="A: '3'")
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_garbage_on_the_control_socket_gets_an_error_and_harms_nothing(self):
        self.start()
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.sock)
        s.sendall(b"this is not json\n{\"cmd\": \"nope\"}\n{\"cmd\": 1}\n"
                  b"{\"cmd\": \"scale\", \"program\": \"web\", \"workers\": 4294967297}\n"
                  b"{\"cmd\": \"restart\", \"program\": \"web\", \"rolling\": \"yes\"}\n")
        replies = b""
        while replies.count(b"\n") < 5:
            replies += s.recv(4096)
        lines = [json.loads(l) for l in replies.decode().splitlines()]
        self.assertFalse(lines[0]["ok"])
        self.assertFalse(lines[1]["ok"])
        self.assertIn("unknown command", lines[1]["message"])
        self.assertFalse(lines[2]["ok"])  # a number where the command's name belongs
        self.assertFalse(lines[3]["ok"])
        self.assertIn("from 1 to 4096", lines[3]["message"])
        self.assertFalse(lines[4]["ok"])  # "rolling" of the wrong type: nothing restarted
        self.assertIn('"rolling" is a string', lines[4]["message"])
        # As deep as a request line allows: refused by type, the daemon unharmed.
        deep = b'{"cmd":"scale","program":"web","workers":' + b"[" * 32000 + b"]" * 32000
        s.sendall(deep + b"}\n")
        reply = b""
        while not reply.endswith(b"\n"):
            reply += s.recv(4096)
        self.assertFalse(json.loads(reply)["ok"])
        self.assertIn(b"not an array", reply)
        s.sendall(b"x" * 70000 + b"\n")
        rest = b""
        while chunk := s.recv(4096):  # the reply, then EOF: the daemon hangs up on it
            rest += chunk
        self.assertIn(b"longer than", rest)
        s.close()
        self.assertEqual(self.ctl("status").returncode, 0)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to connect as another uid")
    def test_the_control_socket_refuses_another_uid(self):
        self.start()
        os.chmod(self.d.dir, 0o755)
        os.chmod(self.sock, 0o777)  # let the file mode through: the credential check decides
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock)
                try:
                    s.sendall(b'{"cmd":"status"}\n')
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused at accept, maybe before the request went out
                reply = json.loads(s.recv(4096).decode().splitlines()[0])
                os._exit(0 if not reply["ok"] and "permission denied" in reply["message"] else 1)
            except Exception:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)

    def test_runtime_scale_survives_a_reload_and_a_daemon_restart(self):
        self.start(workers=2)
        self.assertEqual(self.ctl("scale", "web", "3").returncode, 0)
        self.write(workers=2, env="A: '9'")
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        st = self.status()
        self.assertEqual(len(st["slots"]), 3)
        self.assertEqual(st["runtime_scale"], 3)
        self.assertIn("runtime scale", self.ctl("status").stdout)
        # Restart the daemon: the override comes back from the state file.
        self.d.signal(signal.SIGTERM)
        self.assertEqual(self.d.wait_exit(15), 0)
        self.d.launch()
        self.d.wait_log(r"web: all 3 workers ready")
        wait_for(lambda: self.ctl("status").returncode == 0, 5, what="control socket")
        self.assertEqual(len(self.status()["slots"]), 3)
        # A reload that changes `cores` drops the override.
        self.write(workers=1)
        self.assertEqual(self.ctl("reload").returncode, 0)
        self.assertEqual(len(self.status()["slots"]), 1)
        self.assertIsNone(self.status()["runtime_scale"])

    def test_sighup_reloads_and_ttin_ttou_scale(self):
        self.start(workers=1)
        self.write(workers=1, env="A: 'hup'")
        self.d.signal(signal.SIGHUP)
        wait_for(lambda: not (st := self.status())["rolling"] and
                 [s["generation"] for s in st["slots"]] == [2], 10, what="generation 2")
        self.d.signal(signal.SIGTTIN)
        wait_for(lambda: len(self.status()["slots"]) == 2, 10, what="2 workers after TTIN")
        self.d.signal(signal.SIGTTOU)
        wait_for(lambda: len(self.status()["slots"]) == 1, 10, what="1 worker after TTOU")

    def test_stop_during_a_rolling_restart_leaves_the_program_stopped(self):
        # Slow starts (ready once up for 1.5 s): the roll is still on its first slot when
        # `stop` comes.
        self.start(workers=2, extra=f'    command: ["{MISBEHAVE}", never-ready]\n'
                                    "    ready: started\n    start_time: 1500ms")
        roll = subprocess.Popen([CLUSTERD, "restart", "web", "--rolling", "-s", self.sock],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: self.status()["rolling"], 5, what="the roll")
        r = self.ctl("stop", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        out, _ = roll.communicate(timeout=30)
        self.assertNotEqual(roll.returncode, 0, out)
        self.assertIn("rolling restart ended by stop", out)
        wait_for(lambda: all(s["pid"] == 0 for s in self.status()["slots"]), 15,
                 what="every worker stopped")
        # Longer than start_time: a roll that went on would have started new workers by now.
        time.sleep(2)
        st = self.status()
        self.assertFalse(st["rolling"])
        self.assertEqual([s["pid"] for s in st["slots"]], [0, 0])
        self.assertEqual(st["other_workers"], [])
        # Started again, it runs the generation the roll was going to.
        self.assertEqual(self.ctl("start", "web").returncode, 0)
        wait_for(lambda: all(s["state"] == "ready" for s in self.status()["slots"]), 15,
                 what="both slots ready")
        self.assertEqual({s["generation"] for s in self.status()["slots"]}, {2})

    def test_rolling_restart_and_stop_start_commands(self):
        self.start(workers=2)
        before = self.pids()
        r = self.ctl("restart", "web", "--rolling")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("slot 2/2 ready", r.stdout)
        after = self.pids()
        self.assertTrue(all(after[k][0] != before[k][0] for k in before))
        self.assertEqual(self.ctl("stop", "web").returncode, 0)
        wait_for(lambda: all(s["state"] == "stopped" for s in self.status()["slots"]), 10,
                 what="stopped workers")
        self.assertEqual(self.ctl("start", "web").returncode, 0)
        wait_for(lambda: all(s["state"] == "ready" for s in self.status()["slots"]), 10,
                 what="ready workers")
        self.assertNotEqual(self.ctl("scale", "nosuch", "2").returncode, 0)


class SharedSocketLiveTest(LiveTest):
    """The same operations with one socket shared by every worker (reuseport: false)."""
    reuseport = "false"


if __name__ == "__main__":
    unittest.main()

"""End to end: env files (`env_file:`) and drop-in config files (`include:`), at start, at
reload and across an upgrade."""

import os
import re
import subprocess
import unittest

from harness import BIN, CLUSTERD, MISBEHAVE, Daemon, environ_of, wait_for

NEXT = os.path.join(BIN, "clusterd-next")

# Every case of systemd's EnvironmentFile= syntax, and what the worker must see.
ENV_FILE = r"""# a comment
; another comment

PLAIN=hello world
TRAILING=value with trailing spaces   
  SPACED  =  around the key
DOUBLE="a \"quoted\" value with \\ and \$HOME"
SINGLE='single $HOME \n kept'
MIXED="dq "'sq '"dq again"
EMPTY=
CONTINUED=first \
second
ESCAPED=a\ b\#c
DUP=first
DUP=second
OVERRIDDEN=from the file
"""
EXPECTED = {
    "PLAIN": "hello world",
    "TRAILING": "value with trailing spaces",
    "SPACED": "around the key",
    "DOUBLE": 'a "quoted" value with \\ and $HOME',
    "SINGLE": "single $HOME \\n kept",
    "MIXED": "dq sq dq again",
    "EMPTY": "",
    "CONTINUED": "first second",
    "ESCAPED": "a b#c",
    "DUP": "second",
    "OVERRIDDEN": "from env:",
}


def program_env(d):
    """The environment of the program's only worker."""
    pid = wait_for(lambda: next(iter(d.workers().values()), None), 10, what="a worker")
    return pid, environ_of(pid)


class EnvFileTest(unittest.TestCase):
    def config(self, d, extra_files=""):
        return f"""
programs:
  app:
    cores: 1
    command: ["{MISBEHAVE}", "ready"]
    env_file: [app.env, -{d.dir}/optional-missing.env{extra_files}]
    env: {{OVERRIDDEN: "from env:"}}
"""

    def test_every_syntax_case_then_a_reload_after_an_edit(self):
        d = Daemon()
        self.addCleanup(d.close)
        with open(os.path.join(d.dir, "app.env"), "w") as f:
            f.write(ENV_FILE)
        d.write_config(self.config(d))
        d.launch()
        d.wait_log(r"app: all 1 workers ready")
        pid, env = program_env(d)
        for key, value in EXPECTED.items():
            self.assertEqual(env.get(key), value, f"{key} in {env}")
        # An edit of the env file alone: a reload rolls the program onto the new values.
        with open(os.path.join(d.dir, "app.env"), "w") as f:
            f.write(ENV_FILE.replace("PLAIN=hello world", "PLAIN=changed"))
        sock = os.path.join(d.dir, "control.sock")
        r = subprocess.run([CLUSTERD, "reload", "-s", sock], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("app: rolling restart (env)", r.stdout)
        new_pid, env = wait_for(lambda: (lambda p: p if p[0] != pid else None)(program_env(d)),
                                10, what="the rolled worker")
        self.assertEqual(env["PLAIN"], "changed")
        # A broken env file fails the reload with file:line, and nothing changes.
        with open(os.path.join(d.dir, "app.env"), "w") as f:
            f.write("GOOD=1\nthis line has no equals sign\n")
        r = subprocess.run([CLUSTERD, "reload", "-s", sock], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, re.escape(os.path.join(d.dir, "app.env")) + r":2(:\d+)?: ")
        self.assertEqual(program_env(d)[0], new_pid)
        # A required file that is missing: the same, naming it.
        os.unlink(os.path.join(d.dir, "app.env"))
        r = subprocess.run([CLUSTERD, "reload", "-s", sock], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("app.env", r.stderr)
        self.assertIn("No such file or directory", r.stderr)
        self.assertEqual(program_env(d)[0], new_pid)


PROGRAM = """programs:
  {name}:
    cores: 1
    command: ["{misbehave}", "ready"]
"""


class IncludeTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon()
        self.addCleanup(self.d.close)
        self.confd = os.path.join(self.d.dir, "conf.d")
        os.mkdir(self.confd)
        self.sock = os.path.join(self.d.dir, "control.sock")

    def drop_in(self, name, text):
        with open(os.path.join(self.confd, name), "w") as f:
            f.write(text)

    def main(self, programs=""):
        self.d.write_config(f"include: conf.d/*.yaml\n{programs}")

    def reload(self):
        return subprocess.run([CLUSTERD, "reload", "-s", self.sock], capture_output=True,
                              text=True, timeout=30)

    def test_a_broken_file_at_start_names_itself_and_nothing_starts(self):
        self.drop_in("10-api.yaml", PROGRAM.format(name="api", misbehave=MISBEHAVE))
        self.drop_in("20-bad.yaml", "programs:\n  worker:\n    cores: lots\n")
        self.main()
        r = subprocess.run([CLUSTERD, "check", "-c", self.d.config], capture_output=True,
                           text=True)
        self.assertNotEqual(r.returncode, 0)
        bad = os.path.join(self.confd, "20-bad.yaml")
        self.assertIn(f"{bad}:3:12: programs.worker.cores: expected", r.stdout + r.stderr)
        self.d.launch()
        self.assertNotEqual(self.d.wait_exit(10), 0)
        self.assertIn(f"{bad}:3:12", self.d.log_text())

    def test_files_load_in_order_and_a_broken_one_at_reload_changes_nothing(self):
        self.drop_in("20-worker.yaml", PROGRAM.format(name="worker", misbehave=MISBEHAVE))
        self.drop_in("10-api.yaml", PROGRAM.format(name="api", misbehave=MISBEHAVE))
        self.drop_in("README", "not yaml: [")  # not matched by the pattern
        self.main(PROGRAM.format(name="web", misbehave=MISBEHAVE))
        self.d.launch()
        self.d.wait_log(r"worker: all 1 workers ready")
        started = [m.group(1) for m in re.finditer(r"info (\w+): starting 1 worker",
                                                   self.d.log_text())]
        self.assertEqual(started, ["web", "api", "worker"])
        before = self.d.workers()
        # A broken file: the whole reload fails with its position, every program keeps running.
        self.drop_in("30-new.yaml", PROGRAM.format(name="new", misbehave=MISBEHAVE))
        self.drop_in("20-worker.yaml", "programs:\n  worker:\n    cores: 1\n    bogus: 1\n")
        r = self.reload()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(os.path.join(self.confd, "20-worker.yaml") + ":4:5", r.stderr)
        self.assertIn("nothing changed", r.stderr)
        self.assertEqual(self.d.workers(), before)
        self.assertNotIn("new:", self.d.log_text())
        # Two files defining one program: an error naming both.
        self.drop_in("20-worker.yaml", PROGRAM.format(name="api", misbehave=MISBEHAVE))
        r = self.reload()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(os.path.join(self.confd, "20-worker.yaml") + ":2:3", r.stderr)
        self.assertIn('duplicate program "api"', r.stderr)
        self.assertIn(os.path.join(self.confd, "10-api.yaml") + ":2:3", r.stderr)
        self.assertEqual(self.d.workers(), before)
        # Fixed: the new file's program starts, the removed one (worker) stops.
        os.unlink(os.path.join(self.confd, "20-worker.yaml"))
        r = self.reload()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.d.wait_log(r"new: all 1 workers ready")
        self.d.wait_log(r"worker: removed")

    @unittest.skipUnless(os.path.exists(NEXT), "clusterd-next is built with BUILD_TESTING")
    def test_an_upgrade_reads_the_included_files_as_they_were(self):
        with open(os.path.join(self.d.dir, "api.env"), "w") as f:
            f.write("MARK=as-started\n")
        self.drop_in("10-api.yaml", PROGRAM.format(name="api", misbehave=MISBEHAVE) +
                     f"    env_file: {os.path.join(self.d.dir, 'api.env')}\n")
        self.main()
        self.d.launch()
        self.d.wait_log(r"api: all 1 workers ready")
        before = self.d.workers()
        # The disk changes (and would not even load) before the upgrade: the new image must
        # take over the config the running workers were started with.
        os.unlink(os.path.join(self.d.dir, "api.env"))
        self.drop_in("10-api.yaml", "programs: [broken\n")
        r = subprocess.run([CLUSTERD, "upgrade", "--binary", NEXT, "-s", self.sock],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("upgraded from", r.stdout)
        self.d.wait_log(r"upgraded from .* 1 workers carried over")
        self.assertEqual(self.d.workers(), before)
        status = subprocess.run([CLUSTERD, "status", "api", "-s", self.sock],
                                capture_output=True, text=True)
        self.assertIn("api: 1 workers", status.stdout)


if __name__ == "__main__":
    unittest.main()

"""End to end: `clusterd top`, the live view, on a terminal that tmux emulates (a fixed
120x40 screen on a tmux server of its own), and its one plain frame when stdout is not a
terminal. Set CLUSTERD_TOP_SHOW=1 to print the screens captured."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import CLUSTERD, Daemon, Wrk, free_port, wait_for

TMUX = shutil.which("tmux")
SHOW = os.environ.get("CLUSTERD_TOP_SHOW") == "1"


def config(port):
    return f"""
programs:
  web:
    cores: 2
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
"""


def rows(screen):
    """{slot: {pid, state, rate, restarts, last}} of the worker rows, cut at the columns of
    the table's header (the bars hold blanks, so the rows do not split at blanks)."""
    lines = screen.splitlines()
    header = next((line for line in lines if "SLOT" in line and "LAST EXIT" in line), None)
    if header is None:
        return {}
    state, rate_end = header.index("STATE"), header.index("REQ/S") + len("REQ/S")
    restarts, last = header.index("RESTARTS"), header.index("LAST EXIT")
    out = {}
    for line in lines:
        m = re.match(r"^\s+(\d+)\s+(\d+)\s", line)
        if not m or len(line) < last:
            continue
        rate = line[state:rate_end].split()[-1]
        out[int(m.group(1))] = {
            "pid": int(m.group(2)),
            "state": line[state:rate_end].split()[0],
            "rate": float(rate) if rate != "-" else -1.0,
            "restarts": int(line[restarts:last]),
            "last": line[last:].strip(),
        }
    return out


def total_rate(screen):
    t = re.search(r"(?m)^\s+total\s+\d+/\d+ ready\s+([\d.]+)", screen)
    return float(t.group(1)) if t else 0.0


class TopBase(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.d = Daemon(config(self.port))
        self.addCleanup(self.d.close)
        self.d.wait_log(r"web: all 2 workers ready")
        self.sock = os.path.join(self.d.dir, "control.sock")


@unittest.skipUnless(TMUX, "tmux is not installed (apt-get install tmux; scripts/dev.sh test "
                     "installs it)")
class TerminalTest(TopBase):
    """A shell in a tmux pane runs clusterd top."""

    def tmux(self, *args):
        r = subprocess.run([TMUX, "-L", self.server, "-f", "/dev/null", *args],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, f"tmux {args}: {r.stderr}")
        return r.stdout

    def start_shell(self):
        self.server = f"clusterd-top-{os.getpid()}-{self.id().rsplit('.', 1)[-1]}"
        self.tmux("new-session", "-d", "-s", "top", "-x", "120", "-y", "40",
                  "-e", "LANG=C.UTF-8", "bash --norc --noprofile")
        path = self.pane("#{socket_path}")

        def stop_server():
            subprocess.run([TMUX, "-L", self.server, "kill-server"], capture_output=True,
                           timeout=10)
            if os.path.exists(path):  # tmux leaves the socket file
                os.unlink(path)
        self.addCleanup(stop_server)
        wait_for(lambda: self.screen().strip(), 5, what="the shell's prompt")

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top")

    def pane(self, fmt):
        return self.tmux("display-message", "-p", "-t", "top", fmt).strip()

    def run_top(self, *args, env=""):
        command = env + " ".join([CLUSTERD, "top", "-s", self.sock, *args])
        self.tmux("send-keys", "-t", "top", f"{command}; echo top-exited $?", "Enter")
        wait_for(lambda: self.pane("#{alternate_on}") == "1" and "latest events" in self.screen(),
                 10, what="the view on the alternate screen")

    def wait_screen(self, predicate, timeout, what):
        last = [""]

        def check():
            last[0] = self.screen()
            return predicate(last[0])
        try:
            wait_for(check, timeout, interval=0.2, what=what)
            return last[0]
        except AssertionError:
            raise AssertionError(f"{what} not seen; the screen:\n{last[0]}")

    def assert_terminal_back(self, code):
        """The shell again, on the normal screen, in canonical mode with echo."""
        wait_for(lambda: f"top-exited {code}" in self.screen(), 10,
                 what=f"top to exit with {code}")
        self.assertEqual(self.pane("#{alternate_on}"), "0")
        self.assertEqual(self.pane("#{pane_current_command}"), "bash")
        self.tmux("send-keys", "-t", "top", "stty -a | tr ' ;' '\\n\\n' | grep -x -e -icanon -e "
                  "-echo -e icanon -e echo", "Enter")
        screen = self.wait_screen(lambda s: re.search(r"^icanon$", s, re.M) or
                                  re.search(r"^-icanon$", s, re.M), 5, "stty's modes")
        self.assertRegex(screen, r"(?m)^icanon$")
        self.assertRegex(screen, r"(?m)^echo$")
        self.assertNotRegex(screen, r"(?m)^-(icanon|echo)$")
        return screen

    def test_live_view_under_load_with_a_worker_killed(self):
        self.assertEqual(len(wait_for(lambda: len(self.d.workers()) == 2 and self.d.workers(), 5)),
                         2)
        self.start_shell()
        self.run_top("--interval", "0.5")
        wrk = Wrk(self.port, 8)
        time.sleep(2)
        victim = self.d.workers()[0]
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: self.d.workers().get(0) not in (None, victim) and
                            self.d.workers(), 10, what="slot 0 replaced")

        def complete(s):
            r = rows(s)
            return (all(r.get(slot, {}).get("pid") == pid and r[slot]["state"] == "ready"
                        for slot, pid in replaced.items()) and
                    r[0]["restarts"] == 1 and r[0]["rate"] > 0 and total_rate(s) > 0 and
                    re.search(rf"exited\s+web\[0\]\s+pid {victim} killed by SIGKILL", s) and
                    re.search(r"restarted\s+web\[0\]", s))
        screen = self.wait_screen(complete, 6, "the killed worker's restart, under load")
        if SHOW:
            print(f"\n--- clusterd top, 120x40, wrk running, worker {victim} killed ---\n"
                  + screen.rstrip("\n") + "\n---", flush=True)
        r = rows(screen)
        self.assertEqual(r[0]["last"], "killed by SIGKILL (crashed)", screen)
        self.assertEqual(r[1]["restarts"], 0, screen)
        self.assertEqual(r[1]["last"], "-", screen)
        self.assertRegex(screen, r"web\s+2/2 ready, generation 1")
        for line in screen.splitlines():
            self.assertLessEqual(len(line), 120)
        self.tmux("send-keys", "-t", "top", "q")
        self.assert_terminal_back(0)
        requests, errors, out = wrk.result()
        self.assertGreater(requests, 0, out)

    def test_the_terminal_comes_back_when_the_daemon_goes_away(self):
        self.start_shell()
        self.run_top()
        self.d.close()
        screen = self.assert_terminal_back(1)
        self.assertIn(f"clusterd: the daemon at {self.sock} went away", screen)

    def test_the_terminal_comes_back_on_sigterm_and_ctrl_c(self):
        self.start_shell()
        self.run_top()
        self.assertIn("\033[", self.tmux("capture-pane", "-e", "-p", "-t", "top"), "colours")
        self.tmux("send-keys", "-t", "top", "C-c")
        self.assert_terminal_back(0)
        self.tmux("send-keys", "-t", "top", "clear", "Enter")
        wait_for(lambda: "top-exited" not in self.screen(), 5, what="a clear screen")
        self.run_top(env="NO_COLOR=1 ")
        self.assertNotIn("\033[", self.tmux("capture-pane", "-e", "-p", "-t", "top"),
                         "no colour with NO_COLOR")
        shell = self.pane("#{pane_pid}")
        top = int(subprocess.run(["pgrep", "-P", shell, "-x", "clusterd"],
                                 capture_output=True, text=True).stdout.split()[0])
        os.kill(top, signal.SIGTERM)
        self.assert_terminal_back(128 + signal.SIGTERM)

    def test_the_view_goes_on_across_an_upgrade(self):
        # An idle control connection of another client: the exec must close it, not hand
        # it to the new image, which would never answer it.
        idle = socket.socket(socket.AF_UNIX)
        self.addCleanup(idle.close)
        idle.connect(self.sock)
        self.start_shell()
        self.run_top("--interval", "0.5")
        r = subprocess.run([CLUSTERD, "upgrade", "-s", self.sock], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        idle.settimeout(5)
        self.assertEqual(idle.recv(1), b"", "the idle connection is closed by the upgrade")
        self.wait_screen(lambda s: re.search(r"upgrade\s+upgraded from", s), 10,
                         "the upgrade event, on the events connection opened again")
        victim = self.d.workers()[1]
        os.kill(victim, signal.SIGKILL)
        self.wait_screen(lambda s: re.search(rf"exited\s+web\[1\]\s+pid {victim} killed", s) and
                         rows(s).get(1, {}).get("restarts") == 1, 10,
                         "the new image's status and events")
        self.tmux("send-keys", "-t", "top", "q")
        self.assert_terminal_back(0)

    def test_a_narrow_terminal_gets_a_narrow_frame(self):
        self.start_shell()
        self.run_top()
        self.tmux("resize-window", "-t", "top", "-x", "60", "-y", "15")
        screen = self.wait_screen(lambda s: "latest events" in s and
                                  max(len(line) for line in s.splitlines()) <= 60, 5,
                                  "the frame redrawn 60 wide")
        self.assertLessEqual(len(screen.splitlines()), 15)
        self.tmux("send-keys", "-t", "top", "q")
        self.assert_terminal_back(0)


class OneFrameTest(TopBase):
    """Not a terminal: one plain frame."""

    def test_one_plain_frame_when_stdout_is_not_a_terminal(self):
        workers = wait_for(lambda: len(self.d.workers()) == 2 and self.d.workers(), 5)
        os.kill(workers[1], signal.SIGKILL)
        wait_for(lambda: self.d.workers().get(1) not in (None, workers[1]), 10,
                 what="slot 1 replaced")
        wrk = Wrk(self.port, 4)
        r = subprocess.run([CLUSTERD, "top", "-s", self.sock, "--interval", "1"],
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "COLUMNS": "100"})
        wrk.result()
        self.assertEqual(r.returncode, 0, r.stderr)
        if SHOW:
            print("\n--- clusterd top | cat (COLUMNS=100) ---\n" + r.stdout + "---", flush=True)
        self.assertNotIn("\033", r.stdout)
        for line in r.stdout.splitlines():
            self.assertLessEqual(len(line), 100, line)
        self.assertGreater(total_rate(r.stdout), 0, r.stdout)
        self.assertRegex(r.stdout, rf"exited\s+web\[1\]\s+pid {workers[1]} killed by SIGKILL")
        shown = rows(r.stdout)
        self.assertEqual(sorted(shown), [0, 1], r.stdout)
        self.assertEqual(shown[1]["restarts"], 1, r.stdout)
        # 100 columns leave LAST EXIT 22: "killed by SIGKILL (cra".
        self.assertTrue(shown[1]["last"].startswith("killed by SIGKILL"), r.stdout)
        self.assertEqual(shown[0]["restarts"], 0, r.stdout)

    def test_an_unknown_program_or_no_daemon_fails_with_the_reason(self):
        r = subprocess.run([CLUSTERD, "top", "nosuch", "-s", self.sock], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn('no program named "nosuch"', r.stderr)
        r = subprocess.run([CLUSTERD, "top", "-s", self.sock + ".none"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot connect", r.stderr)


if __name__ == "__main__":
    unittest.main()

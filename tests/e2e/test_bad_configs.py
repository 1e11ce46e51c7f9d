"""End to end: every config of tests/bad_configs is refused, by `clusterd check` and by a hot
reload of one running daemon, with its expected message and position; the daemon keeps
serving with the same workers throughout. Files that are not regular files (a directory, a
FIFO, a symlink loop, an oversized file) are made here."""

import glob
import os
import re
import shutil
import stat
import subprocess
import time
import unittest

from harness import CLUSTERD, Daemon, free_port, http_get, wait_for

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../bad_configs")


def expectations(path):
    """(expected message fragment, "L:C" or None) from the file's header lines."""
    with open(path, "rb") as f:
        head = f.read(4096).split(b"\n")
    expect = head[0].decode().removeprefix("\ufeff").removeprefix("# expect: ")
    at = None
    if len(head) > 1 and head[1].startswith(b"# at: ") and head[1] != b"# at: -":
        at = head[1].decode().removeprefix("# at: ")
    return expect, at


def good_config(port):
    return f"""programs:
  web:
    cores: 2
    watchdog: 5s
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
"""


class BadConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = sorted(glob.glob(os.path.join(CORPUS, "*.yaml")))
        cls.port = free_port()
        cls.daemon = Daemon(good_config(cls.port))
        cls.daemon.wait_log(r"web: all 2 workers ready")
        cls.workers = wait_for(lambda: len(w := cls.daemon.workers()) == 2 and w, 5)
        cls.scratch = os.path.join(cls.daemon.dir, "scratch")
        os.mkdir(cls.scratch)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def control(self, *args):
        sock = os.path.join(self.daemon.dir, "control.sock")
        return subprocess.run([CLUSTERD, *args, "-s", sock], capture_output=True, text=True,
                              timeout=30)

    def check(self, path):
        return subprocess.run([CLUSTERD, "check", "-c", path], capture_output=True, timeout=30)

    def assert_refused(self, result, name, path, expect, at):
        out = (result.stdout if isinstance(result.stdout, str) else
               result.stdout.decode("utf-8", "replace"))
        err = (result.stderr if isinstance(result.stderr, str) else
               result.stderr.decode("utf-8", "replace"))
        text = out + err
        self.assertNotEqual(result.returncode, 0, f"{name}: accepted\n{text}")
        self.assertIn(expect, text, f"{name}: message")
        if at is not None:
            self.assertIn(f"{path}:{at}:", text, f"{name}: position")

    def assert_still_serving(self):
        self.assertEqual(self.daemon.workers(), self.workers, "the workers were replaced")
        self.assertEqual(http_get(self.port)[0], 200)
        self.assertIsNone(self.daemon.proc.poll(), "the daemon exited")

    def test_corpus_is_large_and_every_file_says_what_it_expects(self):
        self.assertGreaterEqual(len(self.files), 150)
        for path in self.files:
            expect, _ = expectations(path)
            self.assertTrue(expect, path)

    def test_every_file_is_refused_by_check_and_by_reload_and_nothing_running_changes(self):
        started = time.monotonic()
        for i, path in enumerate(self.files):
            name = os.path.basename(path)
            expect, at = expectations(path)
            with self.subTest(name):
                self.assert_refused(self.check(path), name, path, expect, at)
                shutil.copyfile(path, self.daemon.config)
                reloaded = self.control("reload")
                self.assert_refused(reloaded, name, self.daemon.config, expect, at)
                self.assertIn("nothing changed", reloaded.stdout + reloaded.stderr)
                if i % 10 == 0:
                    self.assert_still_serving()
        self.assert_still_serving()
        # The corpus is long; it must stay a quick test (one daemon, no restarts).
        self.assertLess(time.monotonic() - started, 120)
        status = self.control("status", "--json")
        self.assertEqual(status.returncode, 0)
        failed = int(re.search(r'"reloads_failed":\s*(\d+)', status.stdout).group(1))
        self.assertGreaterEqual(failed, len(self.files))

    def test_run_refuses_what_check_refuses_with_the_same_message(self):
        # A sample across every kind of mistake, and every machine check: `run` must exit 3
        # (invalid config) before starting anything, saying what `check` says.
        sample = [p for p in self.files if os.path.basename(p).startswith("runtime_")]
        sample += self.files[::10]
        for path in sample:
            name = os.path.basename(path)
            expect, at = expectations(path)
            with self.subTest(name):
                r = subprocess.run([CLUSTERD, "run", "-c", path,
                                    "--control", os.path.join(self.scratch, "run.sock"),
                                    "--state-dir", os.path.join(self.scratch, "state")],
                                   capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 3, f"{name}: {r.stderr!r}")
                self.assert_refused(r, name, path, expect, at)
                self.assertFalse(os.path.exists(os.path.join(self.scratch, "run.sock")))
        self.assert_still_serving()

    def special(self, make, expect):
        """`make(path)` puts a non-config at path; check and reload must both refuse it
        without blocking (a FIFO with no writer would block a plain open)."""
        path = os.path.join(self.scratch, "special.yaml")
        make(path)
        try:
            started = time.monotonic()
            self.assert_refused(self.check(path), expect, path, expect, None)
            os.remove(self.daemon.config)
            make(self.daemon.config)
            self.assert_refused(self.control("reload"), expect, self.daemon.config, expect, None)
            self.assertLess(time.monotonic() - started, 10)
        finally:
            for p in (path, self.daemon.config):
                if os.path.isdir(p) and not os.path.islink(p):
                    os.rmdir(p)
                elif os.path.lexists(p):
                    os.remove(p)
            with open(self.daemon.config, "w") as f:
                f.write(good_config(self.port))
        self.assert_still_serving()

    def test_a_directory(self):
        self.special(os.mkdir, "is a directory, not a config file")

    def test_a_fifo_does_not_block(self):
        self.special(os.mkfifo, "is a FIFO, not a regular file")

    def test_a_symlink_loop(self):
        self.special(lambda p: os.symlink(p, p), "Too many levels of symbolic links")

    def test_a_dangling_symlink(self):
        self.special(lambda p: os.symlink(p + ".missing", p), "No such file or directory")

    def test_a_unix_socket_file(self):
        import socket

        def make(p):
            s = socket.socket(socket.AF_UNIX)
            s.bind(p)
            s.close()
        self.special(make, "is a socket, not a regular file")

    def test_a_device(self):
        self.special(lambda p: os.symlink("/dev/null", p), "is a device, not a regular file")

    def test_an_oversized_file_is_refused_before_it_is_read(self):
        def make(p):
            with open(p, "w") as f:
                f.write("# padding\n" * 500_000)  # 5,000,000 bytes
        self.special(make, "is 5000000 bytes, more than the 4 MiB limit")

    def test_a_sparse_50_gb_file_is_refused_at_once(self):
        def make(p):
            with open(p, "w") as f:
                f.truncate(50 << 30)
        self.special(make, f"is {50 << 30} bytes, more than the 4 MiB limit")

    def test_the_good_config_still_reloads_after_all_that(self):
        with open(self.daemon.config, "w") as f:
            f.write(good_config(self.port))
        reloaded = self.control("reload")
        self.assertEqual(reloaded.returncode, 0, reloaded.stdout + reloaded.stderr)
        self.assert_still_serving()


if __name__ == "__main__":
    unittest.main()

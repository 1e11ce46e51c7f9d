"""End to end: clusterd supervising existing programs (issue 4): a worker written with the
C++ SDK, Python and Node.js servers, user/group drop, watchdog, exec failure, grandchildren."""

import os
import re
import signal
import sys
import threading
import time
import unittest

from harness import BIN, Daemon, http_get, free_port, pid_alive, wait_for

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
                                                      r"^python worker [01] pid \d+\n$")
        self.assertNotIn("sent no heartbeat", d.log_text())
        self.assertIn("exited with code 0", d.log_text())  # graceful stop on TERM
        print(f"\npython workers served: {sorted(set(b.split()[2] for b in served))}")


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


if __name__ == "__main__":
    unittest.main()

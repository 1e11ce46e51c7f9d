"""End to end: Node apps unmodified under clusterd (`ipc: node`, daemon/net/node_channel.hpp).

clusterd gives each worker Node's IPC channel and answers on it as the Node cluster primary: an
app's plain `server.listen(PORT)` gets the master's socket for that port. These tests run the
machine's Node on the apps in programs/node/, and fail naming the Node version if the cluster
protocol they speak is not the one clusterd knows."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import unittest

from harness import (CLUSTERD, Daemon, Load, environ_of, free_port, http_get, pid_alive, sample,
                     wait_for)

# Another Node to check the protocol against (a `node` wrapper around another install).
NODE = os.environ.get("CLUSTERD_TEST_NODE", "/usr/bin/node")
APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs", "node")
APP = os.path.join(APPS, "app.js")
CLUSTER_APP = os.path.join(APPS, "cluster_app.js")


def node_version():
    try:
        return subprocess.run([NODE, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return None


VERSION = node_version()


def config(port, app=APP, extra="", env=None, metrics=None):
    env_lines = "".join(f'      {k}: "{v}"\n' for k, v in {"PORT": port, **(env or {})}.items())
    return f"""
daemon:
  shutdown_timeout: 10s
{f"  metrics: 127.0.0.1:{metrics}" if metrics else ""}
programs:
  web:
    command: ["{NODE}", "{app}"]
    cores: 2
    stop_timeout: 3s
    output: capture
    env:
{env_lines}    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
{extra}
"""


def pid_of(body):
    m = re.search(rb"pid (\d+)", body)
    return int(m.group(1)) if m else None


@unittest.skipUnless(VERSION, f"{NODE} not found (Debian package nodejs)")
class NodeAppTest(unittest.TestCase):
    def start(self, text):
        d = Daemon(text)
        self.addCleanup(d.close)
        return d

    def ctl(self, d, *args):
        return subprocess.run([CLUSTERD, *args, "-s", os.path.join(d.dir, "control.sock")],
                              capture_output=True, text=True, timeout=60)

    def status(self, d):
        r = self.ctl(d, "status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])["status"]["programs"][0]

    def wait_ready(self, d, timeout=20):
        try:
            d.wait_log(r"web: all 2 workers ready", timeout=timeout)
        except AssertionError as e:
            raise AssertionError(
                f"Node {VERSION}: the workers did not get their sockets from clusterd; if "
                f"Node's cluster protocol changed, daemon/net/node_channel.hpp must follow it\n"
                f"{e}") from None
        return wait_for(lambda: len(d.workers()) == 2 and d.workers(), 5, what="2 workers")

    def assert_protocol_known(self, d):
        self.assertNotIn("unknown Node cluster message", d.log_text(),
                         f"Node {VERSION} speaks a cluster protocol clusterd does not know")

    def test_plain_app_serves_under_wrk_and_a_killed_worker_is_replaced(self):
        port, metrics = free_port(), free_port()
        d = self.start(config(port, metrics=metrics))
        workers = self.wait_ready(d)
        # Both workers answer, each on its own socket of the port.
        seen = set()
        for _ in range(40):
            status, body = http_get(port)
            self.assertEqual(status, 200)
            seen.add(pid_of(body))
        self.assertEqual(seen, set(workers.values()))
        out = subprocess.run(["wrk", "-t2", "-c16", "-d2s", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True, timeout=60).stdout
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        self.assertGreater(requests, 1000, out)
        self.assertNotIn("Socket errors", out)
        self.assertNotIn("Non-2xx", out)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
        print(f"\nNode {VERSION}, 2 workers under clusterd: {rate} req/s")
        # kill -9: replaced, the replacement gets the slot's socket and serves.
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        after = wait_for(lambda: (w := d.workers()).get(0, victim) != victim and w, 10,
                         what="replacement in slot 0")
        d.wait_log(rf"web\[0\]: pid {after[0]} ready", timeout=20)
        seen = {pid_of(http_get(port)[1]) for _ in range(40)}
        self.assertEqual(seen, {after[0], workers[1]})
        text = urlopen_text(metrics)
        self.assertEqual(sample(text, "clusterd_node_channel_total", event="server_given"), 3)
        self.assertEqual(sample(text, "clusterd_node_channel_total", event="server_refused"), 0)
        self.assert_protocol_known(d)
        # The worker's environment: Node's channel, the cluster worker id per slot, PM2's
        # instance number, and the watchdog pid only with a watchdog.
        env = environ_of(after[0])
        self.assertEqual(env["NODE_CHANNEL_SERIALIZATION_MODE"], "json")
        self.assertEqual(env["NODE_CHANNEL_FD"], "4")  # after the one listener at fd 3
        self.assertNotIn("WATCHDOG_PID", env)

    def test_cluster_module_app_only_serves_under_clusterd(self):
        port = free_port()
        d = self.start(config(port, app=CLUSTER_APP))
        workers = self.wait_ready(d)
        bodies = {http_get(port)[1].decode() for _ in range(40)}
        # Worker ids are the slots' (1-based): stable across restarts.
        self.assertEqual({re.sub(r" pid \d+", "", b) for b in bodies},
                         {"cluster worker 1\n", "cluster worker 2\n"})
        time.sleep(0.5)
        for pid in workers.values():  # cluster.isPrimary was false: nothing forked
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                self.assertEqual(f.read().split(), [], "a worker forked workers of its own")
        self.assert_protocol_known(d)

    def test_rolling_restart_gated_on_process_send_ready_loses_nothing(self):
        port = free_port()
        d = self.start(config(port, extra="    ready: notify\n",
                              env={"SEND_READY": "1", "READY_DELAY_MS": "300"}))
        before = self.wait_ready(d)
        with Load(port, threads=4) as load:
            time.sleep(0.5)
            t0 = time.monotonic()
            r = self.ctl(d, "restart", "--rolling", "web")
            took = time.monotonic() - t0
            time.sleep(0.5)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(load.errors, [], "a request failed during the rolling restart")
        self.assertGreater(load.ok, 100)
        after = d.workers()
        self.assertFalse(set(after.values()) & set(before.values()))
        # Each new worker was ready only once it sent 'ready', 300 ms after listening.
        for pid in after.values():
            ms = int(d.wait_log(rf"web\[\d\]: pid {pid} ready after (\d+)ms")[0].split()[-1][:-2])
            self.assertGreaterEqual(ms, 300, "ready before process.send('ready')")
        self.assertGreater(took, 0.6, "the roll did not wait for process.send('ready')")
        print(f"\nrolling restart of 2 Node workers: {took * 1000:.0f} ms, "
              f"{load.ok} requests, 0 failed")

    def test_no_ready_message_is_a_failed_start_not_ready_anyway(self):
        port = free_port()
        d = self.start(config(port, extra="    ready: notify\n    start_timeout: 1s\n"))
        d.wait_log(r"web\[0\]: pid \d+ not ready after 1s", timeout=10)
        prog = self.status(d)
        self.assertFalse(any(s["state"] == "ready" for s in prog["slots"]), prog)

    def test_watchdog_replaces_a_worker_whose_loop_is_blocked(self):
        port = free_port()
        d = self.start(config(port, extra="    watchdog: 1s\n", env={"HEARTBEAT_MS": "200"}))
        workers = self.wait_ready(d)
        time.sleep(2)  # heartbeats keep both alive past the watchdog
        self.assertEqual(d.workers(), workers)
        self.assertEqual(environ_of(workers[0])["WATCHDOG_PID"], str(workers[0]))
        # Block one worker's loop: a request handler that never returns.
        blocker = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(blocker.close)
        blocker.sendall(b"GET /block HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        t0 = time.monotonic()
        changed = wait_for(lambda: (w := d.workers()) and len(w) == 2 and
                           set(w.values()) != set(workers.values()) and w, 10,
                           what="a replacement of the blocked worker")
        new = (set(changed.values()) - set(workers.values())).pop()
        slot = [s for s, p in changed.items() if p == new][0]
        d.wait_log(rf"web\[{slot}\]: pid {new} ready", timeout=10)
        served = wait_for(lambda: new in {pid_of(http_get(port)[1]) for _ in range(20)}, 10,
                          what="the replacement serving")
        took = time.monotonic() - t0
        self.assertTrue(served)
        # New connections left it at once (late), a spare took its slot, and the watchdog
        # ends it.
        d.wait_log(rf"pid {workers[slot]} late: no heartbeat")
        d.wait_log(rf"pid {workers[slot]} sent no heartbeat for 1s", timeout=5)
        print(f"\nNode {VERSION}: blocked loop to its replacement serving: {took * 1000:.0f} ms "
              f"(watchdog 1s)")

    def test_an_address_the_program_does_not_have_is_refused_clearly(self):
        port, other = free_port(), free_port()
        d = self.start(config(port, env={"PORT": other}))  # the app listens where it should not
        d.wait_log(rf"listen\(:{other}\) refused with EADDRNOTAVAIL: no listen entry has port "
                   rf"{other} \(the program listens on 127.0.0.1:{port}\)", timeout=10)
        d.wait_log(r"app: listen failed: .*EADDRNOTAVAIL", timeout=10)

    def test_shutdown_message_instead_of_the_stop_signal(self):
        port = free_port()
        d = self.start(config(port, extra="    shutdown_message: true\n",
                              env={"TERM_EXIT": "7"}))
        workers = self.wait_ready(d)
        r = self.ctl(d, "stop", "web")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for pid in workers.values():
            d.wait_log(rf"app: pid {pid} got 'shutdown'")
        wait_for(lambda: not any(pid_alive(p) for p in workers.values()), 10, what="exits")
        self.assertNotIn("got SIGTERM", d.log_text())
        self.assertNotRegex(d.log_text(), r"exited with code 7")

    def test_notify_messages_and_an_upgrade_keep_the_channel(self):
        port = free_port()
        d = self.start(config(port, extra="    watchdog: 1s\n",
                              env={"HEARTBEAT_MS": "200", "STATUS_MS": "100"}))
        workers = self.wait_ready(d)
        wait_for(lambda: all(s["status"].startswith("tick") for s in self.status(d)["slots"]),
                 5, what="STATUS from {notify: ...}")
        r = self.ctl(d, "upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        d.wait_log(r"upgraded", timeout=20)
        ticks = {s["pid"]: int(s["status"].split()[1]) for s in self.status(d)["slots"]}
        # The new image reads the same channels: heartbeats keep the workers past the
        # watchdog, and their status goes on.
        time.sleep(2.5)
        self.assertEqual(d.workers(), workers)
        later = {s["pid"]: int(s["status"].split()[1]) for s in self.status(d)["slots"]}
        for pid, n in ticks.items():
            self.assertGreater(later[pid], n + 10)
        self.assertEqual({pid_of(http_get(port)[1]) for _ in range(40)}, set(workers.values()))


def urlopen_text(port):
    return http_get(port, "/metrics")[1].decode()


if __name__ == "__main__":
    unittest.main()

"""End to end: the notify path under attack and under stalls.

Workers are small Python programs speaking sd_notify; the daemon is the built clusterd. What
is shown: another uid cannot reach a worker's notify socket and its flood costs no restart;
a worker flooding its own socket (a million fields, oversized datagrams) costs the master
neither memory nor a slow `status` nor another worker's heartbeats; a master stopped
(SIGSTOP) for longer than the watchdog kills no healthy worker when continued, with 4 or 32
workers heartbeating.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

from harness import CLUSTERD, SANITIZED, Daemon, free_port, http_get

NOBODY = 65534

HEARTBEAT_WORKER = r"""
import os, socket, sys, time
interval = float(sys.argv[1])
addr = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
target = "\0" + addr[1:] if addr.startswith("@") else addr
def send(b):
    try:
        s.sendto(b, target)
    except (BlockingIOError, ConnectionRefusedError):
        pass  # a full queue: the next heartbeat follows
send(b"READY=1\nWATCHDOG=1")
while True:
    time.sleep(interval)
    send(b"WATCHDOG=1")
"""

# Floods its own notify socket for argv[1] seconds: a million distinct fields in full
# datagrams, oversized datagrams and long STATUS texts; heartbeats in between.
SELF_FLOOD_WORKER = r"""
import os, socket, sys, time
until = time.monotonic() + float(sys.argv[1])
addr = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
def send(b):
    try:
        s.sendto(b, addr)
        return True
    except (BlockingIOError, ConnectionRefusedError):
        return False
send(b"READY=1\nWATCHDOG=1")
n = 0
last = 0
reported = False
while time.monotonic() < until:
    lines = []
    size = 0
    while size < 3900:
        line = f"X_CLUSTERD_F{n}={n}\n"
        lines.append(line)
        size += len(line)
        n += 1
    if send("".join(lines).encode()):
        pass
    send(b"STATUS=" + b"s" * 3000 + b"\nX_CLUSTERD_" + b"K" * 200 + b"=1\nX_CLUSTERD_V=" + b"v" * 600)
    send(b"x" * 60000)
    if time.monotonic() - last > 0.2:
        send(b"WATCHDOG=1")
        last = time.monotonic()
    if n >= 1_000_000 and not reported:
        print(f"sent {n} distinct fields", flush=True)
        reported = True
print(f"sent {n} distinct fields in all", flush=True)
while True:
    time.sleep(0.2)
    send(b"WATCHDOG=1")
"""

# Run as uid nobody: sends to every notify socket it can find for argv[1] seconds (paths
# under the daemon's notify dir and any abstract "@clusterd" name in /proc/net/unix), and
# prints a JSON summary of the outcomes.
FLOODER = r"""
import errno, json, os, socket, sys, time
seconds, needle = float(sys.argv[1]), sys.argv[2]
targets = set()
with open("/proc/net/unix") as f:
    for line in f.read().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and (needle in parts[7] or parts[7].startswith("@clusterd")):
            targets.add(parts[7])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
outcome = {"targets": sorted(targets), "ok": 0, "errors": {}}
payload = b"WATCHDOG=1\n" + b"X" * 4000
until = time.monotonic() + seconds
while time.monotonic() < until:
    for t in targets:
        addr = "\0" + t[1:] if t.startswith("@") else t
        try:
            s.sendto(payload, addr)
            outcome["ok"] += 1
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            outcome["errors"][name] = outcome["errors"].get(name, 0) + 1
    if not targets:
        time.sleep(0.1)
# connect() too, the way a client would try first.
outcome["connect"] = {}
for t in targets:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        c.connect("\0" + t[1:] if t.startswith("@") else t)
        outcome["connect"][t] = "ok"
    except OSError as e:
        outcome["connect"][t] = errno.errorcode.get(e.errno, str(e.errno))
    c.close()
print(json.dumps(outcome))
"""


def environ_value(pid, name):
    with open(f"/proc/{pid}/environ", "rb") as f:
        for entry in f.read().split(b"\0"):
            if entry.startswith(name.encode() + b"="):
                return entry.decode()[len(name) + 1:]
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class NotifyHostile(unittest.TestCase):
    def start(self, programs, metrics=False):
        d = Daemon()
        self.addCleanup(d.close)
        # Other uids may traverse the daemon's directory: what keeps them out is the notify
        # sockets' own permissions, not a private temp dir.
        os.chmod(d.dir, 0o755)
        for name, text in (("hb.py", HEARTBEAT_WORKER), ("selfflood.py", SELF_FLOOD_WORKER),
                           ("flood.py", FLOODER)):
            with open(os.path.join(d.dir, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(d.dir, name), 0o644)
        self.mport = free_port() if metrics else None
        daemon = f'daemon:\n  metrics: "127.0.0.1:{self.mport}"\n' if metrics else ""
        d.write_config(daemon + "programs:\n" + programs.format(dir=d.dir))
        d.launch()
        self.sock = os.path.join(d.dir, "control.sock")
        return d

    def status(self):
        start = time.monotonic()
        r = subprocess.run([CLUSTERD, "status", "--json", "-s", self.sock], capture_output=True,
                           text=True, timeout=30)
        took = time.monotonic() - start
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])["status"], took

    def slots(self, program):
        st, _ = self.status()
        return [p for p in st["programs"] if p["name"] == program][0]["slots"]

    def assert_no_restarts(self, d, program, pids):
        slots = self.slots(program)
        self.assertEqual({s["slot"]: s["pid"] for s in slots}, pids)
        self.assertEqual([s["restarts"] for s in slots], [0] * len(slots))
        self.assertEqual([s["state"] for s in slots], ["ready"] * len(slots))
        log = d.log_text()
        self.assertNotRegex(log, rf"{program}\[\d+\]: pid \d+ (late|not ready|killed|hung)")
        # Only this program's workers: a flooding worker may well miss its own heartbeats.
        self.assertNotRegex(log, rf"{program}\[\d+\]: abandoned")

    def ready_pids(self, d, program, n, timeout=30):
        d.wait_log(rf"{program}: all {n} workers ready", timeout=timeout)
        return {s["slot"]: s["pid"] for s in self.slots(program)}

    def test_another_uid_cannot_reach_the_notify_sockets_and_its_flood_costs_no_restart(self):
        d = self.start("""  app:
    command: ["/usr/bin/env", "python3", "{dir}/hb.py", "0.25"]
    cores: 4
    watchdog: 2s
""")
        pids = self.ready_pids(d, "app", 4)
        notify = environ_value(pids[0], "NOTIFY_SOCKET")
        self.assertTrue(notify.startswith(os.path.join(d.dir, "control.notify") + "/"), notify)
        st = os.stat(notify)
        self.assertEqual(st.st_mode & 0o7777, 0o600)
        # A Python other users can run (not one under root's home).
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        flood = subprocess.run([python, os.path.join(d.dir, "flood.py"), "10",
                                os.path.join(d.dir, "control.notify")],
                               user=NOBODY, group=NOBODY, capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(flood.returncode, 0, flood.stderr)
        outcome = json.loads(flood.stdout)
        print(f"\nnobody's flood for 10 s: {outcome['ok']} datagrams delivered, errors "
              f"{outcome['errors']}, targets {len(outcome['targets'])}")
        # Every worker's socket was found and tried; not one datagram got through.
        self.assertEqual(len(outcome["targets"]), 4)
        self.assertEqual(outcome["ok"], 0)
        self.assertEqual(set(outcome["errors"]), {"EACCES"})
        self.assertGreater(outcome["errors"]["EACCES"], 1000)
        self.assertEqual(set(outcome["connect"].values()), {"EACCES"})
        # No abstract notify socket is left to flood.
        with open("/proc/net/unix") as f:
            self.assertNotIn("@clusterd/", f.read())
        self.assert_no_restarts(d, "app", pids)

    def test_a_worker_flooding_its_own_socket_costs_the_master_and_the_others_nothing(self):
        d = self.start("""  app:
    command: ["/usr/bin/env", "python3", "{dir}/hb.py", "0.25"]
    cores: 4
    watchdog: 2s
  noisy:
    command: ["/usr/bin/env", "python3", "{dir}/selfflood.py", "12"]
    cores: 1
    watchdog: 2s
""", metrics=True)
        pids = self.ready_pids(d, "app", 4)
        self.ready_pids(d, "noisy", 1)
        rss_before = rss_kib(d.pid)
        log_before = len(d.log_text())
        worst = 0.0
        peak = rss_before
        end = time.monotonic() + 10
        while time.monotonic() < end:
            _, took = self.status()
            worst = max(worst, took)
            peak = max(peak, rss_kib(d.pid))
            time.sleep(0.2)
        noisy = self.slots("noisy")[0]
        log_growth = len(d.log_text()) - log_before
        print(f"\nself-flood: master RSS {rss_before} -> peak {peak} KiB, slowest status "
              f"{worst * 1000:.0f} ms, {len(noisy['fields'])} fields kept, log +{log_growth} B")
        self.assertLessEqual(len(noisy["fields"]), 32)
        self.assertLessEqual(len(noisy["status"]), 1024)
        if not SANITIZED:
            self.assertLess(peak - rss_before, 20 * 1024)
        self.assertLess(worst, 1.0)
        self.assertLess(log_growth, 20_000)
        d.wait_log(r"noisy\[0\]: \d+ more notify warnings suppressed", timeout=15)
        d.wait_log(r"noisy\[0\] sent \d+ distinct fields")
        _, body = http_get(self.mport, "/metrics")
        metrics = body.decode()
        for reason in ("oversized", "field_limit", "status_truncated"):
            m = re.search(rf'clusterd_notify_rejected_total{{reason="{reason}"}} (\d+)', metrics)
            self.assertIsNotNone(m, reason)
            self.assertGreater(int(m.group(1)), 0, reason)
        self.assertRegex(metrics, r"clusterd_notify_warnings_suppressed_total [1-9]")
        # The flooder may lose its own heartbeats in its own full queue (and be restarted by
        # its watchdog); the other program's workers lose nothing.
        self.assert_no_restarts(d, "app", pids)

    def stop_master_repeatedly(self, d, program, pids, stop_for, rounds):
        for _ in range(rounds):
            d.signal(signal.SIGSTOP)
            time.sleep(stop_for)
            d.signal(signal.SIGCONT)
            time.sleep(2.5)  # past the watchdog again, on heartbeats read after the stall
            self.assert_no_restarts(d, program, pids)

    def test_a_master_stopped_longer_than_the_watchdog_kills_no_healthy_worker(self):
        d = self.start("""  app:
    command: ["/usr/bin/env", "python3", "{dir}/hb.py", "0.25"]
    cores: 4
    watchdog: 2s
""")
        pids = self.ready_pids(d, "app", 4)
        self.stop_master_repeatedly(d, "app", pids, stop_for=2.5, rounds=3)

    def test_32_workers_heartbeating_fast_while_the_master_is_stopped_lose_nothing(self):
        d = self.start("""  app:
    command: ["/usr/bin/env", "python3", "{dir}/hb.py", "0.05"]
    cores: 32
    watchdog: 2s
    start_timeout: 60s
""")
        pids = self.ready_pids(d, "app", 32, timeout=60)
        # The fd cost: exactly one notify socket per worker in the master, none elsewhere.
        notify_dir = os.path.dirname(environ_value(pids[0], "NOTIFY_SOCKET"))
        inodes = {}
        with open("/proc/net/unix") as f:
            for line in f.read().splitlines()[1:]:
                parts = line.split()
                if len(parts) >= 8 and parts[7].startswith(notify_dir + "/"):
                    inodes[parts[6]] = parts[7]
        fds = os.listdir(f"/proc/{d.pid}/fd")
        held = [os.readlink(f"/proc/{d.pid}/fd/{fd}") for fd in fds]
        mine = [h for h in held if h.startswith("socket:[") and h[8:-1] in inodes]
        print(f"\nmaster fds with 32 workers: {len(fds)}, notify sockets among them: {len(mine)}")
        self.assertEqual(len(mine), 32)
        self.assertEqual(len(inodes), 32)
        self.stop_master_repeatedly(d, "app", pids, stop_for=2.5, rounds=3)
        # Once more under the watchdog itself: 32 x 20 heartbeats/s for 10 s, the master
        # stopped for a quarter of every watchdog period.
        end = time.monotonic() + 10
        while time.monotonic() < end:
            d.signal(signal.SIGSTOP)
            time.sleep(0.25)
            d.signal(signal.SIGCONT)
            time.sleep(0.25)
        time.sleep(1.0)
        self.assert_no_restarts(d, "app", pids)


if __name__ == "__main__":
    unittest.main()

"""End to end: the scoreboard (worker/scoreboard.hpp). A worker's heartbeat and figures are
stores into its record in a memfd the master made; the master reads them when asked and
checks the heartbeats with one timer per program, so workers at rest cost it no wakeup."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from harness import CLUSTERD, Daemon, ctx_switches, free_port, http_get, sample, wait_for

# A worker in Python that uses nothing of clusterd's but the documented record layout: it maps
# its record with mmap, says what it writes, sends READY=1 (announcing a heartbeat every 250 ms),
# then stores one every 100 ms (and no WATCHDOG=1 datagram ever) until DIR/hang-SLOT appears.
PY_WORKER = textwrap.dedent("""
    import mmap, os, socket, struct, sys, time
    fd, offset = (int(x) for x in os.environ["CLUSTERD_SCOREBOARD"].split(":"))
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                  offset=offset & ~4095)
    os.close(fd)
    base = offset & 4095
    magic, version, size, pid = struct.unpack_from("<IHHi", m, base)
    if (magic, version, pid) != (0x42534443, 1, os.getpid()) or size < 128:
        sys.exit("bad record: %x %d %d %d" % (magic, version, size, pid))
    def put(off, fmt, v):
        struct.pack_into(fmt, m, base + off, v)
    def alive():
        put(16, "<Q", time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    def status(text):
        seq = struct.unpack_from("<I", m, base + 80)[0]
        put(80, "<I", seq | 1)
        m[base + 88:base + 128] = text.encode()[:39].ljust(40, b"\\0")
        put(80, "<I", (seq | 1) + 1)
    put(12, "<I", 3)  # heartbeat | figures
    alive()
    put(32, "<Q", 7)     # connections
    put(40, "<Q", 1234)  # requests
    status("python slot " + os.environ["CLUSTERD_WORKER_ID"])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1\\nX_CLUSTERD_HEARTBEAT_USEC=250000", os.environ["NOTIFY_SOCKET"])
    hang = os.path.join(sys.argv[1], "hang-" + os.environ["CLUSTERD_WORKER_ID"])
    while not os.path.exists(hang):
        alive()
        time.sleep(0.1)
    while True:
        time.sleep(60)
""")


def foreign_checks(seconds):
    """Wakeups of the master's foreign-socket check (every 2 s, without identity steering)
    in a window of `seconds`."""
    return seconds // 2 + 1


class ScoreboardTest(unittest.TestCase):
    def start(self, config):
        self.d = Daemon(config)
        self.addCleanup(self.d.close)
        self.sock = os.path.join(self.d.dir, "control.sock")
        wait_for(lambda: os.path.exists(self.sock), 5, what="control socket")

    def ctl(self, *args):
        return subprocess.run([CLUSTERD, *args, "-s", self.sock], capture_output=True, text=True,
                              timeout=30)

    def status(self):
        r = self.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["status"]

    def program(self, name):
        return next(p for p in self.status()["programs"] if p["name"] == name)

    def test_a_python_worker_heartbeats_through_its_record_and_is_caught_hanging(self):
        tmp = tempfile.mkdtemp(prefix="clusterd-board-")
        self.addCleanup(shutil.rmtree, tmp, True)
        script = os.path.join(tmp, "worker.py")
        with open(script, "w") as f:
            f.write(PY_WORKER)
        self.start(f"""
programs:
  py:
    cores: 3
    command: ["{sys.executable}", "{script}", "{tmp}"]
    ready: notify
    watchdog: 1s
    min_uptime: 0s
""")
        self.d.wait_log(r"py: all 3 workers ready")
        pids = self.d.workers()
        # Its figures and status are the record's; its heartbeats too: three watchdog periods
        # without a single WATCHDOG=1 datagram, and nobody is late or killed.
        time.sleep(3)
        prog = self.program("py")
        for slot in prog["slots"]:
            self.assertEqual(slot["state"], "ready")
            self.assertFalse(slot["late"])
            self.assertEqual(slot["fields"]["REQUESTS"], "1234")
            self.assertEqual(slot["fields"]["CONNECTIONS"], "7")
            self.assertEqual(slot["status"], f"python slot {slot['slot']}")
        self.assertEqual(prog["exits"], {})
        self.assertEqual(self.d.workers(), pids)
        # Slot 1 stops storing heartbeats: late, then aborted by the watchdog and replaced;
        # the others are untouched.
        open(os.path.join(tmp, "hang-1"), "w").close()
        self.d.wait_log(rf"py\[1\]: pid {pids[1]} late: no heartbeat", timeout=5)
        self.d.wait_log(rf"py\[1\]: pid {pids[1]} sent no heartbeat for 1s", timeout=5)
        os.unlink(os.path.join(tmp, "hang-1"))
        wait_for(lambda: self.d.workers().get(1) not in (None, pids[1]), 10,
                 what="slot 1 replaced")
        self.d.wait_log(r"py\[1\]: pid \d+ ready", count=2)
        prog = self.program("py")
        self.assertEqual(prog["exits"], {"watchdog": 1})
        self.assertEqual(self.d.workers()[0], pids[0])
        self.assertEqual(self.d.workers()[2], pids[2])

    def settle(self, programs):
        for name, n in programs:
            self.d.wait_log(rf"{name}: all {n} workers ready")
        # The start's flood of worker events is summed up in one line after 5 s (a timer):
        # past that, nothing is due.
        self.d.wait_log(r"more worker events in the last", timeout=10, count=len(programs))
        time.sleep(0.5)

    def test_the_built_in_worker_costs_the_master_nothing_at_rest(self):
        port, mport = free_port(), free_port()
        self.start(f"""
daemon:
  metrics: 127.0.0.1:{mport}
programs:
  web:
    cores: 32
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
        self.settle([("web", 32)])
        for _ in range(20):
            self.assertEqual(http_get(port)[0], 200)
        time.sleep(1.5)  # every worker has stored its figures once since
        prog = self.program("web")
        self.assertEqual(sum(int(s["fields"]["REQUESTS"]) for s in prog["slots"]), 20)
        # Each GET is a few dozen bytes in, each answer a head and the 27-byte body out.
        self.assertGreater(sum(int(s["fields"]["BYTES_IN"]) for s in prog["slots"]), 20 * 30)
        self.assertGreater(sum(int(s["fields"]["BYTES_OUT"]) for s in prog["slots"]), 20 * 100)
        metrics = http_get(mport, "/metrics")[1]
        self.assertEqual(sum(sample(metrics, "clusterd_worker_requests_total", program="web",
                                    slot=str(i)) or 0 for i in range(32)), 20)
        # 32 workers store their figures every second (32 datagrams a second before the
        # scoreboard); the master, asked nothing, does not run at all. (Asio leaves the
        # timerfd of a cancelled timer armed: the scrape's 5 s exchange timeout wakes the
        # loop once when it would have expired; so the window starts after it.) Where the
        # master cannot steer by socket identity (no eBPF: a container's syscall filter, no
        # CAP_BPF), it looks for foreign sockets in its reuseport groups every 2 s: the only
        # wakeups left then.
        steering = prog["reuseport"][0]["steering"]
        time.sleep(5.5)
        before = ctx_switches(self.d.pid)
        time.sleep(5)
        wakeups = ctx_switches(self.d.pid) - before
        print(f"\nmaster wakeups in 5 s at rest, 32 built-in workers: {wakeups} "
              f"(steering: {steering})", file=sys.stderr)
        if steering == "identity":
            self.assertEqual(wakeups, 0)
        else:
            self.assertLessEqual(wakeups, foreign_checks(5))

    def test_heartbeats_of_many_workers_cost_one_timer(self):
        port, mport = free_port(), free_port()
        self.start(f"""
daemon:
  metrics: 127.0.0.1:{mport}
programs:
  dog:
    cores: 32
    watchdog: 1s
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
        self.settle([("dog", 32)])

        def checks():
            text = http_get(mport, "/metrics")[1]
            return sample(text, "clusterd_watchdog_checks_total", program="dog")

        # 32 workers heartbeating every 500 ms (64 datagrams and deadline re-arms a second
        # before the scoreboard): the master wakes for its one board timer, at most 4 times a
        # second (the heartbeat deadline is 1.5 heartbeats: 750 ms), and for nothing else.
        c0 = checks()
        before = ctx_switches(self.d.pid)
        time.sleep(5)
        wakeups = ctx_switches(self.d.pid) - before
        fired = checks() - c0
        print(f"\nmaster wakeups in 5 s, 32 workers at watchdog 1s: {wakeups}, board timer "
              f"{fired:g}", file=sys.stderr)
        self.assertGreaterEqual(fired, 5)
        self.assertLessEqual(fired, 4 * 5 + 1)
        # + the stale timer of the scrape that read `checks` first, and the foreign-socket
        # checks where there is no identity steering (see the test above).
        steering = self.program("dog")["reuseport"][0]["steering"]
        self.assertLessEqual(wakeups, fired + 2 + (0 if steering == "identity" else
                                                   foreign_checks(5)))
        prog = self.program("dog")
        self.assertEqual(prog["exits"], {})
        self.assertTrue(all(s["state"] == "ready" and not s["late"] for s in prog["slots"]))

    def test_heartbeats_in_the_record_survive_an_upgrade(self):
        self.start(f"""
programs:
  dog:
    cores: 4
    watchdog: 1s
    listen:
      - {{name: http, address: "127.0.0.1:{free_port()}"}}
""")
        self.d.wait_log(r"dog: all 4 workers ready")
        pids = self.d.workers()
        r = self.ctl("upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        time.sleep(3)  # three watchdog periods in the new image
        self.assertEqual(self.d.workers(), pids)
        prog = self.program("dog")
        self.assertEqual(prog["exits"], {})
        self.assertTrue(all(s["state"] == "ready" and not s["late"] for s in prog["slots"]))
        # And a hang is still caught there: the new image reads the same records.
        victim = pids[2]
        os.kill(victim, signal.SIGSTOP)
        self.d.wait_log(rf"dog\[2\]: pid {victim} sent no heartbeat for 1s", timeout=5)
        wait_for(lambda: self.d.workers().get(2) not in (None, victim), 10,
                 what="slot 2 replaced")


if __name__ == "__main__":
    unittest.main()

"""End to end: start order gated on readiness (depends_on), the stop order, and periodic
recycling (max_age) under load."""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest

from harness import BIN, CLUSTERD, MISBEHAVE, Daemon, Wrk, free_port, wait_for

NEXT = os.path.join(BIN, "clusterd-next")



def log_lines(d, pattern):
    rx = re.compile(pattern)
    return [(i, l) for i, l in enumerate(d.log_text().splitlines()) if rx.search(l)]


class DependsOnTest(unittest.TestCase):
    def test_api_waits_for_a_slow_db_and_stops_before_it(self):
        # db takes 1.5 s to be ready; api ignores TERM for a while when stopped (its stop
        # takes 1 s: stop_timeout), so the order of the two stops shows in the log.
        d = Daemon(f"""
programs:
  db:
    cores: 1
    command: ["/bin/sh", "-c", "sleep 1.5; exec {MISBEHAVE} ready"]
  api:
    cores: 2
    depends_on: [db]
    stop_timeout: 1s
    command: ["{MISBEHAVE}", "ignore-term"]
""")
        self.addCleanup(d.close)
        sock = os.path.join(d.dir, "control.sock")
        wait_for(lambda: os.path.exists(sock), 5, what="control socket")
        d.wait_log(r"api: waiting for db to be ready \(depends_on\)")
        status = subprocess.run([CLUSTERD, "status", "--json", "-s", sock], capture_output=True,
                                text=True)
        api = next(p for p in json.loads(status.stdout)["status"]["programs"]
                   if p["name"] == "api")
        self.assertEqual(api["waiting_for"], "db")
        self.assertTrue(all(s["pid"] == 0 for s in api["slots"]), api["slots"])
        human = subprocess.run([CLUSTERD, "status", "-s", sock], capture_output=True, text=True)
        self.assertIn("api: 2 workers, generation 1, WAITING for db to be ready (depends_on)",
                      human.stdout)
        d.wait_log(r"api: all 2 workers ready", timeout=10)
        text = d.log_text().splitlines()
        db_ready = next(i for i, l in enumerate(text) if re.search(r"db\[0\]: pid \d+ ready", l))
        api_start = next(i for i, l in enumerate(text) if "api: db ready: starting 2 workers" in l)
        api_ready = next(i for i, l in enumerate(text) if re.search(r"api\[\d\]: pid \d+ ready", l))
        self.assertLess(db_ready, api_start)
        self.assertLess(api_start, api_ready)
        # db goes away (stopped): api keeps running, and its status says why it may fail.
        r = subprocess.run([CLUSTERD, "stop", "db", "-s", sock], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_log(r"db\[0\]: pid \d+ exited with code 0")

        def api_status():
            out = subprocess.run([CLUSTERD, "status", "api", "-s", sock], capture_output=True,
                                 text=True).stdout
            return out if "dependency db has no ready worker" in out else None

        wait_for(api_status, 5, what="api's status to name its stopped dependency")
        r = subprocess.run([CLUSTERD, "start", "db", "-s", sock], capture_output=True, text=True)
        d.wait_log(r"db\[0\]: pid \d+ ready", count=2, timeout=10)
        # The stop: api's workers first (1 s each, killed after stop_timeout), then db.
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(20), 0)
        text = d.log_text().splitlines()
        api_gone = [i for i, l in enumerate(text) if re.search(r"api\[\d\]: pid \d+ killed by SIGKILL", l)]
        db_gone = [i for i, l in enumerate(text) if re.search(r"db\[0\]: pid \d+ exited with code 0", l)]
        self.assertEqual(len(api_gone), 2, "\n".join(text[-30:]))
        self.assertEqual(len(db_gone), 2, "\n".join(text[-30:]))
        self.assertLess(max(api_gone), db_gone[-1], "db was stopped before api was gone")

    def test_a_reload_adds_a_program_that_waits_for_its_dependency(self):
        d = Daemon(f"""
programs:
  db:
    cores: 1
    command: ["{MISBEHAVE}", "ready"]
""")
        self.addCleanup(d.close)
        sock = os.path.join(d.dir, "control.sock")
        d.wait_log(r"db: all 1 workers ready")
        subprocess.run([CLUSTERD, "stop", "db", "-s", sock], check=True, capture_output=True)
        d.wait_log(r"db\[0\]: pid \d+ exited")
        d.write_config(f"""
programs:
  db:
    cores: 1
    command: ["{MISBEHAVE}", "ready"]
  api:
    cores: 1
    depends_on: [db]
    command: ["{MISBEHAVE}", "ready"]
""")
        r = subprocess.run([CLUSTERD, "reload", "-s", sock], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("api: added, waiting for db to be ready (depends_on)", r.stdout)
        time.sleep(0.3)
        self.assertEqual(log_lines(d, r"api\[0\]: pid \d+ ready"), [])
        subprocess.run([CLUSTERD, "start", "db", "-s", sock], check=True, capture_output=True)
        d.wait_log(r"api\[0\]: pid \d+ ready", timeout=10)


    @unittest.skipUnless(os.path.exists(NEXT), "clusterd-next is built with BUILD_TESTING")
    def test_a_program_waiting_for_its_dependency_waits_on_across_an_upgrade(self):
        d = Daemon(f"""
programs:
  db:
    cores: 1
    command: ["/bin/sh", "-c", "sleep 2; exec {MISBEHAVE} ready"]
  api:
    cores: 1
    depends_on: [db]
    command: ["{MISBEHAVE}", "ready"]
""")
        self.addCleanup(d.close)
        sock = os.path.join(d.dir, "control.sock")
        d.wait_log(r"api: waiting for db to be ready")
        r = subprocess.run([CLUSTERD, "upgrade", "--binary", NEXT, "-s", sock],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        status = subprocess.run([CLUSTERD, "status", "api", "-s", sock], capture_output=True,
                                text=True).stdout
        self.assertIn("WAITING for db to be ready", status)
        d.wait_log(r"api: db ready: starting 1 worker", timeout=10)
        d.wait_log(r"api\[0\]: pid \d+ ready", timeout=10)


class MaxAgeTest(unittest.TestCase):
    @unittest.skipUnless(shutil.which("wrk"), "wrk is not installed")
    def test_workers_are_recycled_one_at_a_time_under_load_without_a_failed_request(self):
        port = free_port()
        d = Daemon(f"""
programs:
  web:
    cores: 3
    max_age: 2s
    max_age_jitter: 1500ms
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
        self.addCleanup(d.close)
        sock = os.path.join(d.dir, "control.sock")
        d.wait_log(r"web: all 3 workers ready")
        events = subprocess.Popen([CLUSTERD, "events", "--json", "-s", sock],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(lambda: (events.poll() is None and events.kill(), events.wait(),
                                 events.stdout.close()))
        seen = []
        threading.Thread(target=lambda: [seen.append(json.loads(l)) for l in events.stdout],
                         daemon=True).start()
        # The ready count, sampled while wrk runs: it never drops below 3.
        lowest = [3]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                out = subprocess.run([CLUSTERD, "status", "web", "--json", "-s", sock],
                                     capture_output=True, text=True).stdout
                try:
                    slots = json.loads(out)["status"]["programs"][0]["slots"]
                except (ValueError, KeyError, IndexError):
                    continue
                lowest[0] = min(lowest[0], sum(s["state"] == "ready" for s in slots))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        requests, errors, out = Wrk(port, 8).result()
        stop.set()
        watcher.join(5)
        print(f"\nmax_age under wrk: {requests} requests, {errors} errors, "
              f"{sum(e['event'] == 'recycled' for e in seen)} recycles, lowest ready {lowest[0]}/3")
        self.assertGreater(requests, 1000, out)
        self.assertEqual(errors, 0, out)
        self.assertEqual(lowest[0], 3, "the ready count dropped during a recycle")
        recycled = [e for e in seen if e["event"] == "recycled"]
        self.assertGreaterEqual(len(recycled), 4, seen)
        for e in recycled:
            self.assertEqual(e["cause"], "max_age")
        # One at a time: between a recycle and the exit of the worker it replaced, no other
        # recycle starts.
        open_recycle = None
        for e in seen:
            if e["event"] == "recycled":
                self.assertIsNone(open_recycle, f"two recycles at once: {open_recycle} and {e}")
                open_recycle = e
            elif e["event"] == "exited" and open_recycle and e["pid"] == open_recycle["pid"]:
                self.assertEqual(e["cause"], "max_age")
                open_recycle = None
        # The replaced workers left as recycled for max_age (graceful stop, code 0).
        d.wait_log(r"web\[\d\]: pid \d+ exited with code 0 after .* \(recycled: max_age\)")


if __name__ == "__main__":
    unittest.main()

#!/usr/bin/env python3
"""kill -9 of a worker -> its replacement's READY=1, as the master logged it.

Runs clusterd with N built-in workers on a free 127.0.0.1 port, kills the worker of slot 0
`--kills` times, and reports the median, p90 and max of (time the master logged the new
pid ready) - (time of the kill). Both come from the wall clock; the master logs with
microseconds. Optional --wrk SECONDS also runs `wrk -t1 -c50` against the cluster.

  python3 tests/bench/restart_latency.py --kills 20 --workers 2 --wrk 5
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from harness import Daemon, free_port, wait_for  # noqa: E402


def ready_time(daemon, pid, timeout=10):
    rx = re.compile(rf"^(\S+ \S+) info web\[0\]: pid {pid} ready")

    def find():
        for line in daemon.log_text().splitlines():
            m = rx.match(line)
            if m:
                return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        return None

    return wait_for(find, timeout, interval=0.002, what=f"pid {pid} ready")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--wrk", type=float, default=0, help="seconds of wrk -t1 -c50 (0 = skip)")
    args = ap.parse_args()

    port = free_port()
    d = Daemon(f"""
programs:
  web:
    cores: {args.workers}
    # A kill ends a healthy run (restarted at once) once the worker stayed ready for
    # min_uptime; the kills are spaced past it.
    min_uptime: 500ms
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
    try:
        d.wait_log(rf"web: all {args.workers} workers ready")
        latencies = []
        for _ in range(args.kills):
            victim = wait_for(lambda: d.workers().get(0), 5, what="slot 0 worker")
            ready_time(d, victim)
            killed_at = time.time()
            os.kill(victim, signal.SIGKILL)
            new = wait_for(lambda: (p := d.workers().get(0)) not in (None, victim) and p, 5,
                           interval=0.001, what="replacement")
            latencies.append((ready_time(d, new) - killed_at) * 1000)
            # Past min_uptime, and slow enough for the master's log: it logs at most 10 worker
            # events a program per 5 s (then one summary line), and a kill is 2 of them.
            time.sleep(1.3)
        latencies.sort()
        p90 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.9))]
        print(f"kill -9 -> replacement READY over {len(latencies)} kills: "
              f"median {statistics.median(latencies):.2f} ms, p90 {p90:.2f} ms, "
              f"max {latencies[-1]:.2f} ms")
        if args.wrk > 0:
            if not shutil.which("wrk"):
                print("wrk not installed: skipping the throughput run")
            else:
                out = subprocess.run(["wrk", "-t1", "-c50", f"-d{args.wrk:g}s",
                                      f"http://127.0.0.1:{port}/"],
                                     capture_output=True, text=True, timeout=args.wrk + 30).stdout
                print(f"wrk -t1 -c50 -d{args.wrk:g}s against {args.workers} supervised workers:")
                print(out)
    finally:
        d.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

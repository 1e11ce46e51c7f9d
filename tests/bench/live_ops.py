#!/usr/bin/env python3
"""Rolling reload and scale-down of clusterd under wrk load: failed requests and wall time.

  python3 tests/bench/live_ops.py [--workers 4] [--seconds 6]

Starts clusterd with N built-in workers on a free 127.0.0.1 port, runs `wrk -t1 -c50` for
--seconds, and one second in runs (1) `clusterd reload` after an env change (a rolling
restart of every worker), then in a second run (2) `clusterd scale web 1`. Prints wrk's
totals and error counts, and the wall time of the clusterd command.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from harness import CLUSTERD, Daemon, free_port  # noqa: E402


def config(d, port, workers, env):
    return f"""
daemon:
  control: {d}/control.sock
  state_dir: {d}/state
programs:
  web:
    cores: {workers}
    env: {{RELEASE: "{env}"}}
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
"""


def under_load(port, seconds, action):
    result = {}

    def act():
        time.sleep(1)
        start = time.monotonic()
        result["proc"] = action()
        result["wall"] = time.monotonic() - start

    t = threading.Thread(target=act)
    t.start()
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    t.join()
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    return total, socket_errors, non2xx, result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=6)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk): nothing measured")
        return 0
    port = free_port()
    d = Daemon()
    try:
        d.write_config(config(d.dir, port, args.workers, "1"))
        d.launch()
        d.wait_log(rf"web: all {args.workers} workers ready")
        sock = os.path.join(d.dir, "control.sock")

        def reload():
            d.write_config(config(d.dir, port, args.workers, "2"))
            return subprocess.run([CLUSTERD, "reload", "-s", sock], capture_output=True, text=True)

        def scale_down():
            return subprocess.run([CLUSTERD, "scale", "web", "1", "-s", sock],
                                  capture_output=True, text=True)

        for name, action in (("rolling reload", reload), ("scale 4 -> 1", scale_down)):
            total, errors, non2xx, r = under_load(port, args.seconds, action)
            rc = r["proc"].returncode
            print(f"{name} of {args.workers} workers under wrk -t1 -c50 -d{args.seconds}s: "
                  f"{total} requests, {errors} socket errors, {non2xx} non-2xx; "
                  f"clusterd command exit {rc}, wall time {r['wall'] * 1000:.0f} ms")
            if rc != 0:
                print(r["proc"].stdout + r["proc"].stderr)
        lost = [l for l in d.log_text().splitlines() if "lost" in l or "still queued" in l]
        print(f"queued connections lost (master log): {len(lost)} lines" + (":" if lost else ""))
        for line in lost:
            print("  " + line)
    finally:
        d.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

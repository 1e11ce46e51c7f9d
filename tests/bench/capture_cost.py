#!/usr/bin/env python3
"""The master's CPU while it captures its workers' output (output: capture).

Runs clusterd with `--workers` Python workers that each print `--rate` lines a second (in
batches every 10 ms), lets it settle for 3 s, and reads the master's CPU time from
/proc/PID/stat over `--seconds`. The daemon logs to a file in its temp dir. Give several
`--binary` paths to compare builds in one run (each is measured `--rounds` times,
alternating):

  python3 tests/bench/capture_cost.py --binary build/bin/clusterd --binary /tmp/old/clusterd
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from harness import CLUSTERD, Daemon, wait_for  # noqa: E402

SPEW = """import sys, time
n, rate = 0, int(sys.argv[1])
batch = max(1, rate // 100)
t = time.monotonic()
while True:
    for _ in range(batch):
        sys.stdout.write(f"request {n} served in 1.2ms path=/api/items status=200\\n")
        n += 1
    sys.stdout.flush()
    t += 0.01
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(binary, workers, rate, seconds):
    tmp = tempfile.mkdtemp(prefix="clusterd-capture-")
    spew = os.path.join(tmp, "spew.py")
    with open(spew, "w") as f:
        f.write(SPEW)
    d = Daemon(binary=binary)
    d.write_config(f"""
daemon:
  log_file: "{d.dir}/daemon.log"
programs:
  spew:
    cores: {workers}
    ready: started
    start_time: 100ms
    command: ["{sys.executable}", "{spew}", "{rate}"]
""")
    d.launch()
    try:
        wait_for(lambda: os.path.exists(os.path.join(d.dir, "daemon.log")), 10,
                 what="the daemon's log")
        time.sleep(3)
        c0, t0 = cpu_seconds(d.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(d.pid), time.monotonic()
        return 100 * (c1 - c0) / (t1 - t0)
    finally:
        d.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", action="append", help="clusterd to measure (repeatable)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=5000, help="lines a second per worker")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    binaries = args.binary or [CLUSTERD]
    results = {b: [] for b in binaries}
    for _ in range(args.rounds):
        for b in binaries:
            results[b].append(measure(b, args.workers, args.rate, args.seconds))
    total = args.workers * args.rate
    print(f"master CPU while capturing {total:,} lines/s ({args.workers} workers), "
          f"{args.seconds:.0f} s, median of {args.rounds}:")
    for b, values in results.items():
        print(f"  {statistics.median(values):5.1f}% of a core  {b}  "
              f"({', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Node apps, unmodified, under clusterd (`ipc: node`) and under Node's own cluster module, in
one run: keep-alive req/s of each with wrk, side by side, and the ratio; then the time from a
blocked event loop (a request handler that never returns) to its replacement serving, under
clusterd's watchdog (Node's cluster module has none: a blocked worker stays blocked).

The apps are tests/e2e/programs/node/: app.js (a plain http server, listen(PORT)) and
cluster_app.js (the classic `if (cluster.isPrimary) fork() else listen()`). Under Node's
cluster, app.js runs in workers forked by a primary that only does setupPrimary({exec}), and
cluster_app.js is its own primary; both with Node's default scheduling (round-robin: the
primary accepts and hands each connection to a worker).

    python3 tests/bench/node_apps.py [--seconds 5] [--rounds 3] [--workers 2] [--blocks 5]

CLUSTERD_TEST_NODE names another `node` to run (as in tests/e2e/test_node.py). Exits 1 if wrk
saw an error, or a blocked worker was not replaced."""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
APPS = os.path.join(ROOT, "tests", "e2e", "programs", "node")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from harness import CLUSTERD, Daemon, free_port  # noqa: E402

NODE = os.environ.get("CLUSTERD_TEST_NODE") or shutil.which("node") or "/usr/bin/node"

NODE_PRIMARY = """
const cluster = require('cluster');
cluster.setupPrimary({ exec: process.argv[1], execArgv: [] });
for (let i = 0; i < Number(process.env.WORKERS); i++) cluster.fork();
cluster.on('exit', () => cluster.fork());
"""


def get(port, path="/", timeout=2):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read()


def wait_serving(port, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            get(port, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing serves on {port} after {timeout}s")


def worker_pids(master):
    """The pids of the master's children (its workers; the spare of a late one too)."""
    with open(f"/proc/{master}/task/{master}/children") as f:
        return {int(p) for p in f.read().split()}


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, errors + (int(m.group(1)) if m else 0)


def clusterd(app, port, workers, extra="", env=None):
    """A daemon (tests/e2e/harness.py) running `app` on `workers` workers at 127.0.0.1:port."""
    d = Daemon()
    env_lines = "".join(f'      {k}: "{v}"\n' for k, v in {"PORT": port, **(env or {})}.items())
    d.write_config(f"""
programs:
  web:
    command: ["{NODE}", "{app}"]
    cores: {workers}
    output: {d.dir}/app.log
    env:
{env_lines}    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
{extra}""")
    d.launch()
    return d


class NodeCluster:
    def __init__(self, app, port, workers):
        env = dict(os.environ, PORT=str(port), WORKERS=str(workers))
        cmd = ([NODE, app] if app.endswith("cluster_app.js") else [NODE, "-e", NODE_PRIMARY, app])
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def close(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def throughput(args):
    """Each app under each, --rounds times, in alternating order; medians."""
    rows, failed = [], False
    makers = [("clusterd", lambda app, p: clusterd(app, p, args.workers)),
              ("node cluster", lambda app, p: NodeCluster(app, p, args.workers))]
    for name in ("app.js", "cluster_app.js"):
        app = os.path.join(APPS, name)
        rates = {who: [] for who, _ in makers}
        errors = {who: 0 for who, _ in makers}
        for r in range(args.rounds):
            for who, make in (makers if r % 2 == 0 else makers[::-1]):
                port = free_port()
                server = make(app, port)
                try:
                    wait_serving(port)
                    wrk(port, 1)  # warm up (JIT, connections)
                    rate, errs = wrk(port, args.seconds)
                finally:
                    server.close()
                rates[who].append(rate)
                errors[who] += errs
        failed |= any(errors.values())
        rows.append((name, rates, errors))
    version = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\nNode {version}, {args.workers} workers, wrk -t2 -c64 -d{args.seconds}s keep-alive, "
          f"median of {args.rounds} rounds (alternating order), one run:")
    print(f"{'app':<16} {'clusterd req/s':>15} {'node cluster req/s':>19} {'ratio':>6}  errors")
    for name, rates, errors in rows:
        c, n = statistics.median(rates["clusterd"]), statistics.median(rates["node cluster"])
        print(f"{name:<16} {c:>15.0f} {n:>19.0f} {c / n:>6.2f}  "
              f"{errors['clusterd']} / {errors['node cluster']}")
    return failed


def blocked_loop(args):
    port = free_port()
    server = clusterd(os.path.join(APPS, "app.js"), port, args.workers, extra="    watchdog: 1s\n",
                      env={"HEARTBEAT_MS": "200"})
    times, failed = [], False
    try:
        wait_serving(port)
        time.sleep(1)
        for _ in range(args.blocks):
            before = worker_pids(server.proc.pid)
            blocker = socket.create_connection(("127.0.0.1", port))
            blocker.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            t0 = time.monotonic()
            replaced = None
            while time.monotonic() - t0 < 10 and replaced is None:
                try:
                    pid = int(re.search(rb"pid (\d+)", get(port, timeout=0.5)).group(1))
                    if pid not in before:
                        replaced = time.monotonic() - t0
                except OSError:
                    pass
            blocker.close()
            if replaced is None:
                failed = True
                print("a blocked worker was not replaced within 10 s")
                break
            times.append(replaced * 1000)
            time.sleep(2)  # the blocked one is aborted at its watchdog; let the slot settle
    finally:
        server.close()
    if times:
        print(f"\nblocked loop -> replacement serving (watchdog 1s, heartbeat 200 ms), "
              f"{len(times)} runs: median {statistics.median(times):.0f} ms, "
              f"max {max(times):.0f} ms")
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for tool in ("wrk", NODE, CLUSTERD):
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"{tool} not found")
    failed = throughput(args)
    failed |= blocked_loop(args)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

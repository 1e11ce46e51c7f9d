#!/usr/bin/env python3
"""Upgrades in place under load: N `clusterd upgrade`s, alternating between clusterd and
clusterd-next (the same master built as version X.Y.Z+next), while two wrk runs load the
built-in workers: one keep-alive, one with "Connection: close" (a new connection per request,
so every accept goes through the listening sockets being handed over).

Reports, per upgrade, the time from sending `upgrade` to its reply, which the new image sends
once it has taken over (its control socket is served from then on), and the time until a new
connection's `status` is answered by the new version; then the median and the worst, and the
errors each wrk saw over the whole run.

    tests/bench/upgrade.py [--upgrades 20] [--json FILE]

Needs wrk (Debian package) and a build with BUILD_TESTING (for clusterd-next).
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("CLUSTERD_BIN_DIR",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../build/bin"))
CLUSTERD = os.path.join(BIN, "clusterd")
NEXT = os.path.join(BIN, "clusterd-next")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(path, req, timeout=60):
    """Sends one control request; returns (final reply, seconds until it came)."""
    t0 = time.monotonic()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((json.dumps(req) + "\n").encode())
        f = s.makefile()
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("connection closed without a reply")
            reply = json.loads(line)
            if "progress" not in reply:
                return reply, time.monotonic() - t0


def wrk(port, seconds, close):
    argv = ["wrk", "-t1", "-c16", f"-d{seconds}s"]
    if close:
        argv += ["-H", "Connection: close"]
    return subprocess.Popen(argv + [f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wrk_result(proc):
    out, _ = proc.communicate(timeout=600)
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"requests": requests, "errors": errors, "output": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upgrades", type=int, default=20)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    for path in (CLUSTERD, NEXT):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is not built (configure with -DBUILD_TESTING=ON)")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")

    d = tempfile.mkdtemp(prefix="clusterd-bench-upgrade-")
    port = free_port()
    control = os.path.join(d, "control.sock")
    with open(os.path.join(d, "clusterd.yaml"), "w") as f:
        f.write(f"""daemon:
  control: {control}
  state_dir: {d}/state
programs:
  web:
    cores: auto
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
    log = open(os.path.join(d, "clusterd.log"), "w")
    daemon = subprocess.Popen([CLUSTERD, "run", "-c", os.path.join(d, "clusterd.yaml")],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if all(s["state"] == "ready" for s in request(control, {"cmd": "status"})[0]
                       ["status"]["programs"][0]["slots"]):
                    break
            except (OSError, RuntimeError, KeyError):
                pass
            time.sleep(0.05)
        versions = {}
        for b in (CLUSTERD, NEXT):
            versions[b] = subprocess.run([b, "--version"], capture_output=True,
                                         text=True).stdout.split()[-1]
        pids = sorted(request(control, {"cmd": "status"})[0]["status"]["daemon"].items())
        seconds = int(args.upgrades * 0.6 + 4)
        loads = [wrk(port, seconds, close=False), wrk(port, seconds, close=True)]
        time.sleep(1.5)
        rows = []
        for k in range(args.upgrades):
            binary = NEXT if k % 2 == 0 else CLUSTERD
            reply, took = request(control, {"cmd": "upgrade", "binary": binary})
            if not reply.get("ok"):
                raise RuntimeError(f"upgrade {k + 1} failed: {reply}")
            t0 = time.monotonic()
            status, _ = request(control, {"cmd": "status"})
            serving = took + (time.monotonic() - t0)
            got = status["status"]["daemon"]["version"]
            if got != versions[binary]:
                raise RuntimeError(f"upgrade {k + 1}: version {got}, not {versions[binary]}")
            rows.append({"to": got, "reply_ms": took * 1000, "status_ms": serving * 1000,
                         "workers": len(reply["pids"])})
            print(f"upgrade {k + 1:2d} -> {got:14s} reply {took * 1000:6.1f} ms, "
                  f"status answered {serving * 1000:6.1f} ms, {len(reply['pids'])} workers kept")
            time.sleep(0.5)
        keep, close = (wrk_result(p) for p in loads)
        daemon_now = request(control, {"cmd": "status"})[0]["status"]["daemon"]
        if daemon_now["pid"] != daemon.pid:
            raise RuntimeError("the master's pid changed")
        result = {
            "upgrades": len(rows),
            "reply_ms_median": statistics.median(r["reply_ms"] for r in rows),
            "reply_ms_max": max(r["reply_ms"] for r in rows),
            "status_ms_median": statistics.median(r["status_ms"] for r in rows),
            "status_ms_max": max(r["status_ms"] for r in rows),
            "wrk_keepalive": {k: v for k, v in keep.items() if k != "output"},
            "wrk_connection_close": {k: v for k, v in close.items() if k != "output"},
            "daemon_upgrades": daemon_now["upgrades"],
            "rows": rows,
        }
        print(f"\n{len(rows)} upgrades: reply median {result['reply_ms_median']:.1f} ms "
              f"(max {result['reply_ms_max']:.1f}), new image answers status: median "
              f"{result['status_ms_median']:.1f} ms (max {result['status_ms_max']:.1f})")
        print(f"wrk keep-alive: {keep['requests']} requests, {keep['errors']} errors; "
              f"wrk Connection: close: {close['requests']} requests, {close['errors']} errors")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        ok = keep["errors"] == 0 and close["errors"] == 0 and keep["requests"] > 0
        if not ok:
            print(keep["output"], close["output"])
        return 0 if ok else 1
    finally:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What clusterd's master costs, side by side with nginx's master, in one run.

  python3 tests/bench/master_cost.py            # the full run (~8 minutes on 2 cores)
  python3 tests/bench/master_cost.py --smoke    # a few seconds: every code path, tiny sizes

  1) master idle wakeups: context switches (voluntary + nonvoluntary, summed over every
     thread of the master, /proc/PID/task/*/status) over an idle window, clusterd with 2,
     64 and 512 built-in workers (clusterd-worker), without and with `watchdog: 1s`, and
     the nginx master with 2, 64 and 512 workers;
  2) master RSS (VmRSS, RssAnon, RssFile) with 1, 64 and 512 workers, clusterd and nginx;
  3) kill -9 of the only worker -> ready, median and p99 over --kills kills, idle and under
     `wrk -t1 -c50`: for clusterd the master's `web[0]: pid P ready` log line and the first
     200 response to a new connection made right after the kill; for nginx the first
     response (both masters own the listening socket, so the connection waits in its queue
     for the replacement);
  4) master CPU (utime + stime, /proc/PID/stat) over an idle window with 1,000 built-in
     workers (`--threads 1`) at `watchdog: 1s`, and without a watchdog;
  5) keep-alive req/s and server CPU per request, 2 workers, `wrk -t1 -c50`, best of 3.

Everything listens on 127.0.0.1 on free ports; every server is a child stopped by pid. The
table is printed and written to tests/bench/results/master_cost.md (--out). Ratios are
clusterd / nginx. Exit status 1 on a real error (a server that does not start, a worker
never ready, errors under plain load).
"""

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import (Bench, BackgroundWrk, BenchError, Server, Skip, cpu_ns,  # noqa: E402
                   descendants, ensure_tools, find_tool, free_port, load_average, log,
                   machine, pid_alive, publish, run_wrk)

from harness import ctx_switches  # noqa: E402

READY = r"^(\S+ \S+) \w+ web\[{slot}\]: pid (\d+) ready"


def master_sample(pid):
    """Context switches over every thread, CPU ticks, and the RSS figures (kB) of `pid`."""
    switches = ctx_switches(pid)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    mem = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                mem[key] = int(line.split()[1])
    return {"switches": switches, "ticks": int(fields[11]) + int(fields[12]), **mem}


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def ratio(ours, theirs, fmt="{:.2f}"):
    if ours is None or theirs is None:
        return ""
    if theirs == 0:
        return "both 0" if ours == 0 else "n/a (nginx 0)"
    return fmt.format(ours / theirs)


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class MasterCost(Bench):
    def __init__(self, args):
        super().__init__(args)
        self.nginx_ok = find_tool("nginx") is not None
        self.wrk_ok = find_tool("wrk") is not None

    # ------------------------------------------------------------ servers

    def start_builtin(self, workers, extra="", threads=None, timeout=300):
        """clusterd running `workers` clusterd-workers on one reuseport address."""
        port = free_port()
        tag = f"mc{len(self.rows)}-{workers}"
        command = f"    command: [{self.worker}, --threads, '{threads}']\n" if threads else ""
        cfg = self.clusterd_config(f"{tag}.yaml", f"""
daemon:
  control: {self.path(f"{tag}.sock")}
  state_dir: {self.path("state")}
  shutdown_timeout: 120s
programs:
  web:
    cores: {workers}
    start_timeout: 300s
{command}    listen:
      - {{name: http, address: "127.0.0.1:{port}", reuseport: true}}
{extra}""")
        s = Server([self.clusterd, "run", "-c", cfg], self.path(f"{tag}.log"))
        try:
            s.wait_line(rf"web: all {workers} workers ready", timeout)
        except BaseException:
            s.stop(timeout=120)
            raise
        return s, port

    def idle_window(self, s, seconds):
        time.sleep(self.args.settle)
        a = master_sample(s.pid)
        time.sleep(seconds)
        b = master_sample(s.pid)
        return {"switches": b["switches"] - a["switches"], "ticks": b["ticks"] - a["ticks"],
                "VmRSS": b["VmRSS"], "RssAnon": b["RssAnon"], "RssFile": b["RssFile"]}

    # ------------------------------------------------------------ 1) and 2)

    def idle(self):
        a = self.args
        hz = os.sysconf("SC_CLK_TCK")
        res = {}
        for workers in a.idle_workers:
            for wd in ("", "1s"):
                if wd and workers not in a.wake_workers:
                    continue
                extra = f"    watchdog: {wd}\n" if wd else ""
                s, _ = self.start_builtin(workers, extra)
                try:
                    res[("clusterd", wd, workers)] = self.idle_window(s, a.idle)
                finally:
                    s.stop(timeout=120)
            if self.nginx_ok:
                s, _ = self.start_nginx(workers, None)
                try:
                    if len(s.children()) < workers:
                        raise BenchError(f"nginx: {len(s.children())} of {workers} workers")
                    res[("nginx", "", workers)] = self.idle_window(s, a.idle)
                finally:
                    s.stop()
        what = f"1) master wakeups (ctx switches, all threads) over {a.idle:g} s idle"
        for workers in a.wake_workers:
            ng = res.get(("nginx", "", workers))
            for wd in ("", "1s"):
                r = res[("clusterd", wd, workers)]
                self.add("1", what, "clusterd" + (" watchdog 1s" if wd else ""), workers,
                         f"{r['switches']} ({r['switches'] / a.idle:.1f}/s); CPU "
                         f"{r['ticks'] * 1000 / hz:.0f} ms",
                         ratio(r["switches"], ng and ng["switches"]),
                         note="clusterd-worker" + ("; nginx has no watchdog" if wd else ""))
            if ng:
                self.add("1", what, "nginx", workers,
                         f"{ng['switches']} ({ng['switches'] / a.idle:.1f}/s); CPU "
                         f"{ng['ticks'] * 1000 / hz:.0f} ms", note="master process")
            else:
                self.skip("1", what, "nginx", workers, "nginx not installed")
        what = "2) master RSS (VmRSS; RssAnon + RssFile)"
        for workers in a.rss_workers:
            ng = res.get(("nginx", "", workers))
            r = res[("clusterd", "", workers)]
            self.add("2", what, "clusterd", workers,
                     f"{mib(r['VmRSS'])} ({mib(r['RssAnon'])} anon + {mib(r['RssFile'])} file)",
                     ratio(r["VmRSS"], ng and ng["VmRSS"]) + (
                         f" (anon {ratio(r['RssAnon'], ng['RssAnon'])})" if ng else ""),
                     note="clusterd-worker, output: capture (the default), no watchdog")
            if ng:
                self.add("2", what, "nginx", workers,
                         f"{mib(ng['VmRSS'])} ({mib(ng['RssAnon'])} anon + "
                         f"{mib(ng['RssFile'])} file)", note="master process")
            else:
                self.skip("2", what, "nginx", workers, "nginx not installed")

    # ------------------------------------------------------------ 3) kill -9 -> ready

    @staticmethod
    def first_response(port, deadline):
        """time.time() of the first 200 to a new connection (retries resets and refusals)."""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = c.recv(64)
                    if data.startswith(b"HTTP/1.1 200"):
                        return time.time()
            except OSError:
                pass
            time.sleep(0.0005)
        raise BenchError(f"no 200 from 127.0.0.1:{port} after the kill")

    def nginx_worker(self, s, not_pid=None):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            live = [p for p in s.children() if p != not_pid and pid_alive(p)]
            if live:
                return live[0]
            time.sleep(0.001)
        raise BenchError("no nginx worker")

    def kill_series(self, server, loaded):
        a = self.args
        if server == "clusterd":
            s, port = self.start_builtin(
                1, "    min_uptime: 0s\n    backoff: {initial: 0s, max: 100ms}\n")
        else:
            s, port = self.start_nginx(1, None)
        logged, answered = [], []
        load = None
        try:
            self.first_response(port, time.monotonic() + 10)
            if loaded:
                load = BackgroundWrk(port, 1, 50, a.kills * 2 + 60)
                time.sleep(0.3)
            # The master logs at most 10 worker events a program per 5 s and summarises the
            # rest: at 2 lines a kill (exited, ready) and the start's own, kills 1.3 s apart fit.
            period = a.kill_period if server == "clusterd" else a.kill_gap
            last = 0.0
            for _ in range(a.kills):
                time.sleep(max(a.kill_gap, last + period - time.monotonic()))
                if server == "clusterd":
                    victim = self.clusterd_worker_pid(s, 0)
                else:
                    victim = self.nginx_worker(s)
                offset = len(s.text())
                last = time.monotonic()
                killed = time.time()
                os.kill(victim, signal.SIGKILL)
                answered.append((self.first_response(port, time.monotonic() + 10) - killed) * 1e3)
                if server == "clusterd":
                    m = s.wait_line(READY.format(slot=0), 10, offset)
                    t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                    logged.append((t - killed) * 1e3)
            r = load.stop() if load else None
        finally:
            if load and load.proc.poll() is None:
                load.stop()
            s.stop()
        return logged, answered, r

    def kills(self):
        a = self.args
        res = {}
        for loaded in (False, True):
            if loaded and not self.wrk_ok:
                continue
            for server in ("clusterd", "nginx"):
                if server == "nginx" and not self.nginx_ok:
                    continue
                res[(server, loaded)] = self.kill_series(server, loaded)

        def fmt(lat):
            return f"median {statistics.median(lat):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms"

        for loaded in (False, True):
            what = (f"3) kill -9 -> ready, {a.kills} kills, 1 worker, "
                    + ("under wrk -t1 -c50" if loaded else "idle"))
            if (("clusterd", loaded)) not in res:
                self.skip("3", what, "clusterd", 1, "wrk not installed")
                continue
            logged, answered, r = res[("clusterd", loaded)]
            ng = res.get(("nginx", loaded))
            wrk_note = f"; wrk errors {r['errors']} of {r['requests']:,}" if r else ""
            self.add("3", what, "clusterd (log line)", 1, fmt(logged),
                     ratio(statistics.median(logged), ng and statistics.median(ng[1])),
                     note="`web[0]: pid P ready`, min_uptime 0s, backoff initial 0s, kills "
                          f"{a.kill_period:g} s apart; ratio to nginx's first response" + wrk_note)
            self.add("3", what, "clusterd (first response)", 1, fmt(answered),
                     ratio(statistics.median(answered), ng and statistics.median(ng[1])),
                     note="first 200 to a new connection" + wrk_note)
            if ng:
                r = ng[2]
                self.add("3", what, "nginx (first response)", 1, fmt(ng[1]),
                         note=f"first 200 to a new connection, kills {a.kill_gap:g} s apart" + (
                             f"; wrk errors {r['errors']} of {r['requests']:,}" if r else ""))
            else:
                self.skip("3", what, "nginx", 1, "nginx not installed")

    # ------------------------------------------------------------ 4) CPU with 1,000 workers

    def many(self):
        a = self.args
        hz = os.sysconf("SC_CLK_TCK")
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)
        limits = (f"ulimit -n {nofile[0]}, -u "
                  f"{'unlimited' if nproc[0] == resource.RLIM_INFINITY else nproc[0]}")
        what = f"4) master CPU over {a.many_idle:g} s, {a.many} workers"
        base = None
        for wd in ("", "1s"):
            extra = f"    watchdog: {wd}\n" if wd else ""
            s, _ = self.start_builtin(a.many, extra, threads=1, timeout=600)
            try:
                ready = s.wait_line(r"web: all \d+ workers ready in (\S+)", 5).group(1)
                r = self.idle_window(s, a.many_idle)
            finally:
                s.stop(timeout=300)
            cpu_ms = r["ticks"] * 1000 / hz
            pct = cpu_ms / 10 / a.many_idle
            self.add("4", what, "clusterd" + (f" watchdog {wd}" if wd else ""), a.many,
                     f"CPU {cpu_ms:.0f} ms ({pct:.2f}% of a core); "
                     f"{r['switches'] / a.many_idle:.0f} wakeups/s; RSS {mib(r['VmRSS'])}",
                     note=f"clusterd-worker --threads 1; all ready in {ready}; {limits}"
                     + (f"; vs no watchdog: +{cpu_ms - base:.0f} ms" if base is not None else ""))
            base = cpu_ms

    # ------------------------------------------------------------ 5) throughput

    def throughput(self):
        a = self.args
        what = (f"5) keep-alive req/s, server CPU per request, wrk -t1 -c50, best of "
                f"{a.rounds} x {a.duration}s")
        if not self.wrk_ok:
            self.skip("5", what, "clusterd", 2, "wrk not installed")
            return
        servers = [("clusterd", lambda: self.start_builtin(2))]
        if self.nginx_ok:
            servers.append(("nginx", lambda: self.start_nginx(2, None)))
        res = {}
        for rnd in range(a.rounds):
            for name, start in servers:
                s, port = start()
                try:
                    if a.warmup:
                        run_wrk(port, 1, 50, a.warmup)
                    pids = descendants(s.pid)
                    c0 = cpu_ns(pids)
                    r = run_wrk(port, 1, 50, a.duration)
                    r["cpu_us"] = (cpu_ns(pids) - c0) / 1000 / max(1, r["requests"])
                finally:
                    s.stop()
                if r["requests"] == 0 or r["errors"]:
                    raise BenchError(f"{name}: {r['requests']} requests, {r['errors']} errors "
                                     "under plain keep-alive load")
                log(f"round {rnd + 1}: {name}: {r['rps']:.0f} req/s, {r['cpu_us']:.2f} us/req")
                res.setdefault(name, []).append(r)
        best = {k: max(v, key=lambda r: r["rps"]) for k, v in res.items()}
        cpu = {k: statistics.median(r["cpu_us"] for r in v) for k, v in res.items()}
        for name, _ in servers:
            b = best[name]
            vs = ""
            if name == "clusterd" and "nginx" in best:
                vs = (f"{b['rps'] / best['nginx']['rps']:.2f} (CPU/req "
                      f"{cpu[name] / cpu['nginx']:.2f})")
            self.add("5", what, name, 2,
                     f"{b['rps']:,.0f} req/s, p99 {b['p99_ms']:.2f} ms, {cpu[name]:.2f} us "
                     f"CPU/req (median)", vs, note=f"load {load_average()}")
        if not self.nginx_ok:
            self.skip("5", what, "nginx", 2, "nginx not installed")

    # ------------------------------------------------------------ driver

    def add(self, section, what, server, workers, result, vs_nginx="", note=""):
        super().add(section, what, server, workers, result, vs_nginx, "", note)

    def run(self):
        steps = [("1", self.idle), ("3", self.kills), ("4", self.many), ("5", self.throughput)]
        for key, step in steps:
            if self.args.only and key not in self.args.only:
                continue
            try:
                step()
            except Skip as e:
                self.skip(key, key, "-", "-", str(e))
            except Exception as e:  # noqa: BLE001: report it as a failed row, go on
                self.fail(key, key, "-", "-", e)


def render(rows, args, info, started, elapsed):
    head = ["#", "measurement", "server", "workers", "result", "clusterd / nginx", "notes"]
    lines = [
        f"clusterd master cost vs nginx ({'smoke' if args.smoke else 'full'} run), "
        f"{started.strftime('%Y-%m-%d %H:%M UTC')}, {elapsed:.0f} s",
        "",
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}; "
        f"load average at the end {load_average()}; binaries {os.path.abspath(args.bin_dir)}",
        f"Command: `python3 tests/bench/master_cost.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for i, r in enumerate(rows, 1):
        cells = [str(i), r["what"], r["server"], str(r["workers"]), r["result"], r["vs_nginx"],
                 r["note"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds, no installs")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--only", default="", help="sections to run, e.g. '13' (default: all)")
    ap.add_argument("--bin-dir", default=os.environ.get(
        "CLUSTERD_BIN_DIR", os.path.join(HERE, "..", "..", "build", "bin")))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "master_cost.md"))
    ap.add_argument("--kills", type=int, help="kills per series (default 50)")
    args = ap.parse_args()
    if args.smoke:
        args.idle, args.settle = 1.0, 0.2
        args.wake_workers, args.rss_workers = [2, 8], [1, 8]
        args.kills, args.kill_gap, args.kill_period = 3, 0.05, 0.05
        args.many, args.many_idle = 20, 1.0
        args.duration, args.warmup, args.rounds = 1, 0, 1
    else:
        args.idle, args.settle = 10.0, 1.0
        args.wake_workers, args.rss_workers = [2, 64, 512], [1, 64, 512]
        args.kills, args.kill_gap, args.kill_period = args.kills or 50, 0.2, 1.3
        args.many, args.many_idle = 1000, 10.0
        args.duration, args.warmup, args.rounds = 4, 1, 3
    args.idle_workers = sorted(set(args.wake_workers) | set(args.rss_workers))

    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    ensure_tools(allow_install=not (args.smoke or args.no_install))
    info = machine()
    log(f"{info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, load {load_average()}")
    try:
        bench = MasterCost(args)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    try:
        bench.run()
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    publish(render(bench.rows, args, info, started, time.monotonic() - t0), args.out)
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())

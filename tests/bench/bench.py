#!/usr/bin/env python3
"""clusterd benchmark suite: clusterd side by side with nginx and Node's cluster module.

One command, everything on 127.0.0.1, every number measured in this run:

  python3 tests/bench/bench.py            # the full run (~6 minutes on 2 cores)
  python3 tests/bench/bench.py --smoke    # a few seconds: every code path, tiny samples

  a) throughput: wrk keep-alive req/s and p99 on a fixed 27-byte body, for
     clusterd-worker --listen (standalone), clusterd with 1 and N workers, nginx with the
     same worker counts (reuseport, `return 200`), and tests/bench/node_cluster.js;
  b) kill -9 of a worker under wrk load: kill -> replacement READY (median, p99), and the
     errors wrk saw, for clusterd and the Node cluster;
  c) master footprint with 1, 64, 512 trivial workers: RSS, CPU time and context switches
     (the wakeup proxy) over an idle window;
  d) spawn scale: 1,000 trivial workers all ready, and all stopped after SIGTERM;
  e) rolling reload under load against `nginx -s reload` (only when `clusterd reload` exists).

N is the number of CPUs (nproc). Missing nginx, wrk or node are installed from Debian when
running as root and not --smoke; otherwise their rows are reported as skipped. The table is
printed and written to tests/bench/results/latest.md. Exit status: 0, or 1 on a real error
(a server that does not start, errors under plain load, a worker never ready).
"""

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from harness import free_port, pid_alive  # noqa: E402

BODY = "Hello from clusterd-worker\n"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (\w+) (.*)$")


class BenchError(Exception):
    """A real failure: the suite exits non-zero."""


class Skip(Exception):
    """A row that cannot be measured here (a tool is missing)."""


# ---------------------------------------------------------------- environment


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_tools(allow_install):
    """Installs nginx, wrk, nodejs from Debian when missing (root only, never in --smoke)."""
    wanted = {"nginx": "nginx", "wrk": "wrk", "node": "nodejs"}
    missing = [pkg for tool, pkg in wanted.items() if not find_tool(tool)]
    if not missing:
        return
    if not allow_install:
        log(f"not installing {' '.join(missing)} (--smoke or --no-install): rows skipped")
        return
    if os.geteuid() != 0:
        log(f"missing {' '.join(missing)} and not root: rows that need them are skipped")
        return
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False, timeout=600,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   env=env, check=False, timeout=900, stdout=subprocess.DEVNULL)


def find_tool(name):
    # CLUSTERD_BENCH_HIDE=nginx,node pretends tools are missing (to test the skipped rows).
    if name in os.environ.get("CLUSTERD_BENCH_HIDE", "").split(","):
        return None
    path = shutil.which(name)
    if path is None and name == "nginx" and os.access("/usr/sbin/nginx", os.X_OK):
        path = "/usr/sbin/nginx"
    return path


def need(name):
    path = find_tool(name)
    if path is None:
        raise Skip(f"{name} not installed")
    return path


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count() or 1, "cpu": model, "kernel": platform.release()}


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- processes


class Server:
    """A process we started (and its children, which it stops itself)."""

    def __init__(self, argv, log_path, env=None, cpus=None, stop_signal=signal.SIGTERM):
        if cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.stop_signal = stop_signal
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self):
        return self.proc.pid

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_line(self, pattern, timeout, start=0):
        """The first match of `pattern` in the log at or after byte `start`."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.text(), start)
            if m:
                return m
            if self.proc.poll() is not None:
                raise BenchError(f"{self.proc.args[0]} exited ({self.proc.returncode}) before "
                                 f"/{pattern}/; log:\n{self.text()[-2000:]}")
            time.sleep(0.002)
        raise BenchError(f"/{pattern}/ not seen within {timeout}s; log:\n{self.text()[-2000:]}")

    def children(self):
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def stop(self, timeout=30):
        """Stops it; returns the seconds from the signal to its exit."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise BenchError(f"{self.proc.args} did not stop within {timeout}s")
        self.log.close()
        return time.monotonic() - t0


def descendants(pid):
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_ns(pids):
    """CPU time of every thread of `pids`, in nanoseconds (/proc/PID/task/TID/schedstat)."""
    total = 0
    for p in pids:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def wait_port(port, timeout=10):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------- wrk


def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]


def parse_wrk(out):
    r = {"rps": 0.0, "p99_ms": float("nan"), "errors": 0, "requests": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        r["rps"] = float(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        r["p99_ms"] = parse_duration_ms(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        r["requests"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out):
        r["errors"] += sum(int(x) for x in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        r["errors"] += int(m.group(1))
    return r


def wrk_argv(port, threads, conns, seconds, cpus):
    argv = [need("wrk"), f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency",
            f"http://127.0.0.1:{port}/"]
    if cpus is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", cpus, *argv]
    return argv


def run_wrk(port, threads, conns, seconds, cpus=None):
    argv = wrk_argv(port, threads, conns, seconds, cpus)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    return parse_wrk(out)


class BackgroundWrk:
    """wrk running while something else happens; stop() sends SIGINT and parses its report."""

    def __init__(self, port, threads, conns, bound_seconds):
        self.proc = subprocess.Popen(wrk_argv(port, threads, conns, int(bound_seconds), None),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return parse_wrk(out)


# ---------------------------------------------------------------- the servers


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin_dir
        self.clusterd = os.path.join(self.bin, "clusterd")
        self.worker = os.path.join(self.bin, "clusterd-worker")
        self.misbehave = os.path.join(self.bin, "clusterd-test-misbehave")
        for b in (self.clusterd, self.worker, self.misbehave):
            if not os.access(b, os.X_OK):
                raise BenchError(f"{b} not built (set --bin-dir or CLUSTERD_BIN_DIR)")
        self.tmp = tempfile.mkdtemp(prefix="clusterd-bench-")
        self.n = machine()["nproc"]
        self.rows = []
        self.failed = False

    def path(self, name):
        return os.path.join(self.tmp, name)

    # Each start_* returns (Server, port) once the server accepts connections.

    def start_standalone(self, workers, cpus):
        assert workers == 1
        port = free_port()
        s = Server([self.worker, "--listen", f"127.0.0.1:{port}"], self.path("standalone.log"),
                   cpus=cpus)
        s.wait_line(r"accepting on", 10)
        return s, port

    def clusterd_config(self, name, text):
        path = self.path(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_clusterd(self, workers, cpus, extra="", tag="web"):
        port = free_port()
        cfg = self.clusterd_config(f"clusterd-{tag}-{workers}.yaml", f"""
daemon:
  control: {self.path(f"clusterd-{tag}-{workers}.sock")}
  state_dir: {self.path("state")}
  shutdown_timeout: 60s
programs:
  web:
    cores: {workers}
    listen:
      - {{name: http, address: "127.0.0.1:{port}", reuseport: true}}
{extra}""")
        s = Server([self.clusterd, "run", "-c", cfg], self.path(f"clusterd-{tag}-{workers}.log"),
                   cpus=cpus)
        s.wait_line(rf"web: all {workers} workers ready", 30)
        return s, port

    def start_nginx(self, workers, cpus):
        nginx = need("nginx")
        port = free_port()
        prefix = tempfile.mkdtemp(prefix="nginx-", dir=self.tmp)
        for d in ("logs", "tmp"):
            os.makedirs(os.path.join(prefix, d), exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        body = BODY.replace("\n", "\\n")
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(f"""
{user}
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type "text/plain; charset=utf-8";
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "{body}"; }}
    }}
}}
""")
        s = Server([nginx, "-p", prefix, "-c", conf, "-g", "daemon off;"],
                   self.path(f"nginx-{workers}.log"), cpus=cpus, stop_signal=signal.SIGQUIT)
        s.prefix, s.conf = prefix, conf
        wait_port(port)
        deadline = time.monotonic() + 10
        while len(s.children()) < workers and time.monotonic() < deadline:
            time.sleep(0.01)
        return s, port

    def start_node(self, workers, cpus):
        node = need("node")
        port = free_port()
        env = dict(os.environ, PORT=str(port), WORKERS=str(workers), BODY=BODY)
        s = Server([node, os.path.join(HERE, "node_cluster.js")],
                   self.path(f"node-{workers}.log"), env=env, cpus=cpus)
        deadline = time.monotonic() + 20
        while s.text().count(" listening ") < workers:
            if time.monotonic() > deadline or s.proc.poll() is not None:
                raise BenchError(f"node cluster not listening; log:\n{s.text()[-2000:]}")
            time.sleep(0.01)
        return s, port

    # ------------------------------------------------------------ rows

    def add(self, section, what, server, workers, result, vs_nginx="", vs_standalone="",
            note=""):
        row = dict(section=section, what=what, server=server, workers=workers, result=result,
                   vs_nginx=vs_nginx, vs_standalone=vs_standalone, note=note)
        self.rows.append(row)
        log(" | ".join(str(v) for v in row.values()))

    def skip(self, section, what, server, workers, reason):
        self.add(section, what, server, workers, "skipped", note=reason)

    def fail(self, section, what, server, workers, err):
        self.failed = True
        self.add(section, what, server, workers, "FAILED", note=str(err).splitlines()[0])
        log(f"FAILED: {err}")

    # ------------------------------------------------------------ a) throughput

    def throughput(self):
        a = self.args
        n, two = self.n, self.n >= 2
        # 1-worker rows: server on CPU 0, wrk on CPU 1. N-worker rows: all share every CPU.
        one_srv, one_wrk = ("0", "1") if two else (None, None)
        configs = [
            ("clusterd-worker (standalone, --listen)", "standalone", 1, self.start_standalone),
            ("clusterd", "clusterd", 1, self.start_clusterd),
            ("nginx", "nginx", 1, self.start_nginx),
            ("node cluster", "node", 1, self.start_node),
        ]
        if n > 1:
            configs += [
                ("clusterd", "clusterd", n, self.start_clusterd),
                ("nginx", "nginx", n, self.start_nginx),
                ("node cluster", "node", n, self.start_node),
            ]
            if a.smoke:  # the N-worker comparison rows need no smoke test of their own
                configs = [c for c in configs if c[2] == 1 or c[1] == "clusterd"]
        if a.rows:  # e.g. "clusterd:2,nginx:2"
            wanted = {tuple(x.split(":")) for x in a.rows.split(",")}
            configs = [c for c in configs if (c[1], str(c[2])) in wanted]
        results = {}
        skipped = {}
        for rnd in range(a.rounds):
            for label, key, workers, start in configs:
                if (key, workers) in skipped:
                    continue
                srv_cpus, wrk_cpus = (one_srv, one_wrk) if workers == 1 else (None, None)
                threads = 1 if workers == 1 else max(1, workers // 2)
                conns = 50 * workers
                try:
                    need("wrk")
                    s, port = start(workers, srv_cpus)
                except Skip as e:
                    skipped[(key, workers)] = str(e)
                    continue
                try:
                    if a.warmup > 0:
                        run_wrk(port, threads, conns, a.warmup, wrk_cpus)
                    pids = descendants(s.pid)
                    c0 = cpu_ns(pids)
                    r = run_wrk(port, threads, conns, a.duration, wrk_cpus)
                    r["cpu_us"] = (cpu_ns(pids) - c0) / 1000 / max(1, r["requests"])
                    r["load"] = load_average()
                finally:
                    s.stop()
                if r["requests"] == 0 or r["errors"]:
                    raise BenchError(f"{label} x{workers}: {r['requests']} requests, "
                                     f"{r['errors']} errors under plain keep-alive load")
                results.setdefault((key, workers), []).append(r)
                log(f"round {rnd + 1}: {label} x{workers}: {r['rps']:.0f} req/s, "
                    f"p99 {r['p99_ms']:.2f} ms, {r['cpu_us']:.2f} us CPU/req "
                    f"(load {r['load']})")

        def best(key, workers):
            # Other load on the machine only ever slows a round down: the fastest round is
            # the least disturbed one, and the table also shows the median.
            rs = results.get((key, workers))
            if not rs:
                return None
            return max(rs, key=lambda r: r["rps"])

        def median_rps(key, workers):
            return statistics.median(r["rps"] for r in results[(key, workers)])

        def median_cpu(key, workers):
            # CPU per request suffers less from other load than req/s, but still some (cache
            # pollution): the median over the rounds.
            return statistics.median(r["cpu_us"] for r in results[(key, workers)])

        placement = {1: "server CPU 0, wrk CPU 1" if two else "shared CPU",
                     n: "server and wrk share all CPUs"}
        for label, key, workers, _ in configs:
            what = "a) keep-alive req/s, p99, server CPU per request"
            if (key, workers) in skipped:
                self.skip("a", what, label, workers, skipped[(key, workers)])
                continue
            r = best(key, workers)
            ng = best("nginx", workers)
            sa = best("standalone", 1)
            # Ratios: req/s, then CPU per request as nginx's / ours (above 1 = cheaper).
            cpu = median_cpu(key, workers)
            vs_ng = (f"{r['rps'] / ng['rps']:.2f} (CPU {median_cpu('nginx', workers) / cpu:.2f})"
                     if ng and key != "nginx" else "")
            vs_sa = (f"{r['rps'] / sa['rps']:.3f} (CPU {median_cpu('standalone', 1) / cpu:.3f})"
                     if sa and key == "clusterd" and workers == 1 else "")
            self.add("a", what, label, workers,
                     f"{r['rps']:,.0f} req/s (median {median_rps(key, workers):,.0f}), "
                     f"p99 {r['p99_ms']:.2f} ms, {cpu:.2f} us CPU/req (median)", vs_ng, vs_sa,
                     f"{placement[workers]}; wrk -t{1 if workers == 1 else max(1, workers // 2)}"
                     f" -c{50 * workers}; best of {len(results[(key, workers)])} x "
                     f"{a.duration}s; load {r['load']}")

    # ------------------------------------------------------------ b) kill -9 under load

    def kill_clusterd(self):
        a, n = self.args, self.n
        # Every kill restarts at once: a run that got ready is healthy (min_uptime 0s).
        extra = "    min_uptime: 0s\n    backoff: {initial: 0s, max: 100ms}\n"
        s, port = self.start_clusterd(n, None, extra, tag="kill")
        latencies = []
        try:
            load = BackgroundWrk(port, 1, 50, a.kills * 2 + 30)
            time.sleep(0.3)
            for i in range(a.kills):
                slot = i % n
                victim = self.clusterd_worker_pid(s, slot)
                offset = len(s.text())
                killed = time.time()
                os.kill(victim, signal.SIGKILL)
                m = s.wait_line(rf"^(\S+ \S+) \w+ web\[{slot}\]: pid (\d+) ready", 10, offset)
                ready = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                latencies.append((ready - killed) * 1000)
                time.sleep(a.kill_gap)
            r = load.stop()
        finally:
            s.stop()
        return latencies, r

    def clusterd_worker_pid(self, s, slot):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for pid in s.children():
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        env = f.read().split(b"\0")
                except OSError:
                    continue
                if f"CLUSTERD_WORKER_ID={slot}".encode() in env and pid_alive(pid):
                    return pid
            time.sleep(0.002)
        raise BenchError(f"no worker in slot {slot}")

    def kill_node(self):
        a, n = self.args, self.n
        s, port = self.start_node(n, None)
        latencies = []
        try:
            load = BackgroundWrk(port, 1, 50, a.kills * 2 + 30)
            time.sleep(0.3)
            for _ in range(a.kills):
                text = s.text()
                listening = re.findall(r"^\S+ listening (\d+)$", text, re.M)
                exited = set(re.findall(r"^\S+ exit (\d+) ", text, re.M))
                live = [int(p) for p in listening if p not in exited and pid_alive(int(p))]
                if not live:
                    raise BenchError(f"no live node worker; log:\n{text[-2000:]}")
                victim = live[0]
                offset = len(text)
                killed = time.time()
                os.kill(victim, signal.SIGKILL)
                m = s.wait_line(r"^(\S+) listening (\d+)$", 10, offset)
                latencies.append((float(m.group(1)) - killed) * 1000)
                time.sleep(a.kill_gap)
            r = load.stop()
        finally:
            s.stop()
        return latencies, r

    def kills(self):
        what = f"b) kill -9 -> replacement ready, {self.args.kills} kills under wrk -t1 -c50"
        for label, fn, tool in (("clusterd", self.kill_clusterd, None),
                                ("node cluster", self.kill_node, "node")):
            try:
                need("wrk")
                if tool:
                    need(tool)
                lat, r = fn()
            except Skip as e:
                self.skip("b", what, label, self.n, str(e))
                continue
            lat.sort()
            p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
            note = ("min_uptime 0s (restart at once, like the node script)"
                    if label == "clusterd" else "cluster.fork() in the exit handler")
            self.add("b", what, label, self.n,
                     f"median {statistics.median(lat):.2f} ms, p99 {p99:.2f} ms; wrk errors "
                     f"{r['errors']} of {r['requests']:,} requests", note=note)

    # ------------------------------------------------------------ c) master footprint

    def trivial_config(self, workers, tag):
        return self.clusterd_config(f"trivial-{tag}-{workers}.yaml", f"""
daemon:
  control: {self.path(f"trivial-{tag}-{workers}.sock")}
  state_dir: {self.path("state")}
  shutdown_timeout: 60s
programs:
  web:
    command: [{self.misbehave}, ready]
    cores: {workers}
    ready: notify
    start_timeout: 120s
""")

    def footprint(self):
        """All masters at once (they are idle, so they do not disturb each other): one window."""
        a = self.args
        hz = os.sysconf("SC_CLK_TCK")
        masters = []
        try:
            for workers in a.footprint:
                cfg = self.trivial_config(workers, "idle")
                masters.append((workers, Server([self.clusterd, "run", "-c", cfg],
                                                self.path(f"footprint-{workers}.log"))))
            for workers, s in masters:
                s.wait_line(rf"web: all {workers} workers ready", 120)
            time.sleep(0.2)
            before = [proc_sample(s.pid) for _, s in masters]
            time.sleep(a.idle)
            after = [proc_sample(s.pid) for _, s in masters]
        finally:
            for _, s in masters:
                s.stop()
        for (workers, _), (_, cpu0, cs0), (rss1, cpu1, cs1) in zip(masters, before, after):
            cpu_ms = (cpu1 - cpu0) * 1000 / hz
            self.add("c", f"c) master RSS; CPU and ctx switches over {a.idle:g}s idle",
                     "clusterd", workers,
                     f"RSS {rss1 / 1024:.1f} MiB; CPU {cpu_ms:.0f} ms; "
                     f"{(cs1 - cs0) / a.idle:.1f} wakeups/s",
                     note="worker: clusterd-test-misbehave ready; no watchdog")

    # ------------------------------------------------------------ d) spawn scale

    def spawn_scale(self):
        workers = self.args.spawn
        cfg = self.trivial_config(workers, "scale")
        s = Server([self.clusterd, "run", "-c", cfg], self.path(f"scale-{workers}.log"))
        try:
            started = s.wait_line(r"^(\S+ \S+) \w+ web: starting", 30)
            ready = s.wait_line(rf"^(\S+ \S+) \w+ web: all {workers} workers ready in (\S+)", 180)
            t0 = datetime.strptime(started.group(1), "%Y-%m-%d %H:%M:%S.%f")
            t1 = datetime.strptime(ready.group(1), "%Y-%m-%d %H:%M:%S.%f")
            rss = proc_sample(s.pid)[0]
        finally:
            stop_s = s.stop(timeout=120)
        if s.proc.returncode != 0:
            raise BenchError(f"clusterd exited {s.proc.returncode} after SIGTERM")
        self.add("d", f"d) spawn {workers} trivial workers; SIGTERM -> master exit", "clusterd",
                 workers,
                 f"all ready in {(t1 - t0).total_seconds() * 1000:.0f} ms; all stopped in "
                 f"{stop_s * 1000:.0f} ms", note=f"master RSS with all up {rss / 1024:.1f} MiB")

    # ------------------------------------------------------------ e) reload

    def reload(self):
        what = "e) rolling reload under load vs nginx -s reload"
        out = subprocess.run([self.clusterd, "--help"], capture_output=True, text=True).stdout
        if not re.search(r"^\s+reload\b", out, re.M):
            self.add("e", what, "clusterd", self.n, "not measured: needs `clusterd reload`",
                     note="placeholder until the control socket lands")
            self.add("e", what, "nginx", self.n, "not measured: needs `clusterd reload`",
                     note="measured together with clusterd")
            return
        self.reload_clusterd(what)
        self.reload_nginx(what)

    def reload_clusterd(self, what):
        n = self.n
        port = free_port()
        sock = self.path("control.sock")
        base = f"""
daemon:
  control: {sock}
  state_dir: {self.path("state")}
programs:
  web:
    cores: {n}
    listen:
      - {{name: http, address: "127.0.0.1:{port}", reuseport: true}}
    env: {{BENCH_GENERATION: "%d"}}
"""
        cfg = self.clusterd_config("reload.yaml", base % 1)
        s = Server([self.clusterd, "run", "-c", cfg], self.path("reload.log"))
        try:
            s.wait_line(rf"web: all {n} workers ready", 30)
            load = BackgroundWrk(port, 1, 50, 60)
            time.sleep(1)
            with open(cfg, "w") as f:
                f.write(base % 2)
            t0 = time.monotonic()
            rc = subprocess.run([self.clusterd, "reload", "-c", cfg], capture_output=True,
                                text=True, timeout=60)
            wall = time.monotonic() - t0
            time.sleep(1)
            r = load.stop()
        finally:
            s.stop()
        if rc.returncode != 0:
            raise BenchError(f"clusterd reload failed: {rc.stderr.strip()}")
        self.add("e", what, "clusterd", n, f"{wall * 1000:.0f} ms; wrk errors {r['errors']} of "
                 f"{r['requests']:,}", note="env change: rolling restart")

    def reload_nginx(self, what):
        n = self.n
        try:
            s, port = self.start_nginx(n, None)
        except Skip as e:
            return self.skip("e", what, "nginx", n, str(e))
        try:
            load = BackgroundWrk(port, 1, 50, 60)
            time.sleep(1)
            t0 = time.monotonic()
            subprocess.run([need("nginx"), "-p", s.prefix, "-c", s.conf, "-s", "reload"],
                           check=True, timeout=60, capture_output=True)
            wall = time.monotonic() - t0
            time.sleep(1)
            r = load.stop()
        finally:
            s.stop()
        self.add("e", what, "nginx", n, f"{wall * 1000:.0f} ms; wrk errors {r['errors']} of "
                 f"{r['requests']:,}", note="nginx -s reload (signal only; new workers async)")

    # ------------------------------------------------------------ driver

    def run(self):
        steps = [("a", self.throughput), ("b", self.kills), ("c", self.footprint),
                 ("d", self.spawn_scale), ("e", self.reload)]
        for key, step in steps:
            if self.args.only and key not in self.args.only:
                continue
            try:
                step()
            except Skip as e:
                self.skip(key, key, "-", "-", str(e))
            except (BenchError, subprocess.SubprocessError, OSError) as e:
                self.fail(key, key, "-", "-", e)
        shutil.rmtree(self.tmp, ignore_errors=True)


def proc_sample(pid):
    """(VmRSS kB, utime+stime ticks, voluntary+nonvoluntary context switches)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = switches = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                switches += int(line.split()[1])
    return rss, ticks, switches


# ---------------------------------------------------------------- report


def publish(table, out):
    """Prints the table and writes it to `out`."""
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(table)
    log(f"written to {out}")


def render(rows, args, info, started, elapsed):
    head = ["#", "measurement", "server", "workers", "result", "vs nginx", "vs standalone",
            "notes"]
    lines = [
        f"clusterd benchmark ({'smoke' if args.smoke else 'full'} run), "
        f"{started.strftime('%Y-%m-%d %H:%M UTC')}, {elapsed:.0f} s",
        "",
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}; "
        f"load average at the end {load_average()}",
        f"Command: `python3 tests/bench/bench.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for i, r in enumerate(rows, 1):
        cells = [str(i), r["what"], r["server"], str(r["workers"]), r["result"], r["vs_nginx"],
                 r["vs_standalone"], r["note"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny samples of every measurement (< 15 s), no installs")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--only", default="", help="sections to run, e.g. 'ab' (default: all)")
    ap.add_argument("--bin-dir", default=os.environ.get(
        "CLUSTERD_BIN_DIR", os.path.join(HERE, "..", "..", "build", "bin")))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.md"))
    ap.add_argument("--duration", type=int, help="seconds per wrk throughput run")
    ap.add_argument("--rounds", type=int, help="throughput rounds (the fastest is reported)")
    ap.add_argument("--rows", default="",
                    help="throughput rows only, as KEY:WORKERS (standalone, clusterd, nginx, "
                         "node), e.g. clusterd:2,nginx:2")
    args = ap.parse_args()
    duration, rounds = args.duration, args.rounds
    if args.smoke:
        args.duration, args.warmup, args.rounds = 1, 0, 1
        args.kills, args.kill_gap, args.idle = 3, 0.05, 2.0
        args.footprint, args.spawn = [1, 64], 100
    else:
        args.duration, args.warmup, args.rounds = 6, 2, 5
        args.kills, args.kill_gap, args.idle = 20, 0.2, 10.0
        args.footprint, args.spawn = [1, 64, 512], 1000
    args.duration = duration or args.duration
    args.rounds = rounds or args.rounds

    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    ensure_tools(allow_install=not (args.smoke or args.no_install))
    info = machine()
    log(f"{info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, load {load_average()}")
    try:
        bench = Bench(args)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    bench.run()
    publish(render(bench.rows, args, info, started, time.monotonic() - t0), args.out)
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())

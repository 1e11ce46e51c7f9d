"""Helpers for clusterd's end-to-end tests: a real daemon on free 127.0.0.1 ports,
its workers found through /proc, its log read as it is written."""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

BIN = os.environ.get("CLUSTERD_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build/bin"))
CLUSTERD = os.path.join(BIN, "clusterd")
WORKER = os.path.join(BIN, "clusterd-worker")
MISBEHAVE = os.path.join(BIN, "clusterd-test-misbehave")
# Set by scripts/dev.sh for the AddressSanitizer stage: ASan keeps freed memory in quarantine
# (256 MiB by default), so the master's RSS says nothing about what it holds; tests skip
# their memory bounds there (the first stage checks them on the real binaries).
SANITIZED = os.environ.get("CLUSTERD_SANITIZED") == "1"

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode().split("=", 1) for i in items if b"=" in i)


def ctx_switches(pid):
    """Voluntary + involuntary context switches of every thread of `pid`: its wakeups."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:",
                                        "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass  # a thread that just ended
    return total


def wait_for(predicate, timeout, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(port, path="/", timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sample(text, name, **labels):
    """The value of one sample of a Prometheus text page (str or bytes), or None."""
    if isinstance(text, bytes):
        text = text.decode()
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def connect_outcome(port, timeout):
    """('refused' | 'reset' | 'served' | 'timeout' | ..., seconds) of one new connection."""
    start = time.monotonic()
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(64)
        outcome = "served" if data.startswith(b"HTTP/1.1 200") else (
            "reset" if not data else "other")
    except ConnectionRefusedError:
        outcome = "refused"
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    except socket.timeout:
        outcome = "timeout"
    finally:
        s.close()
    return outcome, time.monotonic() - start


class Daemon:
    """One `clusterd run -c CONFIG` process; its log goes to a file."""

    def __init__(self, config_text=None, args=(), binary=None):
        """Starts at once when given the config text; else write_config() then launch().
        `binary`: another clusterd than the build's (a benchmark comparing two builds)."""
        self.binary = binary or CLUSTERD
        self.dir = tempfile.mkdtemp(prefix="clusterd-e2e-")
        self.config = os.path.join(self.dir, "clusterd.yaml")
        self.log_path = os.path.join(self.dir, "clusterd.log")
        self.log = open(self.log_path, "w")
        self.args = list(args)
        self.proc = None
        if config_text is not None:
            self.write_config(config_text)
            self.launch()

    def write_config(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    def launch(self):
        """Start (or start again, after it exited) the daemon on the config file.

        Every daemon gets its own control socket and state directory in its temp dir
        (DIR/control.sock, DIR/state) unless its config names them."""
        with open(self.config) as f:
            text = f.read()
        own = []
        if not re.search(r"^\s*control:", text, re.M):
            own += ["--control", os.path.join(self.dir, "control.sock")]
        if not re.search(r"^\s*state_dir:", text, re.M):
            own += ["--state-dir", os.path.join(self.dir, "state")]
        self.proc = subprocess.Popen([self.binary, "run", "-c", self.config, *own, *self.args],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, pattern, timeout=10.0, count=1):
        rx = re.compile(pattern)

        def found():
            matches = [line for line in self.log_text().splitlines() if rx.search(line)]
            return matches if len(matches) >= count else None

        try:
            return wait_for(found, timeout, what=f"log line /{pattern}/ x{count}")
        except AssertionError:
            raise AssertionError(f"log line /{pattern}/ x{count} not seen; log:\n{self.log_text()}")

    def workers(self):
        """{slot: pid} of the master's live children."""
        out = {}
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return out
        for pid in pids:
            try:
                env = environ_of(pid)
                pgid = os.getpgid(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            # A worker leads its own process group; a re-parented orphan of one does not.
            if "CLUSTERD_WORKER_ID" in env and pid_alive(pid) and pgid == pid:
                out[int(env["CLUSTERD_WORKER_ID"])] = pid
        return out

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout=15.0):
        return self.proc.wait(timeout=timeout)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Load:
    """Client threads looping new-connection GETs until stopped; records failures."""

    def __init__(self, port, threads=2, path="/"):
        self.port, self.path = port, path
        self.ok = 0
        self.errors = []  # (time, repr(exception))
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.stop_flag.is_set():
            try:
                status, _ = http_get(self.port, self.path, timeout=10)
                with self.lock:
                    if status == 200:
                        self.ok += 1
                    else:
                        self.errors.append((time.monotonic(), f"HTTP {status}"))
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.errors.append((time.monotonic(), repr(e)))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=15)


class Wrk:
    """wrk keep-alive load for a bounded time, in the background; result() once done:
    (requests, errors: socket errors and non-2xx answers, wrk's output)."""

    def __init__(self, port, seconds):
        self.proc = subprocess.Popen(
            ["wrk", "-t2", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self):
        out, _ = self.proc.communicate(timeout=120)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        errors = 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m:
            errors += sum(int(x) for x in m.groups())
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if m:
            errors += int(m.group(1))
        return requests, errors, out

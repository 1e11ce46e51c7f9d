"""The clusterd image (etc/container/Containerfile) under a real container runtime, podman:
clusterd runs as PID 1, `cores: auto` follows --cpus, `podman stop` drains and exits 0, a
killed worker is replaced, orphans are reaped, the HEALTHCHECK follows the ready workers,
and the control commands work through `podman exec`.

    python3 tests/container/test_image.py -v     (ctest -L container)

Before the tests it brings the image up to date with scripts/container.sh build, which keeps
an image whose package and files are unchanged (CLUSTERD_BUILD_DIR: the build whose .deb it
packs with cpack; without it, the image CLUSTERD_IMAGE:latest is used as it is). Exits 77 (ctest:
skipped), saying why, where podman is missing or cannot run a container.

The runtime flags are what a host with a hybrid cgroup layout and no CAP_SYS_RESOURCE needs
(README, "Run in a container"); CLUSTERD_PODMAN_FLAGS replaces them."""

import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import wait_for  # noqa: E402

# Each poll runs `podman exec`: a tenth of a second apart.
POLL = 0.1

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "../.."))
# The name scripts/container.sh tags (CLUSTERD_IMAGE, as there), at its latest build.
IMAGE = os.environ.get("CLUSTERD_IMAGE", "localhost/clusterd") + ":latest"
BUILD_DIR = os.environ.get("CLUSTERD_BUILD_DIR", "")
# crun refuses the hybrid cgroup layout (v1 controllers + a v2 mount), so runc with cgroupfs.
GLOBAL = shlex.split(os.environ.get("CLUSTERD_PODMAN_FLAGS",
                                    "--runtime runc --cgroup-manager cgroupfs"))
# podman raises nofile and nproc to its own defaults, which root without CAP_SYS_RESOURCE
# may not; these are within the host's hard limits.
RUN_FLAGS = ["--ulimit", "nofile=1024:20000", "--ulimit", "nproc=4096:4096"]
NAME = f"clusterd-test-{os.getpid()}"
# /cpu?ms=N on a worker of its own, to have a request in flight while the container stops.
SLOW_PROGRAM = """programs:
  slow:
    command: [/usr/bin/clusterd-worker, --cpu-endpoint]
    cores: 1
    stop_timeout: 7s
    listen:
      - {name: http, address: "0.0.0.0:8081"}
"""
EXTRA_PROGRAM = """programs:
  extra:
    cores: 1
    listen:
      - {name: http, address: "0.0.0.0:8082"}
"""


def podman(*args, check=True, timeout=60):
    r = subprocess.run(["podman", *GLOBAL, *args], capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {r.returncode}:\n"
                             f"{r.stdout}{r.stderr}")
    return r


def skip(reason):
    print(f"SKIPPED: {reason}")
    sys.exit(77)


def prepare():
    """Skip where podman cannot run a container; bring the image up to date."""
    if shutil.which("podman") is None:
        skip("podman is not installed (apt-get install podman runc)")
    if BUILD_DIR:
        env = dict(os.environ, BUILD_DIR=BUILD_DIR, SKIP_PACKAGE="1",
                   ENGINE_FLAGS=" ".join(GLOBAL))
        base = subprocess.run([os.path.join(SOURCE, "scripts/container.sh"), "base"], env=env)
        if base.returncode != 0:
            sys.exit("could not build the local base image (scripts/container.sh base)")
        tag = env.get("CLUSTERD_BASE_TAG", "localhost/clusterd-base:bookworm")
        probe = podman("run", "--rm", *RUN_FLAGS, tag, "true", check=False)
        if probe.returncode != 0:
            skip(f"podman cannot run a container here: {probe.stderr.strip()}")
        started = time.monotonic()
        cpack = subprocess.run(["cpack", "-G", "DEB", "-B", os.path.join(BUILD_DIR, "package")],
                               cwd=BUILD_DIR, capture_output=True, text=True)
        if cpack.returncode != 0:
            sys.exit(f"cpack failed:\n{cpack.stdout}{cpack.stderr}")
        build = subprocess.run([os.path.join(SOURCE, "scripts/container.sh"), "build"], env=env)
        if build.returncode != 0:
            sys.exit("scripts/container.sh build failed")
        print(f"image ready in {time.monotonic() - started:.1f}s (cpack and image build)")
    elif podman("image", "exists", IMAGE, check=False).returncode != 0:
        skip(f"no image {IMAGE} (scripts/container.sh build, or set CLUSTERD_BUILD_DIR)")
    probe = podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "/bin/true", IMAGE, check=False)
    if probe.returncode != 0:
        skip(f"podman cannot run a container here: {probe.stderr.strip()}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path="/", timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Container:
    """One container of the image, removed at the end whatever happened."""

    counter = 0

    def __init__(self, *flags, files=None):
        Container.counter += 1
        self.name = f"{NAME}-{Container.counter}"
        self.port = free_port()
        self.files = tempfile.mkdtemp(prefix="clusterd-container-test.")
        mounts = []
        for path, text in (files or {}).items():
            host = os.path.join(self.files, os.path.basename(path))
            with open(host, "w") as f:
                f.write(text)
            mounts += ["-v", f"{host}:{path}:ro"]
        # Published on 127.0.0.1 only.
        podman("run", "-d", "--name", self.name, *RUN_FLAGS, *flags, *mounts,
               "-p", f"127.0.0.1:{self.port}:8080", IMAGE)

    def close(self):
        podman("rm", "-f", "-t", "0", self.name, check=False)
        shutil.rmtree(self.files, ignore_errors=True)

    def exec(self, *argv, check=True, timeout=30):
        return podman("exec", self.name, *argv, check=check, timeout=timeout)

    def sh(self, script, check=True):
        return self.exec("bash", "-c", script, check=check)

    def status(self, program=None):
        out = self.exec("clusterd", "status", *([program] if program else []), "--json")
        return json.loads(out.stdout.strip().splitlines()[-1])["status"]

    def program(self, name="web"):
        for p in self.status()["programs"]:
            if p["name"] == name:
                return p
        return None

    def ready_pids(self, name="web"):
        try:
            p = self.program(name)
        except AssertionError:  # the control socket is not up yet
            return []
        return sorted(s["pid"] for s in p["slots"] if s["state"] == "ready") if p else []

    def wait_ready(self, n, name="web", timeout=30):
        return wait_for(lambda: len(self.ready_pids(name)) == n and self.ready_pids(name), timeout,
                        interval=POLL, what=f"{n} ready workers of {name} in {self.name}")

    def inspect(self, fmt):
        return podman("inspect", "--format", fmt, self.name).stdout.strip()

    def logs(self):
        r = podman("logs", self.name, check=False)
        return r.stdout + r.stderr

    def healthcheck(self):
        """(healthy?, podman's output): `podman healthcheck run` exits 0 when healthy."""
        r = podman("healthcheck", "run", self.name, check=False)
        return r.returncode == 0, (r.stdout + r.stderr).strip()


class ImageTest(unittest.TestCase):
    def start(self, *flags, files=None):
        c = Container(*flags, files=files)
        self.addCleanup(c.close)
        return c

    def test_image_config(self):
        config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
        self.assertEqual(config["Cmd"], ["/usr/bin/clusterd", "run"])
        self.assertEqual(config["StopSignal"], "SIGTERM")
        self.assertIn("8080/tcp", config["ExposedPorts"])
        health = json.loads(podman("inspect", "--type", "image", "--format",
                                   "{{json .HealthCheck}}", IMAGE).stdout)
        self.assertEqual(health["Test"], ["CMD", "/usr/local/bin/clusterd-healthcheck"])

    def test_cores_auto_follows_cpus(self):
        counts = [1, 2] if os.cpu_count() >= 2 else [1]
        for cpus in counts:
            with self.subTest(cpus=cpus):
                c = self.start(f"--cpus={cpus}")
                pids = c.wait_ready(cpus)
                p = c.program()
                self.assertEqual(p["workers"], cpus)
                self.assertEqual(p["config_workers"], cpus)
                # clusterd is PID 1 and its workers are its children.
                self.assertEqual(c.status()["daemon"]["pid"], 1)
                for pid in pids:
                    ppid = c.sh(f"awk '/^PPid:/ {{print $2}}' /proc/{pid}/status").stdout
                    self.assertEqual(ppid.strip(), "1")
                status, body = http_get(c.port)
                self.assertEqual(status, 200)
                # Nothing in flight: the stop is the workers' drain alone.
                started = time.monotonic()
                podman("stop", "-t", "10", c.name, timeout=30)
                stopped = time.monotonic() - started
                self.assertEqual(c.inspect("{{.State.ExitCode}}"), "0")
                self.assertLess(stopped, 10.0)
                print(f"--cpus={cpus}: {len(pids)} workers ready, pids {pids}; "
                      f"podman stop took {stopped:.2f}s, exit code 0")

    def test_stop_drains_in_flight_request_and_exits_0(self):
        c = self.start("--cpus=2", files={"/etc/clusterd/conf.d/slow.yaml": SLOW_PROGRAM})
        c.wait_ready(1, "slow")
        c.wait_ready(2)
        # The slow program's port is not published: the request is made from inside.
        result = {}

        def request():
            r = c.exec("bash", "-c",
                       "exec 3<>/dev/tcp/127.0.0.1/8081 && "
                       "printf 'GET /cpu?ms=1000 HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
                       check=False)
            result["out"] = r.stdout
            result["done"] = time.monotonic()

        t = threading.Thread(target=request)
        t.start()
        # In flight: an established connection on port 8081 (1F91) in the container.
        wait_for(lambda: c.sh("awk '$2 ~ /:1F91$/ && $4 == \"01\"' /proc/net/tcp").stdout.strip(),
                 10, interval=POLL, what="the request to be in flight")
        time.sleep(0.2)
        started = time.monotonic()
        stop = podman("stop", "-t", "10", c.name, check=False, timeout=30)
        stopped = time.monotonic() - started
        t.join(15)
        print(f"podman stop took {stopped:.2f}s; the request in flight ended "
              f"{result.get('done', started) - started:.2f}s after the stop began")
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertEqual(c.inspect("{{.State.ExitCode}}"), "0")
        self.assertLess(stopped, 10.0, "stopped by the runtime's KILL, not by the drain")
        self.assertIn("200 OK", result.get("out", ""), "the request in flight was not answered")
        self.assertIn("burned 1000 ms", result.get("out", ""))

    def test_killed_worker_is_replaced(self):
        c = self.start("--cpus=2")
        pids = c.wait_ready(2)
        victim = pids[0]
        started = time.monotonic()
        c.sh(f"kill -9 {victim}")
        after = wait_for(lambda: (lambda p: len(p) == 2 and victim not in p and p)(c.ready_pids()),
                         15, interval=POLL, what="the killed worker's replacement to be ready")
        replaced = time.monotonic() - started
        slot = [s for s in c.program()["slots"] if s["pid"] not in pids][0]
        self.assertGreaterEqual(slot["restarts"], 1)
        self.assertEqual(c.inspect("{{.State.Status}}"), "running")
        print(f"killed worker {victim}; workers now {after} (seen ready {replaced:.2f}s after "
              f"the kill, polling through podman exec), last exit: {slot['last_exit']}")
        self.assertEqual(http_get(c.port)[0], 200)

    def test_orphan_is_reaped_by_pid_1(self):
        c = self.start("--cpus=1")
        c.wait_ready(1)
        # The exec'd shell backgrounds a sleep and exits: the sleep is re-parented to the
        # container's init, clusterd.
        orphan = int(c.sh("sleep 2 </dev/null >/dev/null 2>&1 & echo $!").stdout.strip())
        started = time.monotonic()
        ppid = c.sh(f"awk '/^PPid:/ {{print $2}}' /proc/{orphan}/status", check=False)
        self.assertEqual(ppid.stdout.strip(), "1", "the orphan was not re-parented to PID 1")

        def state():
            r = c.sh(f"cat /proc/{orphan}/stat 2>/dev/null", check=False)
            return r.stdout.rsplit(")", 1)[1].split()[0] if r.stdout else "gone"

        wait_for(lambda: state() == "gone", 10, interval=0.2,
                 what=f"the orphan {orphan} to be reaped (last state {state()})")
        zombies = c.sh("for f in /proc/[0-9]*/stat; do read -r l < $f; "
                       "s=${l##*) }; [ \"${s%% *}\" = Z ] && echo \"$l\"; done; true").stdout
        self.assertEqual(zombies.strip(), "", "zombies left in the container")
        print(f"orphan {orphan} (sleep 2) re-parented to PID 1 and reaped: gone from /proc "
              f"{time.monotonic() - started:.2f}s after its parent exited; no zombie left")

    def test_healthcheck_follows_ready_workers(self):
        c = self.start("--cpus=1")
        c.wait_ready(1)
        wait_for(lambda: c.healthcheck()[0], 15, interval=POLL, what="the first healthy check")
        print(f"running: {c.inspect('{{.State.Health.Status}}')}")
        c.exec("clusterd", "stop", "web")
        healthy, out = c.healthcheck()
        self.assertFalse(healthy)
        health = json.loads(c.inspect("{{json .State.Health}}") or "{}")
        last = health.get("Log", [{}])[-1].get("Output", "")
        print(f"after clusterd stop web: {out}, the check said {last.strip()!r}")
        self.assertIn("web: 0/", last)
        c.exec("clusterd", "start", "web")
        c.wait_ready(1)
        healthy, out = c.healthcheck()
        print(f"after clusterd start web: healthy {healthy}, {c.inspect('{{.State.Health.Status}}')}")
        self.assertTrue(healthy)

    def test_status_and_reload_through_exec(self):
        c = self.start("--cpus=1")
        c.wait_ready(1)
        text = c.exec("clusterd", "status").stdout
        self.assertIn("web", text)
        print(text)
        # A drop-in added inside the container, then reloaded: its program starts.
        c.sh(f"cat > /etc/clusterd/conf.d/extra.yaml <<'EOF'\n{EXTRA_PROGRAM}EOF")
        reload = c.exec("clusterd", "reload")
        print(reload.stdout + reload.stderr)
        c.wait_ready(1, "extra")
        self.assertEqual(c.status()["daemon"]["reloads_ok"], 1)
        ok = c.sh("exec 3<>/dev/tcp/127.0.0.1/8082 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 "
                  "&& head -1 <&3").stdout
        self.assertIn("200", ok)
        # A broken drop-in: reload fails, naming it, and nothing changes.
        c.sh("echo 'programs: {broken: {cores: x}}' > /etc/clusterd/conf.d/zz.yaml")
        bad = c.exec("clusterd", "reload", check=False)
        print(bad.stdout + bad.stderr)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("zz.yaml", bad.stdout + bad.stderr)
        self.assertEqual(len(c.ready_pids("extra")), 1)


if __name__ == "__main__":
    prepare()
    unittest.main()

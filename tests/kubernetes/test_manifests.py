"""The Kubernetes manifests (etc/kubernetes/*.yaml) checked against the clusterd config they
mount, since no Debian-packaged tool validates them against the Kubernetes API offline:

- every document has apiVersion, kind and metadata.name;
- the config a Deployment's container runs (`clusterd run -c PATH`, found through its
  volumeMounts in a ConfigMap of these files) passes `clusterd check -c`;
- the probes and containerPorts name ports clusterd listens on, on an address the kubelet
  can reach, with a path that port answers (/healthz, /metrics of daemon.metrics; /healthz
  of the built-in worker);
- terminationGracePeriodSeconds exceeds daemon.shutdown_timeout, and the programs'
  stop_timeout (along depends_on chains) fits within shutdown_timeout;
- programs on `cores: auto` run in a container with a CPU limit, whose workers are the
  limit rounded up (common/cpus.cpp), as the manifest's comment says; where this test may
  create a cgroup (root, cgroup v1 cpu or v2), `clusterd check` run under that quota says so.

Usage: CLUSTERD_BIN_DIR=build/bin python3 test_manifests.py [-v]. Exits 77 (skipped) without
PyYAML (python3-yaml), unless CI=true."""

import glob
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

try:
    import yaml
except ImportError:
    if os.environ.get("CI") == "true":
        print("FAIL: PyYAML is not installed (CI=true: missing tools fail the test)")
        sys.exit(1)
    print("SKIP: PyYAML is not installed (apt-get install python3-yaml)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFESTS = sorted(glob.glob(os.path.join(HERE, "../../etc/kubernetes/*.yaml")))
BIN = os.environ.get("CLUSTERD_BIN_DIR", os.path.join(HERE, "../../build/bin"))
CLUSTERD = os.path.join(BIN, "clusterd")

# Defaults of common/config.hpp.
DEFAULT_CONFIG = "/etc/clusterd/clusterd.yaml"
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
# Kubernetes' default terminationGracePeriodSeconds.
DEFAULT_GRACE = 30
CPU_PERIOD_US = 100000  # the kubelet's CFS period


def parse_duration(text):
    """Seconds of a clusterd duration: <int><unit> groups (ms s m h), or a bare 0."""
    text = str(text).strip()
    if text == "0":
        return 0.0
    groups = re.findall(r"(\d+)(ms|s|m|h)", text)
    if not groups or "".join(n + u for n, u in groups) != text:
        raise ValueError(f"not a duration: {text!r}")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * unit[u] for n, u in groups)


def parse_cpu(quantity):
    """CPUs of a Kubernetes CPU quantity: 2, "2", "1500m", "0.5"."""
    text = str(quantity).strip()
    if text.endswith("m"):
        return int(text[:-1]) / 1000
    return float(text)


def split_address(address):
    """(host, port) of clusterd's "host:port" (IPv6 in brackets)."""
    host, _, port = str(address).rpartition(":")
    return host.strip("[]"), int(port)


def reachable(host):
    """Whether the kubelet and other pods can reach an address bound on `host`."""
    return host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127.")


def load_documents():
    docs = []
    for path in MANIFESTS:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.basename(path), doc))
    return docs


def config_option(command):
    """The -c/--config argument of a `clusterd run` command line, else the default."""
    for i, arg in enumerate(command):
        if arg in ("-c", "--config") and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return DEFAULT_CONFIG


def longest_stop(programs):
    """Seconds of the longest graceful stop: the stop_timeouts along the longest depends_on
    chain (a program stops once every program depending on it is gone)."""
    memo = {}

    def chain(name):
        if name not in memo:
            p = programs[name] or {}
            dependents = [n for n, q in programs.items() if name in ((q or {}).get("depends_on") or [])]
            memo[name] = parse_duration(p.get("stop_timeout", f"{int(DEFAULT_STOP_TIMEOUT)}s")) + \
                max((chain(d) for d in dependents), default=0.0)
        return memo[name]

    return max((chain(n) for n in programs), default=0.0)


def in_cpu_cgroup(quota_cpus, argv):
    """Run argv in a new cgroup whose CPU quota is quota_cpus; its stdout, or None (and why)
    where no cgroup can be made here."""
    if os.geteuid() != 0:
        return None, "not root: no cgroup can be made"
    quota = int(round(quota_cpus * CPU_PERIOD_US))
    v1, v2 = "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"
    if os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
        parent, files = v1, {"cpu.cfs_period_us": str(CPU_PERIOD_US), "cpu.cfs_quota_us": str(quota)}
    elif os.path.exists(os.path.join(v2, "cgroup.controllers")):
        with open(os.path.join(v2, "cgroup.subtree_control")) as f:
            if "cpu" not in f.read().split():
                return None, "the cgroup v2 cpu controller is not enabled for children"
        parent, files = v2, {"cpu.max": f"{quota} {CPU_PERIOD_US}"}
    else:
        return None, "no cgroup v1 cpu or v2 hierarchy at /sys/fs/cgroup"
    try:
        group = tempfile.mkdtemp(prefix="clusterd-k8s-test-", dir=parent)
    except OSError as e:
        return None, f"cannot create a cgroup under {parent}: {e}"
    try:
        for name, value in files.items():
            with open(os.path.join(group, name), "w") as f:
                f.write(value)
        procs = os.path.join(group, "cgroup.procs")
        # The child moves itself into the cgroup before it execs clusterd.
        out = subprocess.run(["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return None, f"{argv[0]} in the cgroup exited {out.returncode}: {out.stderr.strip()}"
        return out.stdout, None
    except OSError as e:
        return None, f"cannot set up the cgroup {group}: {e}"
    finally:
        try:
            os.rmdir(group)
        except OSError:
            pass


class ManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_documents()
        cls.configmaps = {(d.get("metadata") or {}).get("name"): d for _, d in cls.docs
                          if isinstance(d, dict) and d.get("kind") == "ConfigMap"}
        cls.deployments = [(f, d) for f, d in cls.docs
                           if isinstance(d, dict) and d.get("kind") == "Deployment"]
        cls.tmp = tempfile.mkdtemp(prefix="clusterd-k8s-test-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_manifests_exist(self):
        self.assertTrue(MANIFESTS, "no etc/kubernetes/*.yaml")
        self.assertTrue(self.deployments, "no Deployment in etc/kubernetes")

    def test_every_document_has_api_version_kind_and_name(self):
        for file, doc in self.docs:
            with self.subTest(file=file, doc=str(doc)[:60]):
                self.assertIsInstance(doc, dict)
                for key in ("apiVersion", "kind"):
                    self.assertIsInstance(doc.get(key), str, f"{file}: no {key}")
                    self.assertTrue(doc[key], f"{file}: empty {key}")
                name = (doc.get("metadata") or {}).get("name")
                self.assertIsInstance(name, str, f"{file}: a {doc.get('kind')} without metadata.name")
                self.assertRegex(name, r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                 f"{file}: metadata.name {name!r} is not a DNS name")

    def test_deployment_selector_matches_its_pods(self):
        for file, dep in self.deployments:
            spec = dep["spec"]
            labels = spec["template"]["metadata"]["labels"]
            for k, v in spec["selector"]["matchLabels"].items():
                self.assertEqual(labels.get(k), v, f"{file}: selector {k}={v}")

    def containers(self):
        """(file, deployment, pod spec, container, config text, parsed config) of each
        container that runs clusterd."""
        out = []
        for file, dep in self.deployments:
            pod = dep["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"]:
                command = (c.get("command") or []) + (c.get("args") or [])
                if not command or os.path.basename(command[0]) != "clusterd":
                    continue
                self.assertIn("run", command, f"{file}: {c['name']} does not run `clusterd run`")
                out.append((file, dep, pod, c, *self.mounted_config(file, c, volumes, command)))
        self.assertTrue(out, "no container runs clusterd")
        return out

    def mounted_config(self, file, container, volumes, command):
        path = config_option(command)
        for m in container.get("volumeMounts", []):
            mount = m["mountPath"].rstrip("/")
            if not path.startswith(mount + "/") and m.get("subPath") is None:
                continue
            volume = volumes.get(m["name"])
            self.assertIsNotNone(volume, f"{file}: no volume {m['name']}")
            if "configMap" not in volume:
                continue
            cm = self.configmaps.get(volume["configMap"]["name"])
            self.assertIsNotNone(cm, f"{file}: ConfigMap {volume['configMap']['name']} is not "
                                     "in etc/kubernetes")
            if m.get("subPath") is not None:
                if m["mountPath"] != path:
                    continue
                key = m["subPath"]
            else:
                rel = path[len(mount) + 1:]
                items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
                key = items.get(rel, rel) if items else rel
            self.assertIn(key, cm["data"], f"{file}: ConfigMap {cm['metadata']['name']} has no {key}")
            text = cm["data"][key]
            return text, yaml.safe_load(text)
        self.fail(f"{file}: {container['name']} runs {path}, which no ConfigMap mount provides")

    def test_the_mounted_config_passes_clusterd_check(self):
        for file, _, _, c, text, _ in self.containers():
            with self.subTest(container=c["name"]):
                path = os.path.join(self.tmp, f"{c['name']}.yaml")
                with open(path, "w") as f:
                    f.write(text)
                out = subprocess.run([CLUSTERD, "check", "-c", path], capture_output=True,
                                     text=True, timeout=30)
                print(f"clusterd check -c {os.path.basename(path)} ({file}):\n{out.stdout}{out.stderr}",
                      end="")
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_probes_and_ports_are_what_clusterd_listens_on(self):
        for file, _, _, c, _, config in self.containers():
            daemon = config.get("daemon") or {}
            programs = config.get("programs") or {}
            # port -> (host, paths that answer 200 there, what serves it)
            served = {}
            if daemon.get("metrics"):
                host, port = split_address(daemon["metrics"])
                served[port] = (host, {"/healthz", "/metrics"}, "daemon.metrics")
            for name, p in programs.items():
                p = p or {}
                for listen in p.get("listen") or []:
                    host, port = split_address(listen["address"])
                    # The built-in worker (no command) answers /healthz; another program's
                    # paths are unknown here.
                    paths = {"/healthz"} if not p.get("command") else set()
                    served[port] = (host, paths, f"program {name}, listener {listen['name']}")
            self.assertTrue(daemon.get("metrics"),
                            f"{file}: the config has no daemon.metrics: nothing to probe or "
                            "scrape the master on")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for name, number in ports.items():
                with self.subTest(containerPort=name):
                    self.assertIn(number, served, f"{file}: containerPort {name} ({number}) is "
                                                  f"not a port clusterd listens on {sorted(served)}")
            for port, (host, _, what) in served.items():
                with self.subTest(port=port):
                    self.assertIn(port, ports.values(),
                                  f"{file}: {what} listens on {port}, not a containerPort")
                    self.assertTrue(reachable(host), f"{file}: {what} listens on {host}:{port}, "
                                                     "which the kubelet cannot reach")
            probes = {k: c[k] for k in ("readinessProbe", "livenessProbe", "startupProbe") if k in c}
            self.assertIn("readinessProbe", probes, f"{file}: no readinessProbe")
            self.assertIn("livenessProbe", probes, f"{file}: no livenessProbe")
            for kind, probe in probes.items():
                with self.subTest(probe=kind):
                    action = probe.get("httpGet") or probe.get("tcpSocket")
                    self.assertIsNotNone(action, f"{file}: {kind} is neither httpGet nor tcpSocket")
                    port = action["port"]
                    port = ports.get(port) if isinstance(port, str) else port
                    self.assertIn(port, served, f"{file}: {kind} probes port {action['port']}, "
                                                "which clusterd does not listen on")
                    if "httpGet" in probe:
                        self.assertIn(probe["httpGet"].get("path", "/"), served[port][1],
                                      f"{file}: {kind} asks {served[port][2]} for a path it "
                                      "does not answer")
            # Readiness is the master's: 503 while a program has no ready worker.
            ready = probes["readinessProbe"].get("httpGet") or {}
            ready_port = ports.get(ready.get("port"), ready.get("port"))
            self.assertEqual((ready_port, ready.get("path")),
                             (split_address(daemon["metrics"])[1], "/healthz"),
                             f"{file}: readinessProbe should ask daemon.metrics for /healthz")

    def test_termination_grace_exceeds_the_shutdown(self):
        for file, _, pod, c, _, config in self.containers():
            daemon = config.get("daemon") or {}
            shutdown = parse_duration(daemon.get("shutdown_timeout", f"{int(DEFAULT_SHUTDOWN_TIMEOUT)}s"))
            stop = longest_stop(config.get("programs") or {})
            grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
            print(f"{file}: terminationGracePeriodSeconds {grace}, shutdown_timeout {shutdown:g}s, "
                  f"longest stop (stop_timeout along depends_on) {stop:g}s")
            self.assertLessEqual(stop, shutdown, f"{file}: workers' stop_timeout ({stop:g}s) is "
                                 f"cut short by daemon.shutdown_timeout ({shutdown:g}s)")
            self.assertGreater(grace, shutdown, f"{file}: the kubelet kills clusterd "
                               f"({grace}s) before its shutdown_timeout ({shutdown:g}s)")
            self.assertGreater(grace, stop)

    def test_cores_auto_follows_the_cpu_limit(self):
        for file, _, _, c, text, config in self.containers():
            auto = [n for n, p in (config.get("programs") or {}).items()
                    if str((p or {}).get("cores", "auto")) == "auto"]
            if not auto:
                continue
            limit = ((c.get("resources") or {}).get("limits") or {}).get("cpu")
            self.assertIsNotNone(limit, f"{file}: {auto} run on cores: auto without a CPU "
                                        "limit: one worker per CPU of the node")
            cpus = parse_cpu(limit)
            workers = max(1, math.ceil(cpus))  # common/cpus.cpp: quota rounded up, at least 1
            # The manifest says how many workers that is, beside `cores: auto`.
            said = re.findall(r"cores:\s*auto\b.*?(\d+) workers?", text)
            self.assertEqual([int(n) for n in said], [workers] * len(auto),
                             f"{file}: limits.cpu {limit} gives {workers} workers per "
                             f"cores: auto program; the config's comments say {said}")
            # The quota as the kubelet sets it, read by clusterd itself.
            path = os.path.join(self.tmp, f"{c['name']}-cpu.yaml")
            with open(path, "w") as f:
                f.write(text)
            out, why = in_cpu_cgroup(cpus, [CLUSTERD, "check", "-c", path])
            if out is None:
                self.skipTest(f"clusterd check under a CPU quota: {why}")
            print(f"clusterd check -c {os.path.basename(path)} under a CPU quota of {cpus:g}:\n{out}",
                  end="")
            here = len(os.sched_getaffinity(0))
            expected = min(workers, here)
            for name in auto:
                self.assertRegex(out, rf"(?m)^{re.escape(name)}: {expected} workers? \(cores: auto\)")
            if expected == here:
                # This machine has no more CPUs than the limit: show that the quota is read
                # at all, with half a CPU (1 worker).
                out, why = in_cpu_cgroup(0.5, [CLUSTERD, "check", "-c", path])
                self.assertIsNotNone(out, why)
                print(f"clusterd check -c {os.path.basename(path)} under a CPU quota of 0.5:\n{out}",
                      end="")
                for name in auto:
                    self.assertRegex(out, rf"(?m)^{re.escape(name)}: 1 worker")


if __name__ == "__main__":
    unittest.main()

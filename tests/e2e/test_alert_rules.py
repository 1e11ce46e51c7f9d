"""End to end: every metric, label and label value the Prometheus alert rules
(etc/prometheus/clusterd-rules.yaml) use is in a real scrape of a running daemon.

promtool tests the rules' logic on made-up series (tests/prometheus); this test makes sure
those series are what clusterd writes. The daemon runs programs that make each exit cause
the rules match happen (a crash, a hang, memory recycling, exits, a start timeout, a bad
config), and a reload fails, so the families and values that appear only after an event are
there too."""

import os
import re
import signal
import unittest

import yaml

from harness import MISBEHAVE, Daemon, free_port, http_get, sample, wait_for

RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     "../../etc/prometheus/clusterd-rules.yaml")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Exit causes no test can make happen: spawn_failed needs fork() or a socket or pipe of the
# master to fail (an execve() that fails is the exit code 127 of the child, cause "exited").
# They must be in the HELP text of clusterd_worker_exits_total, which lists every cause.
CAUSES_ONLY_IN_HELP = {"spawn_failed"}
NAME = re.compile(r"\bclusterd_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(clusterd_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def load_rules():
    with open(RULES) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def parse_scrape(text):
    """{family: {label: set of values}} of a Prometheus text page, and {family: HELP text}."""
    families, helps = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.setdefault(line.split()[2], {})
            continue
        if line.startswith("# HELP "):
            _, _, name, text_ = line.split(" ", 3)
            helps[name] = text_
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise AssertionError(f"not a sample line: {line!r}")
        labels = families.setdefault(m.group(1), {})
        for name, value in LABEL.findall(m.group(2) or ""):
            labels.setdefault(name, set()).add(value)
    return families, helps


def exit_causes_in_help(helps):
    """The causes the HELP text of clusterd_worker_exits_total lists ("... by cause: a, b")."""
    text = helps.get("clusterd_worker_exits_total", "")
    return {c.strip() for c in text.split(":", 1)[-1].split(",")}


class AlertRulesTest(unittest.TestCase):
    def setUp(self):
        self.mport, self.port = free_port(), free_port()
        self.d = Daemon()
        self.addCleanup(self.d.close)
        self.d.write_config(f"""
daemon:
  metrics: "127.0.0.1:{self.mport}"
programs:
  web:
    cores: 2
    watchdog: 2s
    listen:
      - {{name: http, address: "127.0.0.1:{self.port}"}}
  hangs:
    command: ["{MISBEHAVE}", stop-heartbeat, "2"]
    cores: 1
    watchdog: 1s
    abort_timeout: 500ms
  leaks:
    command: ["{MISBEHAVE}", leak, "50", "64"]
    cores: 1
    memory_limit: 30M
  exits:
    command: ["{MISBEHAVE}", exit, "1"]
    cores: 1
  never_ready:
    command: ["{MISBEHAVE}", never-ready]
    cores: 1
    start_timeout: 500ms
  bad_config:
    command: ["{MISBEHAVE}", exit, "78"]
    cores: 1
""")
        self.d.launch()
        self.d.wait_log(r"web: all 2 workers ready")
        self.d.wait_log(r"metrics on http://127\.0\.0\.1:\d+/metrics")

    def scrape(self):
        status, body = http_get(self.mport, "/metrics")
        self.assertEqual(status, 200)
        return body.decode()

    def test_every_metric_label_and_value_of_the_rules_is_scraped(self):
        rules = load_rules()
        self.assertGreaterEqual(len(rules), 7)
        # A crash: SIGKILL of a web worker (a signal clusterd did not send).
        os.kill(self.d.workers()[0], signal.SIGKILL)
        # A failed reload: an invalid file is refused.
        with open(self.d.config) as f:
            good = f.read()
        self.d.write_config(good + "  broken: {cores: -1}\n")
        self.d.signal(signal.SIGHUP)
        self.d.wait_log(r"reload refused")
        self.d.write_config(good)

        wanted = {}  # family -> {label: values the rules match}
        for rule in rules:
            for name, matchers in SELECTOR.findall(rule["expr"]):
                for label, op, value in MATCHER.findall(matchers):
                    values = wanted.setdefault(name, {}).setdefault(label, set())
                    if op == "=":
                        values.add(value)
                    elif op == "=~":
                        self.assertRegex(value, r"^\w+(\|\w+)*$", "a plain alternation")
                        values.update(value.split("|"))

        def missing(families, helps):
            """What the rules match that the scrape lacks, as name{label=value}."""
            out = set()
            for name, labels in wanted.items():
                for label, values in labels.items():
                    if name == "clusterd_worker_exits_total" and label == "cause":
                        for v in values & CAUSES_ONLY_IN_HELP:
                            if v not in exit_causes_in_help(helps):
                                out.add(f"{name} HELP: cause {v}")
                        values = values - CAUSES_ONLY_IN_HELP
                    for v in values - families.get(name, {}).get(label, set()):
                        out.add(f"{name}{{{label}={v}}}")
            # The built-in worker reports its loop lag with its first heartbeat.
            if "clusterd_worker_loop_lag_seconds" not in families:
                out.add("clusterd_worker_loop_lag_seconds")
            return out

        def complete():
            families, helps = parse_scrape(self.scrape())
            return None if missing(families, helps) else families

        try:
            families = wait_for(complete, 20, interval=0.25,
                                what="every exit cause and result the rules match")
        except AssertionError:
            lacking = missing(*parse_scrape(self.scrape()))
            self.fail(f"not in the scrape: {sorted(lacking)}\nlog:\n{self.d.log_text()}")

        for rule in rules:
            alert, expr = rule["alert"], rule["expr"]
            names = set(NAME.findall(expr))
            self.assertTrue(names, f"{alert} names no clusterd metric")
            for name in names:
                self.assertTrue(name in families, f"{alert}: {name} is not in a real scrape")
            labels = TARGET_LABELS.union(*(families[n].keys() for n in names))
            for group in GROUPING.findall(expr):
                for label in filter(None, (l.strip() for l in group.split(","))):
                    self.assertIn(label, labels, f"{alert}: no family it uses has {label}")
            for text in rule.get("annotations", {}).values():
                for label in TEMPLATE_LABEL.findall(text):
                    self.assertIn(label, labels, f"{alert}: its annotation uses {label}")
            self.assertIn(rule["labels"]["severity"], ("critical", "warning"), alert)
            # An alert about a program names it (reloads and listen overflows are the
            # daemon's and the host's: their families have no program label).
            if all("program" in families[n] for n in names):
                self.assertIn("$labels.program", rule["annotations"]["summary"], alert)

        # The values the tests of the rules feed in are the daemon's own.
        text = self.scrape()
        self.assertEqual(sample(text, "clusterd_reloads_total", result="failed"), 1)
        for cause in ("crashed", "watchdog", "memory", "exited", "start_timeout", "bad_config"):
            self.assertGreaterEqual(sample(text, "clusterd_worker_exits_total", cause=cause), 1,
                                    cause)
        self.assertEqual(sample(text, "clusterd_program_ready_workers", program="bad_config"), 0)


if __name__ == "__main__":
    unittest.main()

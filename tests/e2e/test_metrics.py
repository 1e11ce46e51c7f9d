"""End to end: the master's /metrics (Prometheus text format) and /healthz."""

import re
import unittest

from harness import MISBEHAVE, Daemon, free_port, http_get, sample, wait_for


class MetricsTest(unittest.TestCase):
    def start(self, extra=""):
        self.mport, self.port = free_port(), free_port()
        self.d = Daemon(f"""
daemon:
  metrics: "127.0.0.1:{self.mport}"
programs:
  web:
    cores: 2
    watchdog: 2s
    listen:
      - {{name: http, address: "127.0.0.1:{self.port}"}}
{extra}
""")
        self.addCleanup(self.d.close)
        self.d.wait_log(r"web: all 2 workers ready")
        self.d.wait_log(r"metrics on http://127\.0\.0\.1:\d+/metrics")

    def test_metrics_describe_programs_workers_and_listeners(self):
        self.start()
        for _ in range(5):
            http_get(self.port)
        status, body = http_get(self.mport, "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn("# TYPE clusterd_worker_restarts_total counter", text)
        for slot in ("0", "1"):
            self.assertEqual(sample(text, "clusterd_worker_state", program="web", slot=slot,
                                    state="ready"), 1)
            self.assertGreater(sample(text, "clusterd_worker_pid", program="web", slot=slot), 0)
            self.assertGreater(sample(text, "clusterd_worker_resident_memory_bytes",
                                      program="web", slot=slot), 0)
            self.assertIsNotNone(sample(text, "clusterd_listener_queue_length", program="web",
                                        listener="http", slot=slot))
        self.assertEqual(sample(text, "clusterd_program_ready_workers", program="web"), 2)
        self.assertEqual(sample(text, "clusterd_listener_backlog", program="web", slot="0"), 4096)
        self.assertIsNotNone(sample(text, "clusterd_build_info"))
        for line in text.splitlines():  # the exposition format, line by line
            if line and not line.startswith("#"):
                self.assertRegex(line, r'^[a-z_:][a-z0-9_:]*(\{[^}]*\})? (-?[0-9.e+-]+|[+-]Inf|NaN)$')
        self.assertEqual(http_get(self.mport, "/healthz")[0], 200)

        def served():  # the workers report their counts with each heartbeat (every second)
            t = http_get(self.mport, "/metrics")[1].decode()
            n = [sample(t, "clusterd_worker_requests_total", program="web", slot=s) for s in "01"]
            return None not in n and sum(n) >= 5
        wait_for(served, 5, interval=0.2, what="request counts in /metrics")

    def test_healthz_is_503_with_the_reason_when_a_program_has_no_ready_worker(self):
        self.start(extra=f"""  broken:
    command: ["{MISBEHAVE}", exit, "78"]
    cores: 1
""")
        self.d.wait_log(r"broken\[0\]: .*slot failed")
        status, body = http_get(self.mport, "/healthz")
        self.assertEqual(status, 503)
        self.assertIn(b"broken: 0/1 workers ready", body)
        text = http_get(self.mport, "/metrics")[1].decode()
        self.assertEqual(sample(text, "clusterd_worker_exits_total", program="broken",
                                cause="bad_config"), 1)
        self.assertEqual(sample(text, "clusterd_worker_state", program="broken", slot="0",
                                state="failed"), 1)


if __name__ == "__main__":
    unittest.main()

"""End to end, over raw sockets: the built-in worker under a real clusterd is strict about how
a request is framed (RFC 9112 §3.2, §6.1, §6.3), so no proxy in front of it can read a
request differently. A refused head gets its exact status line and the connection closes
after it; what followed it on the connection is never answered. Good requests still work:
keep-alive, chunked bodies, and `Expect: 100-continue` with the 100 before the body. Slow
heads and bodies get 408 and a close; the accept loop pauses, not spins, out of fds."""

import json
import os
import socket
import subprocess
import threading
import time
import unittest

from harness import CLUSTERD, WORKER, Daemon, Load, free_port, http_get, sample, wait_for

SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

# (name, request head and body, exact status line): each is sent with SMUGGLED after it.
REFUSED = [
    ("missing Host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("two equal Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("TE gzip", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("TE chunked, identity",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("TE chunked, chunked",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("TE split over two fields",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity"
     b"\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("TE then Content-Length",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     b"0\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("Content-Length then TE",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("TE gzip with Content-Length",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
     b"HTTP/1.1 400 Bad Request"),
    ("TE in HTTP/1.0",
     b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("CL not digits", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello",
     b"HTTP/1.1 400 Bad Request"),
    ("CL negative", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
     b"HTTP/1.1 400 Bad Request"),
    ("CL repeated, different",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
     b"HTTP/1.1 400 Bad Request"),
    ("CL list, different", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 0\r\n\r\nhello",
     b"HTTP/1.1 400 Bad Request"),
    ("CL overflow",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 184467440737095516160\r\n\r\nhello",
     b"HTTP/1.1 400 Bad Request"),
    ("TE gzip, chunked (not implemented)",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     b"HTTP/1.1 501 Not Implemented"),
    ("unknown expectation", b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n",
     b"HTTP/1.1 417 Expectation Failed"),
    ("chunked body over 1 MiB",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"100000\r\n" + b"a" * 0x100000 + b"\r\n" + b"1\r\na\r\n0\r\n\r\n",
     b"HTTP/1.1 413 Content Too Large"),
]


def read_until_closed(s, deadline):
    """Everything the server sends until it closes; raises socket.timeout past deadline."""
    out = b""
    while True:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def refused_exchange(port, request, timeout=5.0, after=SMUGGLED):
    """Sends the request and `after` it (the smuggled one), without closing our side;
    returns what came back before the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request + after)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed while a long body was still being sent
        return read_until_closed(s, time.monotonic() + timeout)


def read_response(s, timeout=5.0):
    """One response with a Content-Length body from a kept-alive connection."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError(f"closed mid-response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += s.recv(4096)
    return head, body


class StrictHttpTest(unittest.TestCase):
    """The built-in worker as `clusterd run` starts it: no command, default options."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.mport = free_port()
        cls.d = Daemon(f"""
daemon:
  metrics: "127.0.0.1:{cls.mport}"
programs:
  web:
    cores: 2
    listen:
      - {{name: http, address: "127.0.0.1:{cls.port}"}}
""")
        cls.d.wait_log(r"web: all 2 workers ready")

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def status_sum(self, field):
        sock = os.path.join(self.d.dir, "control.sock")
        r = subprocess.run([CLUSTERD, "status", "--json", "-s", sock], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        prog = json.loads(r.stdout.strip().splitlines()[-1])["status"]["programs"][0]
        return sum(int(s.get("fields", {}).get(field, "0")) for s in prog["slots"])

    def settled_sum(self, field):
        """The field's sum once it stopped changing: workers report once a second, so counts
        from earlier tests may still be on their way."""
        last = self.status_sum(field)
        while True:
            time.sleep(1.5)
            now = self.status_sum(field)
            if now == last:
                return now
            last = now

    def assert_refused(self, name, request, status_line):
        out = refused_exchange(self.port, request)
        self.assertTrue(out.startswith(status_line + b"\r\n"), f"{name}: {out[:200]!r}")
        self.assertIn(b"\r\nConnection: close\r\n", out, name)
        # One response only: the request smuggled after the bad one is never answered.
        self.assertEqual(out.count(b"\r\nServer: clusterd-worker\r\n"), 1, f"{name}: {out!r}")
        self.assertNotIn(b"\r\n\r\nok\n", out, name)

    def test_each_refused_head_gets_its_status_and_a_close_and_nothing_after_is_answered(self):
        for name, request, status_line in REFUSED:
            with self.subTest(name):
                self.assert_refused(name, request, status_line)

    def test_the_refusal_says_what_was_wrong(self):
        out = refused_exchange(self.port, REFUSED[1][1])
        self.assertTrue(out.endswith(b"\r\n\r\nBad Request: repeated Host field\n"), out)
        out = refused_exchange(self.port, REFUSED[3][1])
        self.assertTrue(
            out.endswith(b"\r\n\r\nBad Request: Transfer-Encoding does not end in chunked\n"), out)

    def test_refused_heads_under_load_are_all_refused_counted_and_good_clients_unharmed(self):
        before = self.settled_sum("HTTP_REJECTED")
        pids = dict(self.d.workers())
        load = Load(self.port, threads=2)
        failures = []
        rounds, threads = 5, 4

        def attack():
            for _ in range(rounds):
                for name, request, status_line in REFUSED:
                    try:
                        self.assert_refused(name, request, status_line)
                    except Exception as e:  # noqa: BLE001 - every failure is reported
                        failures.append(repr(e))

        with load:
            attackers = [threading.Thread(target=attack) for _ in range(threads)]
            for t in attackers:
                t.start()
            for t in attackers:
                t.join(120)
        self.assertEqual(failures, [])
        self.assertEqual(load.errors, [])
        self.assertGreater(load.ok, 0)
        self.assertEqual(self.d.workers(), pids, "no worker was lost")
        sent = rounds * threads * len(REFUSED)
        # Each worker reports its count with its heartbeat, once a second.
        wait_for(lambda: self.status_sum("HTTP_REJECTED") - before >= sent, 10,
                 what=f"HTTP_REJECTED to grow by {sent}")
        total = self.settled_sum("HTTP_REJECTED")
        self.assertEqual(total - before, sent)
        # /metrics exports the same count, per slot.
        code, page = http_get(self.mport, "/metrics")
        self.assertEqual(code, 200)
        exported = sum(sample(page, "clusterd_worker_http_rejected_total", program="web",
                              slot=str(k)) or 0 for k in range(2))
        self.assertEqual(exported, total)

    def test_http10_without_host_is_served(self):
        out = refused_exchange(self.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertTrue(out.endswith(b"\r\n\r\nok\n"), out)

    def test_keep_alive_and_chunked_bodies_still_work(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            for i in range(20):
                if i % 2:
                    s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                              b"\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\n")
                else:
                    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                head, body = read_response(s)
                self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
                self.assertNotIn(b"Connection: close", head)
                self.assertEqual(body, b"ok\n" if i % 2 else b"Hello from clusterd-worker\n")

    def test_expect_100_continue_comes_before_the_body_is_sent(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            for _ in range(10):
                s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                          b"Content-Length: 5\r\n\r\n")
                start = time.monotonic()
                interim = b""
                while len(interim) < 25:
                    interim += s.recv(25 - len(interim))
                self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
                self.assertLess(time.monotonic() - start, 0.5)
                s.sendall(b"hello")
                head, body = read_response(s)
                self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
                self.assertEqual(body, b"ok\n")
            # The connection is still good for a plain request.
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _ = read_response(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)

    def test_expect_100_continue_gets_the_final_status_at_once_when_the_body_cannot_help(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 5\r\n\r\n")
            out = read_until_closed(s, time.monotonic() + 5)
        self.assertTrue(out.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"), out)
        self.assertIn(b"\r\nConnection: close\r\n", out)
        self.assertNotIn(b"100 Continue", out)
        # Too large is known from the head too: 413 instead of 100.
        out = refused_exchange(self.port, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue"
                                          b"\r\nContent-Length: 5000000\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), out)

    def test_curl_posting_a_body_does_not_wait_for_a_continue(self):
        for _ in range(3):
            start = time.monotonic()
            r = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Expect: 100-continue",
                                "--data-binary", "x" * 4096, f"http://127.0.0.1:{self.port}/healthz"],
                               capture_output=True, timeout=20)
            elapsed = time.monotonic() - start
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, b"ok\n")
            # curl waits a second for a 100 that does not come.
            self.assertLess(elapsed, 0.8)


class TimeoutTest(unittest.TestCase):
    """Slow heads and bodies, with short timeouts given to the worker under clusterd."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.mport = free_port()
        cls.d = Daemon(f"""
daemon:
  metrics: "127.0.0.1:{cls.mport}"
programs:
  quick:
    command: ["{WORKER}", "--header-timeout", "1", "--request-timeout", "3"]
    cores: 1
    listen:
      - {{name: http, address: "127.0.0.1:{cls.port}"}}
""")
        cls.d.wait_log(r"quick: all 1 workers? ready")

    @classmethod
    def tearDownClass(cls):
        cls.d.close()

    def slow_head(self, results):
        """Drips header lines every 0.2 s; records (seconds to the answer, answer)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            start = time.monotonic()
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            s.setblocking(False)
            out = b""
            while time.monotonic() - start < 8:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(0.2)
                try:
                    chunk = s.recv(4096)
                    out += chunk
                    if not chunk:
                        break
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    break
            results.append((time.monotonic() - start, out))

    def test_slow_heads_get_408_and_a_close_while_others_are_served(self):
        results = []
        slow = [threading.Thread(target=self.slow_head, args=(results,)) for _ in range(10)]
        for t in slow:
            t.start()
        # Meanwhile a normal client is served at once, again and again.
        served = 0
        while any(t.is_alive() for t in slow):
            start = time.monotonic()
            out = refused_exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                              b"Connection: close\r\n\r\n", after=b"")
            self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
            self.assertLess(time.monotonic() - start, 0.5)
            served += 1
            time.sleep(0.05)
        self.assertGreater(served, 5)
        self.assertEqual(len(results), 10)
        for elapsed, out in results:
            self.assertTrue(out.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), out)
            self.assertIn(b"\r\nConnection: close\r\n", out)
            # A 1 s timeout checked once a second: between 1 and 3 s after the first byte.
            self.assertGreaterEqual(elapsed, 0.9)
            self.assertLess(elapsed, 3.5)

    def test_a_stalled_body_gets_408_within_the_request_timeout(self):
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                start = time.monotonic()
                s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
                out = read_until_closed(s, start + 8)
                elapsed = time.monotonic() - start
            self.assertTrue(out.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), out)
            self.assertGreaterEqual(elapsed, 2.9)
            self.assertLess(elapsed, 5.5)

    def test_an_idle_connection_is_not_timed_out_by_the_header_timeout(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            time.sleep(2.2)  # past the header timeout, well within the idle timeout
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_response(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertEqual(body, b"ok\n")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FdExhaustionTest(unittest.TestCase):
    """Out of file descriptors, the worker pauses accepting instead of spinning on EMFILE,
    and accepts again once connections close."""

    def test_accepting_pauses_at_emfile_and_resumes(self):
        port = free_port()
        d = Daemon(f"""
programs:
  tight:
    command: ["/usr/bin/prlimit", "--nofile=64:64", "{WORKER}"]
    cores: 1
    listen:
      - {{name: http, address: "127.0.0.1:{port}"}}
""")
        self.addCleanup(d.close)
        d.wait_log(r"tight: all 1 workers? ready")
        pid = wait_for(lambda: d.workers().get(0), 5, what="worker pid")
        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        for _ in range(120):  # more than the worker can hold: the rest wait in the backlog
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        d.wait_log(r"accept4\(\) on .* failed: Too many open files; pausing accepts")
        used = cpu_seconds(pid)
        time.sleep(2)
        self.assertLess(cpu_seconds(pid) - used, 0.3, "the worker spins at EMFILE")
        for c in clients:
            c.close()
        clients.clear()
        out = refused_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                     b"Connection: close\r\n\r\n", timeout=10,
                               after=b"")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)


if __name__ == "__main__":
    unittest.main()

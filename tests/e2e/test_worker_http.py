"""The built-in worker's HTTP/1.1 behaviour over a real socket (clusterd-worker --listen):
keep-alive, pipelining (answered inline up to a bound, then through the loop), responses
larger than the socket buffer (the inline write falls back to an asynchronous one), errors."""

import re
import socket
import subprocess
import threading
import time
import unittest

from harness import WORKER, free_port, wait_for

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = b"Hello from clusterd-worker\n"


def exchange(port, data, slow_reader=False, timeout=10):
    """Sends `data` and half-closes (from a thread), returns all the server sent until it
    closed. A slow reader has a tiny receive buffer and pauses, so the server's writes
    find the socket full."""
    with socket.socket() as s:
        s.settimeout(timeout)
        if slow_reader:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))

        def send():
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        out = b""
        reads = 0
        while True:
            chunk = s.recv(4096 if slow_reader else 1 << 20)
            if not chunk:
                sender.join(timeout)
                return out
            out += chunk
            reads += 1
            if slow_reader and reads < 100:
                time.sleep(0.001)


class WorkerHttpTest(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.proc = subprocess.Popen([WORKER, "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, what="clusterd-worker listening")

    def tearDown(self):
        self.proc.terminate()
        # 0 after TERM: a crash (or a sanitizer report, in a sanitized build) fails the test.
        self.assertEqual(self.proc.wait(timeout=10), 0)

    def test_keep_alive_answers_every_request_on_one_connection(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            for _ in range(50):
                s.sendall(REQUEST)
                data = b""
                while not data.endswith(BODY):
                    data += s.recv(4096)
                self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"))
                self.assertIn(b"\r\nContent-Length: 27\r\n", data)
                self.assertRegex(data, rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n")

    def test_pipelined_requests_are_all_answered_in_order(self):
        paths = [b"/healthz" if i % 3 == 0 else b"/" for i in range(20000)]
        data = b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n" for p in paths)
        # 20,000 responses (~2.7 MB) to a slow reader outgrow the socket buffers: the
        # worker's inline writes must fall back to asynchronous ones, and back.
        out = exchange(self.port, data, slow_reader=True)
        bodies = re.findall(rb"\r\n\r\n(ok\n|Hello from clusterd-worker\n)", out)
        self.assertEqual(len(bodies), len(paths))
        for path, body in zip(paths, bodies):
            self.assertEqual(body, b"ok\n" if path == b"/healthz" else BODY)

    def test_request_bodies_are_skipped_and_the_next_request_served(self):
        data = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"
                b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        out = exchange(self.port, data)
        self.assertEqual(out.count(b"HTTP/1.1 "), 3)
        self.assertIn(b"HTTP/1.1 405 Method Not Allowed\r\n", out)
        self.assertIn(b"\r\n\r\nok\n", out)
        self.assertTrue(out.endswith(b"Content-Length: 27\r\n\r\n"))  # HEAD: no body

    def test_http10_closes_and_errors_close(self):
        out = exchange(self.port, b"GET / HTTP/1.0\r\n\r\n")
        self.assertIn(b"\r\nConnection: close\r\n", out)
        self.assertTrue(out.endswith(BODY))
        self.assertTrue(exchange(self.port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 "))
        big = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        self.assertTrue(exchange(self.port, big).startswith(b"HTTP/1.1 431 "))
        huge = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
        self.assertTrue(exchange(self.port, huge).startswith(b"HTTP/1.1 413 "))

    def test_a_half_sent_request_then_close_gets_no_answer(self):
        out = exchange(self.port, b"GET / HTTP/1.1\r\nHost:")
        self.assertEqual(out, b"")
        time.sleep(0.05)
        self.assertIsNone(self.proc.poll())


if __name__ == "__main__":
    unittest.main()

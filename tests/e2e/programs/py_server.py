#!/usr/bin/env python3
"""A Python (stdlib only) HTTP worker for clusterd: takes its listening socket from fd 3, or
the fd given as --fd=N (systemd socket activation: LISTEN_PID, LISTEN_FDS), sends READY=1 to NOTIFY_SOCKET once
serving, heartbeats when WATCHDOG_USEC is set, and stops gracefully on SIGTERM (exit 0)."""

import http.server
import os
import signal
import socket
import sys
import threading


def notify(message):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    # "@name" is an abstract socket: the address starts with a NUL byte.
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


def inherited_socket(fd):
    """Listener `fd` (3 unless --fd N, e.g. --fd={listen.admin.fd} in clusterd's command)."""
    count = int(os.environ.get("LISTEN_FDS", "0"))
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or not 3 <= fd < 3 + count:
        sys.exit(f"py_server: fd {fd} was not passed (LISTEN_PID/LISTEN_FDS): run me under clusterd")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=fd)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = (f"python worker {os.environ.get('CLUSTERD_WORKER_ID', '?')} "
                f"pid {os.getpid()} port {self.server.server_address[1]}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock


def main():
    fd = int(sys.argv[1].split("=", 1)[1]) if sys.argv[1:2] and sys.argv[1].startswith("--fd=") else 3
    server = Server(inherited_socket(fd))
    stop = threading.Event()

    def on_term(signum, frame):
        notify("STOPPING=1")
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    if watchdog_usec > 0:
        def heartbeat():
            while not stop.wait(watchdog_usec / 2e6):
                notify("WATCHDOG=1")
        threading.Thread(target=heartbeat, daemon=True).start()
    notify(f"READY=1\nSTATUS=python {sys.version.split()[0]} serving")
    print(f"py_server: pid {os.getpid()} ready", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

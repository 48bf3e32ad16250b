"""Loopback helpers shared by tests and benchmarks: free ports, an ASGI app served in a thread and a
quiet JSON HTTP stub."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (all bound at once, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


@contextlib.contextmanager
def app_in_thread(app: Any) -> Iterator[int]:
    """Serve the ASGI ``app`` with uvicorn on a free loopback port in a thread; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class JsonStubHandler(BaseHTTPRequestHandler):
    """A test HTTP server's handler that answers JSON and keeps quiet on stderr."""

    def reply_json(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """No access log lines in the test output."""

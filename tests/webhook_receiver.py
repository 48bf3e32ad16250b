"""A real HTTP server that receives webhook deliveries the way a hospital's integration engine
would: it verifies each signature and timestamp, keeps what it accepted, and can be told to fail."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    event_id: str
    attempt: int
    body: dict[str, Any]

    @property
    def study(self) -> str:
        return str(self.body["StudyInstanceUid"])

    @property
    def sequence(self) -> int:
        return int(self.body["Sequence"])


@dataclass
class Receiver:
    """What came in. ``answer`` picks each request's status code from the parsed body (default 200)."""

    url: str = ""
    secret: str = ""
    accepted: list[Received] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)  # (event id, status) answered non-2xx
    bad_signatures: int = 0
    answer: Callable[[dict[str, Any]], int] = lambda _body: 200
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, headers: Any, raw: bytes) -> bool:
        """The check the README shows receivers: a fresh timestamp and a matching HMAC-SHA256."""
        timestamp = headers.get("X-Cloudfilm-Timestamp", "")
        sent = headers.get("X-Cloudfilm-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return False
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(f"v1={mac}", sent)

    def unique(self) -> dict[str, Received]:
        with self.lock:
            return {r.event_id: r for r in self.accepted}

    def per_study(self) -> dict[str, list[int]]:
        """Sequences each study's accepted deliveries arrived in (duplicates included)."""
        out: dict[str, list[int]] = {}
        with self.lock:
            for r in self.accepted:
                out.setdefault(r.study, []).append(r.sequence)
        return out


@contextmanager
def receiving(secret: str = "") -> Iterator[Receiver]:
    receiver = Receiver(secret=secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            if not receiver.verify(self.headers, raw):
                with receiver.lock:
                    receiver.bad_signatures += 1
                self._reply(401)
                return
            body = json.loads(raw)
            status = receiver.answer(body)
            event_id = self.headers.get("X-Cloudfilm-Event-Id", "")
            with receiver.lock:
                if 200 <= status < 300:
                    receiver.accepted.append(Received(event_id, int(self.headers.get("X-Cloudfilm-Attempt", "0")),
                                                      body))  # fmt: skip
                else:
                    receiver.refused.append((event_id, status))
            self._reply(status)

        def _reply(self, status: int) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"no")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender died while we answered: it will send this event again

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()

"""MLLP (HL7 v2 Minimal Lower Layer Protocol, HL7 v2.5.1 Appendix C.4): framing and a TCP server.

A message travels as ``0x0B`` + message + ``0x1C 0x0D``; bytes outside a frame are ignored. The
server runs an asyncio loop on its own thread; each connection's messages are handled in order
(one ACK per message, original mode) on a small thread pool. Bounds: a frame longer than the limit
is read to its end and discarded (its header is kept for the AR), a connection silent for the idle
timeout is closed, an ACK the peer does not read within it too, and at the connection limit the
connection that has been idle longest is closed to make room, so silent sockets never stop intake.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_HEAD_KEPT = 4096  # of an oversized frame: enough for its MSH, to address the AR


def frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame longer than the limit, discarded: its first bytes and its full size."""

    head: bytes
    size: int


class Deframer:
    """Splits a byte stream into MLLP frames, holding at most ``limit`` bytes of one frame."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._in_frame = False
        self._head = b""  # set while discarding an oversized frame
        self._discarded = 0

    @property
    def in_frame(self) -> bool:
        """True between a start block and its end block (a message is arriving)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        self._buffer += data
        out: list[bytes | Oversized] = []
        while True:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start < 0:
                    self._buffer.clear()  # stray bytes between frames (a CR/LF, keep-alive noise)
                    return out
                del self._buffer[: start + 1]
                self._in_frame = True
            end = self._buffer.find(END_BLOCK)
            if end >= 0:
                if self._head:
                    out.append(Oversized(self._head, self._discarded + end))
                    self._head, self._discarded = b"", 0
                elif end > self._limit:
                    out.append(Oversized(bytes(self._buffer[:_HEAD_KEPT]), end))
                else:
                    out.append(bytes(self._buffer[:end]))
                del self._buffer[: end + len(END_BLOCK)]
                self._in_frame = False
                continue
            if self._head or len(self._buffer) > self._limit:
                if not self._head:
                    self._head = bytes(self._buffer[:_HEAD_KEPT]) or b" "
                keep = 1  # a 0x1C at the very end may be the first half of the end block
                self._discarded += max(len(self._buffer) - keep, 0)
                del self._buffer[:-keep]
            return out


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    peer: str
    idle_since: float | None = field(default_factory=time.monotonic)  # None while a message arrives or is handled


class MllpServer:
    """Serves MLLP on ``host:port``; ``handle`` turns one message into its ACK (called on a worker thread),
    ``oversized`` answers a discarded frame."""

    def __init__(self, handle: Callable[[bytes], bytes], oversized: Callable[[Oversized], bytes], *, host: str,
                 port: int, max_bytes: int, idle_timeout: float, max_connections: int, workers: int = 8) -> None:
        self._handle = handle
        self._oversized = oversized
        self._host = host
        self._port = port
        self._max_bytes = max_bytes
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hl7")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.bound_port = 0

    def start(self) -> None:
        """Bind and serve on a thread of its own; raises the bind error (nothing left running)."""
        self._thread = threading.Thread(target=self._run, name=f"hl7-mllp-{self._port}", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            self._pool.shutdown(wait=False)
            raise self._error

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._serve, self._host, self._port, reuse_address=True, limit=65536))
            sock: socket.socket = self._server.sockets[0]
            self.bound_port = int(sock.getsockname()[1])
        except BaseException as exc:  # the port is taken, the address is not ours...
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for conn in list(self._connections):
                conn.writer.transport.abort()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _admit(self, conn: _Connection) -> bool:
        if len(self._connections) >= self._max_connections:
            idle = [c for c in self._connections if c.idle_since is not None]
            if not idle:
                log.warning("HL7 connection from %s refused: all %d connections are busy", conn.peer,
                            self._max_connections)
                return False
            oldest = min(idle, key=lambda c: c.idle_since or 0.0)
            log.info("HL7 connection from %s closed to make room (idle %.0f s, %d connections open)", oldest.peer,
                     time.monotonic() - (oldest.idle_since or 0.0), len(self._connections))
            self._connections.discard(oldest)
            oldest.writer.transport.abort()
        self._connections.add(conn)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")
        conn = _Connection(writer, f"{address[0]}:{address[1]}" if address else "?")
        if not self._admit(conn):
            writer.transport.abort()
            return
        loop = asyncio.get_running_loop()
        deframer = Deframer(self._max_bytes)
        try:
            frame_deadline = 0.0
            while True:
                # Between messages a peer may stay silent up to the idle timeout; a message, once begun,
                # must be complete within it (a peer dripping bytes cannot hold a connection forever).
                wait = self._idle_timeout if not deframer.in_frame else frame_deadline - time.monotonic()
                try:
                    data = await asyncio.wait_for(reader.read(65536), max(wait, 0.0))
                except TimeoutError:
                    log.info("HL7 connection from %s closed: %s for %.0f s", conn.peer,
                             "a message incomplete" if deframer.in_frame else "silent", self._idle_timeout)
                    return
                if not data:
                    return
                conn.idle_since = None
                if not deframer.in_frame:
                    frame_deadline = time.monotonic() + self._idle_timeout
                for item in deframer.feed(data):
                    if isinstance(item, Oversized):
                        log.warning("HL7 message from %s discarded: %d bytes, more than %d", conn.peer, item.size,
                                    self._max_bytes)
                        ack = self._oversized(item)
                    else:
                        ack = await loop.run_in_executor(self._pool, self._handle, item)
                    writer.write(frame(ack))
                    await asyncio.wait_for(writer.drain(), self._idle_timeout)
                if not deframer.in_frame:
                    conn.idle_since = time.monotonic()
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.info("HL7 connection from %s ended: %s", conn.peer, exc or type(exc).__name__)
        except asyncio.CancelledError:  # the server stops: the connection task ends quietly
            return
        finally:
            self._connections.discard(conn)
            writer.close()

"""Fair intake: which connections the DICOM listener keeps, and which hold an association slot.

A TCP connection costs the listener two threads but no association slot until it has sent a valid
A-ASSOCIATE-RQ; it has ``CLOUDFILM_DICOM_ARTIM_TIMEOUT`` seconds from the accept to do so (the TLS
handshake included), after which it is closed: the ARTIM timer of PS3.8 9.1.5 (Sta2), counted here
from outside the connection's own threads so that a peer trickling its request one byte at a time
is cut off as surely as a silent one. An association slot (``CLOUDFILM_DICOM_MAX_ASSOCIATIONS``) is
taken when the request arrives and freed the moment the connection closes. One peer address may
hold at most ``CLOUDFILM_DICOM_MAX_CONNECTIONS_PER_ADDRESS`` connections at once; further ones are
closed as soon as they are accepted. So idle or hostile sockets, however many, cannot keep a
modality out.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: At most one warning per peer address and kind in this many seconds (the rest are logged at DEBUG):
#: a flood of hostile connections must not flood the log as well.
WARN_EVERY_S = 60.0


@dataclass
class _Connection:
    address: str
    deadline: float | None  # the ARTIM deadline; None once the A-ASSOCIATE-RQ has arrived (or it was cut)


class Intake:
    """The listener's admission policy, shared by its plain and TLS ports (thread-safe)."""

    def __init__(self, *, artim_s: float, max_associations: int, max_per_address: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.artim_s = artim_s
        self.max_associations = max_associations
        self.max_per_address = max_per_address
        self._clock = clock
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        self._slots: set[Any] = set()  # admitted associations (pynetdicom Association threads)
        self._warned: dict[tuple[str, str], float] = {}

    # --- connections (the accept thread) ---------------------------------------------------------

    def connect(self, sock: socket.socket, address: str) -> bool:
        """Register a just-accepted connection and start its ARTIM timer; False when ``address``
        already holds its share of connections (the caller closes this one)."""
        with self._lock:
            self._forget_closed()
            held = sum(1 for c in self._connections.values() if c.address == address)
            if held >= self.max_per_address:
                self._warn(address, "limit", "%s already holds %d connections (the limit per address): "
                           "refusing another", address, held)
                return False
            self._connections[sock] = _Connection(address, self._clock() + self.artim_s)
            return True

    def open_connections(self) -> int:
        """How many accepted connections are open now (associations included)."""
        with self._lock:
            self._forget_closed()
            return len(self._connections)

    def expire(self) -> None:
        """Close every connection whose A-ASSOCIATE-RQ has not arrived within the ARTIM window."""
        now = self._clock()
        with self._lock:
            self._forget_closed()
            late = [(sock, c) for sock, c in self._connections.items() if c.deadline is not None and c.deadline <= now]
            for _sock, conn in late:
                conn.deadline = None  # closed once; counted against its address until it is gone
        for sock, conn in late:
            self._warn(conn.address, "artim", "closing a connection from %s: no A-ASSOCIATE-RQ within %g s",
                       conn.address, self.artim_s)
            hang_up(sock)

    def _forget_closed(self) -> None:
        for sock in [s for s in self._connections if s.fileno() == -1]:
            del self._connections[sock]

    # --- associations (the association threads) ---------------------------------------------------

    def admit(self, assoc: Any) -> bool:
        """The A-ASSOCIATE-RQ of ``assoc`` arrived: stop its ARTIM timer and give it an association
        slot; False when every slot is taken (the caller rejects it: local limit exceeded)."""
        sock = association_socket(assoc)
        with self._lock:
            conn = self._connections.get(sock) if sock is not None else None
            if conn is not None:
                conn.deadline = None
            self._slots = {a for a in self._slots if a.is_alive()}
            if len(self._slots) >= self.max_associations:
                return False
            self._slots.add(assoc)
            return True

    def release(self, assoc: Any) -> None:
        """The connection of ``assoc`` closed: its slot is free at once."""
        with self._lock:
            self._slots.discard(assoc)

    def _warn(self, address: str, kind: str, message: str, *args: Any) -> None:
        now = self._clock()
        key = (address, kind)
        if now - self._warned.get(key, -WARN_EVERY_S) < WARN_EVERY_S:
            log.debug(message, *args)
            return
        if len(self._warned) >= 1024:  # many addresses: forget those not warned about lately
            self._warned = {k: t for k, t in self._warned.items() if now - t < WARN_EVERY_S}
        self._warned[key] = now
        log.warning(message, *args)


def association_socket(assoc: Any) -> socket.socket | None:
    """The TCP (or TLS) socket under a pynetdicom association, while it is open."""
    wrapper = getattr(getattr(assoc, "dul", None), "socket", None)
    return getattr(wrapper, "socket", None)


def hang_up(sock: socket.socket) -> None:
    """End a connection from any thread: a thread blocked reading it (TLS handshake, PDU) sees the end
    of the stream at once; the thread that owns the socket closes it. ``socket.socket.shutdown`` is
    called unbound because ``SSLSocket.shutdown`` also drops its TLS state under a handshake that may
    be running in the connection's thread."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)

"""The DICOM Upper Layer transport under pynetdicom, hardened for hostile and slow peers.

pynetdicom's stock server does the TLS handshake in its accept loop (one silent client stalls
every new connection), leaves accepted sockets without a timeout (a peer that stops mid-PDU pins
its thread forever), trusts the PDU length a peer announces (``0xFFFFFFFF`` asks for 4 GiB) and
reads PDUs 4 KiB per Python call. Here the handshake runs in the connection's own thread within
the ARTIM window, every socket has the network timeout, a PDU longer than the limit drops the
connection, PDUs are read straight into one buffer, and which connections are kept at all is the
decision of the listener's :class:`~pacs.dimse.intake.Intake`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from socketserver import TCPServer
from typing import Any, cast

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from pacs.connection_board import ConnectionBoard, Kind
from pacs.dimse.intake import Intake
from pacs.dimse.overrides.provider import use_archive_dimse
from pacs.dimse.overrides.reactor import make_event_driven

log = logging.getLogger(__name__)

#: Smallest PDU limit, whatever the configured maximum: A-ASSOCIATE-RQs with 128 presentation
#: contexts of many transfer syntaxes each are legitimately tens of KiB.
MIN_PDU_LIMIT = 256 * 1024

_PDU_TYPES = frozenset(range(0x01, 0x08))  # A-ASSOCIATE-RQ .. A-ABORT (PS3.8 9.3)

def send_without_delay(sock: socket.socket | None) -> None:
    """Turn off Nagle's algorithm on an association's socket (see :class:`PromptSocket`)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PromptSocket(AssociationSocket):
    """An :class:`AssociationSocket` that acknowledges what it reads at once.

    A DIMSE message goes out in more than one write (the command PDU, then the data set PDUs;
    DCMTK even writes a PDU's header and body apart). With Nagle's algorithm on, as DCMTK and
    pynetdicom leave it, a later write waits until the peer has acknowledged the earlier one, and
    Linux delays an ACK up to 40 ms while it expects to send data back. Each message then stalls
    for ~45 ms: DCMTK's storescu sending 200 CT slices to the listener lost 45 ms on one instance in
    four (3.5 s in all, 1.5 s without), and a C-MOVE of them to DCMTK's storescp took 10.4 s
    (3.8 s without). So, besides TCP_NODELAY for our own writes (:func:`send_without_delay`),
    every read is followed by TCP_QUICKACK, which sends the pending ACK now; the flag does not
    stick, so it is set after each read.
    """

    def recv(self, nr_bytes: int) -> bytearray:
        data = super().recv(nr_bytes)
        self._acknowledge()
        return data

    def _acknowledge(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # type: ignore[union-attr]


class GuardedSocket(PromptSocket):
    """An :class:`AssociationSocket` that refuses oversized PDUs and non-DICOM peers, and reads each
    PDU in one buffer.

    pynetdicom reads a PDU as ``recv(6)`` (type, reserved, length) then ``recv(length)``, strictly
    alternating; a header that is not a PDU type (``GET /``, TLS to a plain port...) or a length
    over the limit ends the connection at once: the short read is seen as a closed transport.
    """

    pdu_limit: int = MIN_PDU_LIMIT
    _expect_header: bool = True

    def recv(self, nr_bytes: int) -> bytearray:
        header = self._expect_header
        self._expect_header = not header
        if header:
            data = self._recv_exactly(nr_bytes)
            if data and data[0] not in _PDU_TYPES:
                log.warning("%s sent data that is not DICOM (%r...); dropping the connection",
                            self._peer(), bytes(data[:6]))
                return bytearray()
            return data
        if nr_bytes > self.pdu_limit:
            peer = self._peer()
            log.warning("%s announced a PDU of %d bytes (limit %d); dropping the connection",
                        peer, nr_bytes, self.pdu_limit)
            return bytearray()  # short read: the DUL treats it as a closed connection
        return self._recv_exactly(nr_bytes)

    def _recv_exactly(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        got = 0
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)
            if not n:
                return buf[:got]
            got += n
        self._acknowledge()
        return buf

    def _peer(self) -> str:
        try:
            host, port = cast(socket.socket, self.socket).getpeername()[:2]
            return f"{host}:{port}"
        except (OSError, AttributeError):
            return "a peer"


class DicomRequestHandler(RequestHandler):
    """Per-connection setup in the connection's own thread: timeouts, TLS handshake, guarded socket."""

    server: DicomServer

    def handle(self) -> None:
        sock = cast(socket.socket, self.request)
        send_without_delay(sock)
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(self.server.handshake_timeout)
            try:
                sock.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.warning("TLS handshake with %s failed: %s", self.client_address[0], exc)
                _close_quietly(sock)
                return
        sock.settimeout(self.server.network_timeout)
        super().handle()

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        guarded = cast(Any, assoc.dul.socket)
        guarded.__class__ = GuardedSocket  # same state, stricter and faster recv()
        guarded.pdu_limit = self.server.pdu_limit
        make_event_driven(assoc)
        use_archive_dimse(assoc)
        return assoc


class DicomServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the deferred TLS handshake, a deeper accept backlog and the
    listener's :class:`~pacs.dimse.intake.Intake` deciding which connections it keeps."""

    request_queue_size = 128
    daemon_threads = True
    pdu_limit = MIN_PDU_LIMIT
    handshake_timeout = 30.0
    network_timeout: float | None = 60.0
    intake: Intake  # set by the listener before it serves
    #: A listening socket bound by ``serve``'s supervisor and shared with its other processes, used
    #: instead of binding one (see :func:`serving_on`).
    inherited_socket: socket.socket | None = None
    #: The connections each of those processes holds (``serve --processes N``), to spread associations.
    board: ConnectionBoard | None = None

    def server_bind(self) -> None:
        if self.inherited_socket is None:
            super().server_bind()
        else:
            cast(socket.socket, self.socket).close()
            self.socket = self.inherited_socket
            self.server_address = self.socket.getsockname()
        # Accept without waiting: where processes share the socket, another may take the connection the
        # poll announced, and a blocking accept would then hold this loop (and its shutdown) until the next.
        cast(socket.socket, self.socket).setblocking(False)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        listener = cast(socket.socket, self.socket)
        if self.board is not None and (wait := self.board.defer(Kind.DICOM)):
            # Every process sharing the socket is told of each connection and the first to accept it
            # wins, which is mostly the same one: a busier process lets a less busy sibling go first.
            time.sleep(wait)
        client, address = listener.accept()  # BlockingIOError (an OSError) when another took it: ignored
        if self.board is not None:
            self.board.held(Kind.DICOM, self.intake.open_connections() + 1)
        client.setblocking(True)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Keep the connection unless its address already holds its share (socketserver closes it)."""
        return self.intake.connect(request, str(client_address[0]))

    def service_actions(self) -> None:
        """Close connections past their ARTIM window. (pynetdicom's version runs a full ``gc.collect()``
        every 60 polls, stalling every association of the process; Python's own collector is enough.)"""
        self.intake.expire()
        if self.board is not None:
            self.board.held(Kind.DICOM, self.intake.open_connections())

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error on the connection from %s", client_address)

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (pynetdicom's also edits the AE's server list)."""
        TCPServer.shutdown(self)
        self.server_close()

    def server_close(self) -> None:
        """Close this process's handle on the listening socket. (pynetdicom's first shuts the socket down,
        which stops it listening in every process that shares it: a sibling would stop accepting.)"""
        cast(socket.socket, self.socket).close()


def serving_on(sock: socket.socket) -> type[DicomServer]:
    """A :class:`DicomServer` class that serves on ``sock``, already bound and listening."""
    return type("InheritedDicomServer", (DicomServer,), {"inherited_socket": sock})


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

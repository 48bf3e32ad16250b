"""Fair intake under hostile peers (pacs.dimse.intake): silent sockets, a slow-loris, closed sockets,
many connections from one address. Loopback has a whole /8, so each "host" below is its own
127.x.y.z address; the modality (DCMTK's storescu) connects from 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom.sop_class import Verification

from pacs.dimse.intake import Intake
from tests.pacs.dimse.support import AET, Node, associate_rq, context, run_tool

MakeNode = Callable[..., Node]
SILENT = 100


def _connect(node: Node, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", node.port))
    return sock


@contextlib.contextmanager
def _silent(node: Node, sources: list[str]) -> Iterator[list[socket.socket]]:
    """One connection from each source address that never sends a byte."""
    socks = [_connect(node, source) for source in sources]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server ends the connection within ``seconds`` (it sends nothing before)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


class SlowLoris(threading.Thread):
    """A peer that sends a valid A-ASSOCIATE-RQ one byte per second; notes when the server hangs up."""

    def __init__(self, node: Node, source: str) -> None:
        super().__init__(daemon=True)
        self.sock = _connect(node, source)
        self.connected = time.monotonic()
        self.cut_after: float | None = None
        self.sent = 0

    def run(self) -> None:
        self.sock.settimeout(1.0)
        for byte in associate_rq("LORIS"):
            try:
                self.sock.sendall(bytes([byte]))
                self.sent += 1
                if self.sock.recv(1) == b"":  # nothing comes back but the end of the connection
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        self.cut_after = time.monotonic() - self.connected
        self.sock.close()


def _storescu(node: Node, files: list[Path]) -> float:
    started = time.monotonic()
    out = run_tool("storescu", "-aet", "MODALITY", "-aec", AET, "127.0.0.1", node.port, *files, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return time.monotonic() - started


def test_silent_sockets_and_a_slow_loris_do_not_keep_a_modality_out(node: Node, study_files: list[Path]) -> None:
    """100 silent connections (3x the association limit) and a slow-loris hold no association slot:
    storescu stores at once, and each of them is cut when its ARTIM window ends."""
    artim = node.settings.dicom_artim_timeout
    assert node.settings.dicom_max_associations < SILENT
    loris = SlowLoris(node, "127.0.0.3")
    loris.start()
    with _silent(node, [f"127.0.1.{i}" for i in range(1, SILENT + 1)]) as silent:
        time.sleep(0.5)  # every connection accepted, each with its threads
        assert _storescu(node, study_files[:3]) < 2.0
        assert all(_closed_within(sock, artim + 3) for sock in silent)
    loris.join(timeout=artim + 5)
    assert loris.cut_after is not None and loris.cut_after < artim + 3, loris.cut_after
    assert loris.sent < len(associate_rq("LORIS"))


def test_closed_sockets_free_their_slots_at_once(make_node: MakeNode, study_files: list[Path]) -> None:
    node = make_node(dicom_max_associations=2)
    # Connections that come and go without a word never held a slot...
    with _silent(node, [f"127.0.2.{i}" for i in range(1, 41)]):
        time.sleep(0.2)
    assert _storescu(node, study_files[:1]) < 2.0
    # ...and established associations free theirs the moment their connection drops (no A-RELEASE, no A-ABORT).
    held = []
    for i in range(2):
        sock = _connect(node, f"127.0.3.{i + 1}")
        sock.sendall(associate_rq(f"HOLDER{i}"))
        sock.settimeout(10)
        assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC
        held.append(sock)
    full = node.associate([context(Verification)])
    assert full.is_rejected  # both slots are taken
    for sock in held:
        sock.close()
    time.sleep(0.3)
    again = [node.associate([context(Verification)]) for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in again)
    finally:
        for assoc in again:
            assoc.release()


def test_connections_per_address_are_limited(make_node: MakeNode, study_files: list[Path]) -> None:
    node = make_node(dicom_max_connections_per_address=4, dicom_artim_timeout=10.0)
    with _silent(node, ["127.0.0.2"] * 6) as socks:
        kept, refused = socks[:4], socks[4:]
        assert all(_closed_within(sock, 2) for sock in refused)  # closed as soon as accepted
        assert not any(_closed_within(sock, 0.3) for sock in kept)
        assert _storescu(node, study_files[:1]) < 2.0  # other addresses are not affected
        kept[0].close()
        time.sleep(0.3)
        with _silent(node, ["127.0.0.2"]) as (another,):
            assert not _closed_within(another, 0.5)  # a closed connection no longer counts


class _Assoc:
    """What Intake needs of an association: its socket (dul.socket.socket) and whether its thread lives."""

    def __init__(self, sock: socket.socket) -> None:
        self.dul = type("DUL", (), {"socket": type("AssociationSocket", (), {"socket": sock})()})()
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


def _cut(peer: socket.socket) -> bool:
    """True when the other end of a socket pair was shut down (nothing was ever sent on it)."""
    peer.setblocking(False)
    try:
        return peer.recv(1) == b""
    except BlockingIOError:
        return False


def test_intake_policy(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    intake = Intake(artim_s=5.0, max_associations=1, max_per_address=2, clock=lambda: now[0])
    pairs = [socket.socketpair() for _ in range(4)]
    ours, peers = [a for a, _b in pairs], [b for _a, b in pairs]
    try:
        assert intake.connect(ours[0], "10.0.0.1") and intake.connect(ours[1], "10.0.0.1")
        assert not intake.connect(ours[2], "10.0.0.1")  # a third from the same address
        assert intake.connect(ours[2], "10.0.0.2")
        first, second = _Assoc(ours[0]), _Assoc(ours[2])
        assert intake.admit(first)  # its A-ASSOCIATE-RQ arrived: its ARTIM timer stops
        assert not intake.admit(second)  # the only slot is taken (its A-ASSOCIATE-RQ arrived: no ARTIM either)
        now[0] = 4.9
        intake.expire()
        assert not any(_cut(peer) for peer in peers[:3])
        now[0] = 5.0
        intake.expire()  # ours[1] sent no request within 5 s
        assert [_cut(peer) for peer in peers[:3]] == [False, True, False]
        intake.release(first)  # its connection closed: the slot is free at once
        assert intake.admit(second)
        second.alive = False  # an association whose thread has ended holds no slot either
        assert intake.admit(_Assoc(ours[3]))
        ours[1].close()  # a closed connection no longer counts against its address
        assert intake.connect(ours[3], "10.0.0.1")
    finally:
        for sock in ours + peers:
            sock.close()
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert sum("no A-ASSOCIATE-RQ" in m for m in warnings) == 1 and sum("limit per address" in m for m in warnings) == 1

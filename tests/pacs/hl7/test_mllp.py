"""MLLP framing and the server's bounds, over real loopback sockets: frames split and joined across
writes, oversized frames refused without losing the connection, silent and dripping peers closed,
silent sockets never stopping intake, many connections at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pacs.hl7.mllp import Deframer, MllpServer, Oversized, frame
from tests.pacs.hl7.support import END, START, MllpClient


def test_deframer_splits_joined_and_split_frames() -> None:
    deframer = Deframer(limit=1000)
    assert deframer.feed(b"\r\n" + frame(b"one") + frame(b"two")[:3]) == [b"one"]
    assert deframer.in_frame
    assert deframer.feed(b"o" + END[:1]) == []
    assert deframer.feed(END[1:] + b"noise" + frame(b"three")) == [b"two", b"three"]
    assert not deframer.in_frame


def test_deframer_discards_an_oversized_frame_and_keeps_its_head() -> None:
    deframer = Deframer(limit=100)
    out = deframer.feed(START + b"MSH|" + b"x" * 150)
    assert out == []
    out = deframer.feed(b"y" * 5000 + END + frame(b"next"))
    assert isinstance(out[0], Oversized) and out[0].head.startswith(b"MSH|") and out[0].size == 4 + 150 + 5000
    assert out[1] == b"next"


@pytest.fixture
def server() -> Iterator[MllpServer]:
    def handle(raw: bytes) -> bytes:
        if raw == b"slow":
            time.sleep(0.5)
        return b"ACK " + raw

    started = MllpServer(handle, lambda item: b"TOO LARGE " + str(item.size).encode(), host="127.0.0.1", port=0,
                         max_bytes=2048, idle_timeout=1.5, max_connections=4)
    started.start()
    yield started
    started.stop()


def test_messages_in_one_connection_are_answered_in_order(server: MllpServer) -> None:
    client = MllpClient(server.bound_port)
    client.send_raw(frame(b"slow") + frame(b"fast"))  # the slow one is answered first all the same
    assert client.read_ack().raw == b"ACK slow"
    assert client.read_ack().raw == b"ACK fast"
    for piece in (START + b"sp", b"lit", END[:1], END[1:]):
        client.send_raw(piece)
        time.sleep(0.05)
    assert client.read_ack().raw == b"ACK split"
    client.close()


def test_an_oversized_message_is_refused_and_the_connection_goes_on(server: MllpServer) -> None:
    client = MllpClient(server.bound_port)
    assert client.send(b"x" * 10_000).raw == b"TOO LARGE 10000"
    assert client.send(b"after").raw == b"ACK after"
    client.close()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_silent_and_dripping_peers_are_closed(server: MllpServer) -> None:
    silent = socket.create_connection(("127.0.0.1", server.bound_port))
    dripping = socket.create_connection(("127.0.0.1", server.bound_port))
    dripping.sendall(START + b"MSH")
    started = time.monotonic()
    for _ in range(4):  # a byte every half second keeps the socket busy, never the message complete
        time.sleep(0.5)
        try:
            dripping.sendall(b"x")
        except OSError:
            break
    assert _closed_within(silent, 3.0)
    assert _closed_within(dripping, 3.0)
    assert time.monotonic() - started < 5.0
    silent.close()
    dripping.close()


def test_silent_sockets_never_stop_intake() -> None:
    server = MllpServer(lambda raw: b"ACK " + raw, lambda item: b"", host="127.0.0.1", port=0, max_bytes=4096,
                        idle_timeout=60, max_connections=4)
    server.start()
    try:
        silent = [socket.create_connection(("127.0.0.1", server.bound_port)) for _ in range(4)]  # the limit
        time.sleep(0.2)
        client = MllpClient(server.bound_port)  # the longest idle one makes room
        assert client.send(b"served").raw == b"ACK served"
        assert [_closed_within(s, 0.3) for s in silent] == [True, False, False, False]
        client.close()
        for s in silent:
            s.close()
    finally:
        server.stop()


def test_many_connections_at_once() -> None:
    wide = MllpServer(lambda raw: b"ACK " + raw, lambda item: b"", host="127.0.0.1", port=0, max_bytes=4096,
                      idle_timeout=10, max_connections=200)
    wide.start()
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        try:
            client = MllpClient(wide.bound_port)
            for i in range(5):
                assert client.send(f"m{n}-{i}".encode()).raw == f"ACK m{n}-{i}".encode()
            client.close()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(100)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        wide.stop()
    assert errors == []

"""HTTP connections accepted from the listening socket that ``serve``'s processes share, balanced
between them through the :class:`~pacs.connection_board.ConnectionBoard`, and handed to uvicorn's
protocol exactly as its own server would.

uvicorn's server (asyncio's ``create_server``) accepts every connection it is woken for, and every
process is woken for each one: keep-alive connections then gather on whichever process was idle at
that instant. Here a process that holds more connections than a sibling waits a few milliseconds
(the board says how long) before it tries, so the sibling takes the connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from pacs.connection_board import ConnectionBoard, Kind

log = logging.getLogger(__name__)

REFRESH_S = 0.1
"""How often the process's count on the board is brought up to date (connections also end)."""
OUT_OF_FILES_BACKOFF_S = 1.0
"""Pause in accepting after the process ran out of file descriptors (as asyncio's own server does)."""


class BalancedAcceptor:
    """Accepts from ``sock`` on the running loop while :meth:`start`-ed; ``connections`` counts this
    process's open HTTP connections (uvicorn's)."""

    def __init__(self, sock: socket.socket, protocol: Callable[[], asyncio.Protocol], board: ConnectionBoard,
                 connections: Callable[[], int]) -> None:  # fmt: skip
        self._sock = sock
        self._protocol = protocol
        self._board = board
        self._connections = connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._closed = False
        self._refresh: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._board.held(Kind.HTTP, self._connections())
        self._watch()
        self._refresh_count()

    def close(self) -> None:
        """Stop accepting (the socket stays open: the supervisor and the siblings hold it)."""
        self._closed = True
        self._unwatch()
        if self._refresh is not None:
            self._refresh.cancel()

    def _watch(self) -> None:
        if not self._closed and not self._watching and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    def _refresh_count(self) -> None:
        assert self._loop is not None
        if not self._closed:
            self._board.held(Kind.HTTP, self._connections())
            self._refresh = self._loop.call_later(REFRESH_S, self._refresh_count)

    def _readable(self) -> None:
        assert self._loop is not None
        delay = self._board.defer(Kind.HTTP)
        if delay <= 0:
            self._accept()
            return
        self._unwatch()  # the socket stays readable while the connection waits: no wake-up per loop turn
        self._loop.call_later(delay, self._after_wait)

    def _after_wait(self) -> None:
        if self._closed:
            return
        self._accept()  # unless a sibling took it meanwhile
        self._watch()

    def _accept(self) -> None:
        assert self._loop is not None
        try:
            conn, _address = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # a sibling took it, or the peer gave up
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.error("cannot accept an HTTP connection (%s); accepting again in %.0f s", exc.strerror,
                          OUT_OF_FILES_BACKOFF_S)
                self._unwatch()
                self._loop.call_later(OUT_OF_FILES_BACKOFF_S, self._watch)
                return
            raise
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._board.held(Kind.HTTP, self._connections() + 1)
        task = self._loop.create_task(self._serve(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _counted_protocol(self) -> asyncio.Protocol:
        """uvicorn's protocol, whose end also brings this process's count on the board up to date (a
        sibling starting a burst of connections right after must not see this process's old count)."""
        protocol = self._protocol()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            lost(exc)
            self._board.held(Kind.HTTP, self._connections())

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    async def _serve(self, conn: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(self._counted_protocol, conn)
        except Exception:  # a connection that fails here must not stop the others
            log.exception("cannot serve an accepted HTTP connection")
            conn.close()

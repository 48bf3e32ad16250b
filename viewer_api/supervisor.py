"""``cloudfilm serve`` with ``PROCESSES`` > 1: one supervisor and N serving processes.

Python runs one thread of Python at a time per process, so one process uses one core however many
associations and requests arrive. The supervisor binds the HTTP and DICOM ports itself and starts N
processes (:mod:`viewer_api.serve_process`) that inherit the listening sockets and accept from them
side by side: the kernel hands each connection to whichever process accepts first, no port is bound
twice, and a restarted process serves the same sockets at once. Everything that decides an answer
already lives in the index and the object store, which the processes share as separate nodes would.

The supervisor itself serves nothing. It prints the start-up banner once every process is ready,
restarts a process that exits (after a back-off that grows while it keeps failing), forwards SIGTERM
and SIGINT as SIGTERM (each process then finishes its requests and associations within
``SHUTDOWN_GRACE``; a SIGINT the terminal also sent them does the same) and, by holding the write end
of a pipe each process watches, takes its processes with it if it is killed. The processes write to
the supervisor's stdout and stderr, each line tagged with ``process=<slot>``; their Prometheus
metrics are summed over the processes (prometheus_client's multiprocess mode) so that a scrape
through the shared port sees the whole node.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import FrameType

from pacs.archive import Archive
from pacs.connection_board import ConnectionBoard
from pacs.fsck import housekeep
from pacs.settings import Settings
from viewer_api.banner import StartUp, startup_banner
from viewer_api.server import ListeningSockets

log = logging.getLogger("cloudfilm.supervisor")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STEADY_S = 60.0  # a process that ran this long before exiting is restarted after the first back-off again
KILL_AFTER_GRACE_S = 15.0  # beyond SHUTDOWN_GRACE, what a process gets to exit after SIGTERM before SIGKILL
BACKLOG = 1024
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, inheritable by the serving processes."""
    family, _type, _proto, _name, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_all(settings: Settings) -> ListeningSockets:
    """The HTTP port, and the DICOM ports when the listener is on (all closed if one fails)."""
    bound: list[socket.socket] = []
    try:
        bound.append(bind(settings.http_host, settings.http_port))
        dicom = tls = None
        if settings.dicom_enabled:
            dicom = bind(settings.dicom_host, settings.dicom_port)
            bound.append(dicom)
            if settings.dicom_tls_port is not None:
                tls = bind(settings.dicom_host, settings.dicom_tls_port)
                bound.append(tls)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return ListeningSockets(bound[0], dicom, tls)


@dataclass
class _Process:
    slot: int
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # read end of the pipe the process writes one byte to once it serves
    started_at: float = 0.0
    served: bool = False  # ready at least once since the supervisor started
    backoff: float = FIRST_BACKOFF_S
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)  # pids, oldest first


class Supervisor:
    """Runs ``processes`` serving processes until SIGTERM/SIGINT; :meth:`run` returns the exit code."""

    def __init__(self, archive: Archive, start: StartUp, processes: int) -> None:
        self._archive = archive
        self._start = start
        self._processes = [_Process(slot) for slot in range(processes)]
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._sockets: ListeningSockets | None = None
        self._lifeline = (-1, -1)
        self._metrics_dir = ""
        self._board: ConnectionBoard | None = None

    def run(self) -> int:
        """Bind, start the processes and watch them; raises :class:`OSError` when a port cannot be bound."""
        settings = self._archive.settings
        self._sockets = bind_all(settings)
        self._lifeline = os.pipe()
        self._board = ConnectionBoard.create(len(self._processes))
        self._metrics_dir = tempfile.mkdtemp(prefix="cloudfilm-metrics-")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            housekeep(self._archive)  # what a killed predecessor's writes left, once for every process
            self._archive.engine.dispose()  # the supervisor keeps no database connection open
            log.info("serving with %d processes on HTTP port %d%s", len(self._processes),
                     self._sockets.http.getsockname()[1],
                     f" and DICOM port {self._sockets.dicom.getsockname()[1]}" if self._sockets.dicom else "")
            for process in self._processes:
                self._spawn(process)
            return self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in self._lifeline:
                os.close(fd)
            if self._board is not None:
                self._board.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    # --- processes -------------------------------------------------------------------------------

    def _spawn(self, process: _Process) -> None:
        sockets, board = self._sockets, self._board
        assert sockets is not None and board is not None
        ready_r, ready_w = os.pipe()
        lifeline = self._lifeline[0]
        fds = [ready_w, lifeline, sockets.http.fileno(), board.fd]
        args = ["--slot", str(process.slot), "--ready-fd", str(ready_w), "--lifeline-fd", str(lifeline),
                "--http-fd", str(sockets.http.fileno()), "--board-fd", str(board.fd),
                "--processes", str(len(self._processes))]
        for name, sock in (("--dicom-fd", sockets.dicom), ("--dicom-tls-fd", sockets.dicom_tls)):
            if sock is not None:
                args += [name, str(sock.fileno())]
                fds.append(sock.fileno())
        env = {**os.environ, MULTIPROC_ENV: self._metrics_dir}
        try:
            # -P: no script directory or working directory on sys.path (what the console script has)
            process.proc = subprocess.Popen([sys.executable, "-P", "-m", "viewer_api.serve_process", *args],
                                            pass_fds=fds, env=env)
        finally:
            os.close(ready_w)
        process.ready_fd = ready_r
        process.started_at = time.monotonic()
        process.restart_at = None
        process.history.append(process.proc.pid)
        self._selector.register(ready_r, selectors.EVENT_READ, process)
        log.info("process %d started (pid %d)", process.slot, process.proc.pid)

    def _watch(self) -> int:
        announced = False
        while not self._stopping:
            for key, _events in self._selector.select(timeout=0.2):
                process = key.data
                if os.read(key.fd, 16):
                    process.served = True
                self._forget_ready_pipe(process)
            now = time.monotonic()
            for process in self._processes:
                if process.proc is not None and (code := process.proc.poll()) is not None:
                    if not announced and not process.served:
                        log.error("process %d (pid %d) %s while starting; stopping", process.slot,
                                  process.proc.pid, _how(code))
                        self._exited(process)
                        return code if code > 0 else 1
                    self._exited(process)
                    if not self._stopping:
                        self._schedule_restart(process, code, now)
                if process.proc is None and process.restart_at is not None and now >= process.restart_at:
                    self._spawn(process)
            if not announced and all(p.served for p in self._processes):
                announced = True
                _print(startup_banner(self._archive, self._start, processes=len(self._processes)))
        return 0

    def _schedule_restart(self, process: _Process, code: int, now: float) -> None:
        if now - process.started_at >= STEADY_S:
            process.backoff = FIRST_BACKOFF_S
        process.restart_at = now + process.backoff
        log.warning("process %d (pid %d) %s; restarting it in %.1f s", process.slot, process.history[-1],
                    _how(code), process.backoff)
        process.backoff = min(process.backoff * 2, MAX_BACKOFF_S)

    def _exited(self, process: _Process) -> None:
        assert process.proc is not None
        self._forget_ready_pipe(process)
        _metrics_of_dead(self._metrics_dir, process.proc.pid)
        if self._board is not None:
            self._board.mark_absent(process.slot)  # its siblings no longer wait for it to accept
        process.proc = None

    def _forget_ready_pipe(self, process: _Process) -> None:
        if process.ready_fd is not None:
            self._selector.unregister(process.ready_fd)
            os.close(process.ready_fd)
            process.ready_fd = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("%s: stopping %d processes", signal.Signals(signum).name, len(self._processes))
        self._stopping = True

    def _stop_all(self) -> None:
        """SIGTERM to every process; SIGKILL to those still running after the grace period."""
        self._stopping = True
        if self._sockets is not None:  # once the processes stop accepting, new connections are refused, not queued
            for sock in (self._sockets.http, self._sockets.dicom, self._sockets.dicom_tls):
                if sock is not None:
                    sock.close()
        running = [p.proc for p in self._processes if p.proc is not None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._archive.settings.shutdown_grace + KILL_AFTER_GRACE_S
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("process pid %d did not stop within the grace period; killing it", proc.pid)
                proc.kill()
                proc.wait()
        for process in self._processes:
            if process.proc is not None:
                self._exited(process)


def _how(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _metrics_of_dead(directory: str, pid: int) -> None:
    """Drop the live gauges of a process that is gone (its counters stay: a node's totals do not fall)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)


def _print(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()

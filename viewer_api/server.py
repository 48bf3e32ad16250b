"""``cloudfilm serve``: the HTTP API, the DICOM listener and background workers in one process
(one of several under :mod:`viewer_api.supervisor` when ``PROCESSES`` is more than one)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import uvicorn

from pacs.archive import Archive
from pacs.connection_board import ConnectionBoard
from pacs.fsck import housekeep
from viewer_api.app import create_app
from viewer_api.balanced_accept import BalancedAcceptor
from viewer_api.banner import StartUp, startup_banner

log = logging.getLogger("cloudfilm.serve")

READY_WAIT_S = 120.0  # the AI worker imports its plugins (torch) in the background: ~10 s on a busy machine


class BackgroundService(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wait_ready(self, timeout: float) -> bool:
        """Whether the service finished starting (and said so in the log) within ``timeout`` seconds."""
        ...


@runtime_checkable
class Draining(Protocol):
    """A service that stops taking new work first and gives the work in progress a grace period."""

    def stop_accepting(self) -> None: ...

    def stop(self, grace: float = 0.0) -> None: ...


@dataclass(frozen=True, slots=True)
class ListeningSockets:
    """The ports of one ``serve`` process, bound by the supervisor and shared by all its processes."""

    http: socket.socket
    dicom: socket.socket | None = None
    dicom_tls: socket.socket | None = None


@dataclass(frozen=True, slots=True)
class Role:
    """What one process of a supervised ``serve`` does: slot 0 also runs the AI worker (the stable-study
    detector and the jobs), so the plugins are loaded once per node, not once per process."""

    slot: int
    sockets: ListeningSockets
    ready: Callable[[], None]  # tells the supervisor this process serves
    board: ConnectionBoard | None = None  # the connections each sibling holds (balances accepting)

    @property
    def runs_jobs(self) -> bool:
        return self.slot == 0


def dicom_listener(archive: Archive, role: Role | None = None) -> BackgroundService | None:
    """The DIMSE listener on ``DICOM_PORT`` (issue 3), unless ``CLOUDFILM_DICOM_ENABLED=false``."""
    if not archive.settings.dicom_enabled:
        return None
    from functools import partial

    from ai_plugins.benchmarks.visibility import clinical_system_scope
    from pacs.dimse import DicomListener

    sockets = (role.sockets.dicom, role.sockets.dicom_tls) if role is not None else (None, None)
    return DicomListener(archive, scope=partial(clinical_system_scope, archive.engine), sockets=sockets,
                         board=role.board if role is not None else None)


def hl7_listener(archive: Archive, role: Role | None = None) -> BackgroundService | None:
    """The HL7 v2 MLLP listener (issues 13, 17) when ``CLOUDFILM_HL7_PORT`` is set: ORM/OMI orders feed
    the modality worklist; ORU results are matched to their study and stored by ``report_sink``. One
    per node: under ``--processes`` the process that runs the jobs listens (HL7 peers hold one long
    connection, so one process answers them all)."""
    if archive.settings.hl7_port is None or (role is not None and not role.runs_jobs):
        return None
    from functools import partial

    from ai_plugins.benchmarks.visibility import clinical_system_scope
    from pacs.hl7 import Hl7Listener
    from pacs.hl7.report_sink import report_sink

    return Hl7Listener(archive, report_sink=report_sink(archive),
                       scope=partial(clinical_system_scope, archive.engine))


def ai_worker(archive: Archive, role: Role | None = None) -> BackgroundService | None:
    """The AI worker: the stable-study detector, plugin jobs (issue 6) and benchmark evaluations (issue 7),
    unless ``CLOUDFILM_WORKER_CONCURRENCY=0`` (or this is not the supervised process that runs jobs)."""
    if role is not None and not role.runs_jobs:
        return None
    from ai_plugins.runner.worker import worker_service

    return worker_service(archive)


def node_registry(archive: Archive, role: Role | None = None) -> BackgroundService:
    """This process's row in the index (first: a node with another secret key stops the start here)."""
    from pacs.nodes import NodeRegistry

    return NodeRegistry(archive, f"serve:{archive.settings.http_port}")


#: Factories of the background services ``serve`` runs next to HTTP (DIMSE listener, AI worker...).
SERVICE_FACTORIES: list[Callable[[Archive, Role | None], BackgroundService | None]] = [
    node_registry, dicom_listener, hl7_listener, ai_worker]


class _Server(uvicorn.Server):
    """uvicorn's server, calling back once it listens (the DICOM listener already does) and when its
    shutdown begins (so the DICOM listener stops accepting at the same time). With a connection board
    (``serve --processes N``) it accepts from the shared sockets itself, balanced between the processes
    (:mod:`viewer_api.balanced_accept`)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None], on_shutdown: Callable[[], None],
                 stop_requested: threading.Event, board: ConnectionBoard | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._on_shutdown = on_shutdown
        self._stop_requested = stop_requested
        self._board = board
        self._acceptors: list[BalancedAcceptor] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self._board is None or not sockets:
            await super().startup(sockets=sockets)
        else:
            await super().startup(sockets=[])  # the lifespan, and no server of uvicorn's own

            def protocol() -> asyncio.Protocol:
                return self.config.http_protocol_class(  # type: ignore[call-arg]
                    config=self.config, server_state=self.server_state, app_state=self.lifespan.state)

            board = self._board
            self._acceptors = [BalancedAcceptor(sock, protocol, board, lambda: len(self.server_state.connections))
                               for sock in sockets]
            for acceptor in self._acceptors:
                acceptor.start()
        if self._stop_requested.is_set():  # SIGTERM came before uvicorn took over the signals
            self.should_exit = True
        if self.started and not self.should_exit:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        await asyncio.to_thread(self._on_shutdown)
        await super().shutdown(sockets=sockets)


def serve(archive: Archive, start: StartUp, role: Role | None = None) -> None:
    """Run until SIGINT/SIGTERM; stop everything cleanly (what started, if a start fails). In-flight
    requests and associations get ``SHUTDOWN_GRACE`` seconds to finish. Under a supervisor (``role``),
    serve on its sockets and tell it when ready instead of printing the banner."""
    settings = archive.settings
    if role is None:
        housekeep(archive)  # what a killed predecessor's writes left (the supervisor does it for its processes)
    services: list[BackgroundService] = []

    def ready() -> None:  # once every service has logged its start, so the banner ends the start-up
        for service in services:
            service.wait_ready(READY_WAIT_S)
        if role is None:
            _print(startup_banner(archive, start))
        else:
            role.ready()

    def stop_accepting() -> None:
        for service in services:
            if isinstance(service, Draining):
                service.stop_accepting()

    # uvicorn handles SIGTERM/SIGINT while it runs, then raises the signal again for the handler it
    # found: this one, which lets the services below drain and stop instead of the process dying there.
    stop_requested = threading.Event()
    previous = _handle_stop_signals(lambda: stop_requested.set())
    try:
        for factory in SERVICE_FACTORIES:
            if stop_requested.is_set():
                return
            service = factory(archive, role)
            if service is not None:
                service.start()
                services.append(service)
        config = uvicorn.Config(create_app(archive), host=settings.http_host, port=settings.http_port,
                                log_level="warning", access_log=False, proxy_headers=True, server_header=False,
                                timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
                                log_config=None)  # its loggers go through the archive's handler and format
        server = _Server(config, lambda: threading.Thread(target=ready, name="ready", daemon=True).start(),
                         stop_accepting, stop_requested, board=role.board if role is not None else None)
        server.run(sockets=[role.sockets.http] if role is not None else None)
    finally:
        for service in reversed(services):
            try:
                if isinstance(service, Draining):
                    service.stop(settings.shutdown_grace)
                else:
                    service.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", service.name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _handle_stop_signals(on_signal: Callable[[], None]) -> dict[int, Any]:
    """Call ``on_signal`` on SIGTERM and SIGINT (main thread only); the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, lambda _sig, _frame: on_signal()) for sig in (signal.SIGTERM, signal.SIGINT)}


def _print(text: str) -> None:
    sys.stderr.write(text + "\n")  # beside the log lines, after them
    sys.stderr.flush()

"""``cloudfilm serve``: the HTTP API, the DICOM listener and background workers in one process."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import Protocol

import uvicorn

from pacs.archive import Archive
from pacs.fsck import housekeep
from viewer_api.app import create_app
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


def dicom_listener(archive: Archive) -> BackgroundService | None:
    """The DIMSE listener on ``DICOM_PORT`` (issue 3), unless ``CLOUDFILM_DICOM_ENABLED=false``."""
    if not archive.settings.dicom_enabled:
        return None
    from functools import partial

    from ai_plugins.benchmarks.visibility import clinical_system_scope
    from pacs.dimse import DicomListener

    return DicomListener(archive, scope=partial(clinical_system_scope, archive.engine))


def hl7_listener(archive: Archive) -> BackgroundService | None:
    """The HL7 v2 MLLP listener (issues 13, 17) when ``CLOUDFILM_HL7_PORT`` is set: ORM/OMI orders feed
    the modality worklist; ORU results are matched to their study and stored by ``report_sink``."""
    if archive.settings.hl7_port is None:
        return None
    from functools import partial

    from ai_plugins.benchmarks.visibility import clinical_system_scope
    from pacs.hl7 import Hl7Listener
    from pacs.hl7.report_sink import report_sink

    return Hl7Listener(archive, report_sink=report_sink(archive),
                       scope=partial(clinical_system_scope, archive.engine))


def ai_worker(archive: Archive) -> BackgroundService | None:
    """The AI worker: the stable-study detector, plugin jobs (issue 6) and benchmark evaluations (issue 7),
    unless ``CLOUDFILM_WORKER_CONCURRENCY=0``."""
    from ai_plugins.runner.worker import worker_service

    return worker_service(archive)


def node_registry(archive: Archive) -> BackgroundService:
    """This node's row in the index (first: a node with another secret key stops the start here)."""
    from pacs.nodes import NodeRegistry

    return NodeRegistry(archive, f"serve:{archive.settings.http_port}")


#: Factories of the background services ``serve`` runs next to HTTP (DIMSE listener, AI worker...).
SERVICE_FACTORIES: list[Callable[[Archive], BackgroundService | None]] = [node_registry, dicom_listener,
                                                                          hl7_listener, ai_worker]


class _Server(uvicorn.Server):
    """uvicorn's server, calling back once it listens (the DICOM listener already does)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_started()


def serve(archive: Archive, start: StartUp) -> None:
    """Run until SIGINT/SIGTERM; stop everything cleanly (what started, if a start fails)."""
    settings = archive.settings
    housekeep(archive)  # what a killed predecessor's writes left
    services: list[BackgroundService] = []

    def banner() -> None:  # once every service has logged its start, so the banner ends the start-up
        for service in services:
            service.wait_ready(READY_WAIT_S)
        _print(startup_banner(archive, start))

    try:
        for factory in SERVICE_FACTORIES:
            service = factory(archive)
            if service is not None:
                service.start()
                services.append(service)
        config = uvicorn.Config(create_app(archive), host=settings.http_host, port=settings.http_port,
                                log_level="warning", access_log=False, proxy_headers=True, server_header=False,
                                log_config=None)  # its loggers go through the archive's handler and format
        _Server(config, lambda: threading.Thread(target=banner, name="banner", daemon=True).start()).run()
    finally:
        for service in reversed(services):
            try:
                service.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", service.name)


def _print(text: str) -> None:
    sys.stderr.write(text + "\n")  # beside the log lines, after them
    sys.stderr.flush()


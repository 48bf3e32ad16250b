"""``cloudfilm serve``: the HTTP API, the DICOM listener and background workers in one process."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Protocol

import uvicorn

from pacs.archive import Archive
from pacs.fsck import housekeep
from viewer_api.app import create_app

log = logging.getLogger("cloudfilm.serve")


class BackgroundService(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def dicom_listener(archive: Archive) -> BackgroundService | None:
    """The DIMSE listener on ``DICOM_PORT`` (issue 3), unless ``CLOUDFILM_DICOM_ENABLED=false``."""
    if not archive.settings.dicom_enabled:
        return None
    from functools import partial

    from ai_plugins.benchmarks.visibility import clinical_system_scope
    from pacs.dimse import DicomListener

    return DicomListener(archive, scope=partial(clinical_system_scope, archive.engine))


def ai_worker(archive: Archive) -> BackgroundService | None:
    """The AI worker: the stable-study detector, plugin jobs (issue 6) and benchmark evaluations (issue 7),
    unless ``CLOUDFILM_WORKER_CONCURRENCY=0``."""
    from ai_plugins.runner.worker import worker_service

    return worker_service(archive)


#: Factories of the background services ``serve`` runs next to HTTP (DIMSE listener, AI worker...).
SERVICE_FACTORIES: list[Callable[[Archive], BackgroundService | None]] = [dicom_listener, ai_worker]


def serve(archive: Archive) -> None:
    """Run until SIGINT/SIGTERM; stop everything cleanly."""
    settings = archive.settings
    housekeep(archive)  # what a killed predecessor's writes left
    services: list[BackgroundService] = []
    for factory in SERVICE_FACTORIES:
        service = factory(archive)
        if service is not None:
            service.start()
            services.append(service)
    app = create_app(archive)
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                            access_log=False, proxy_headers=True, server_header=False)
    server = uvicorn.Server(config)
    log.info("HTTP listening on http://%s:%d", settings.http_host, settings.http_port)
    log.info("index: %s", archive.engine.url.render_as_string(hide_password=True))
    log.info("objects: %s", archive.store.url)
    try:
        server.run()
    finally:
        for service in reversed(services):
            try:
                service.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", service.name)


def install_signal_logging() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)

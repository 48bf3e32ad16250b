"""Liveness, readiness and Prometheus metrics.

Readiness means the archive can take what modalities send: the index database answers and the
object store takes a write now (``ObjectStore.probe_write``: free space on a filesystem, a small
object written and deleted on S3), so that a load balancer stops routing intake to a node whose
disk is full or whose bucket refuses writes.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ai_plugins.review.watch import WatchCollector
from pacs.errors import StorageUnavailable
from pacs.index import db
from pacs.observability import ArchiveCollector
from viewer_api.auth.access import INSTALLATION_ADMIN, OPEN
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["health"], route_class=DeclaredRoute)


@router.get("/healthz", summary="The process is alive", dependencies=[Depends(OPEN)])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The index database is reachable and the object store takes writes",
            dependencies=[Depends(OPEN)])
async def readyz(request: Request) -> Response:
    archive = archive_of(request)
    checks: dict[str, str] = {}

    def check() -> None:
        for name, probe in (("database", lambda: db.ping(archive.engine)), ("storage", archive.store.probe_write)):
            try:
                probe()
                checks[name] = "ok"
            except StorageUnavailable as exc:
                checks[name] = str(exc)

    await asyncio.to_thread(check)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False,
            dependencies=[Depends(INSTALLATION_ADMIN)])
async def metrics(request: Request) -> Response:
    archive = archive_of(request)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArchiveCollector(archive))
    registry.register(WatchCollector(archive))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one of several serve processes: the node's sums
        events = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(events)
    else:
        events = REGISTRY
    scraped = await asyncio.to_thread(lambda: generate_latest(events) + generate_latest(registry))
    return Response(scraped, media_type=CONTENT_TYPE_LATEST)

"""The edge job API (issue 15): edge workers lease clinical plugin jobs, fetch the admitted packages
they run, and send their findings back.

``POST /api/edge/jobs/lease`` (a job, or ``{"job": null}``), then per leased job
``…/{id}/heartbeat``, ``…/{id}/complete`` (findings JSON; the archive writes and stores the SR/SEG),
``…/{id}/fail`` and ``…/{id}/release``. ``GET /api/edge/packages/{sha256}``: the file of an admitted
algorithm package enabled for clinical studies (404 for any other), audited, with its SHA-256 as
the strong ``ETag`` and in ``Repr-Digest`` (RFC 9530). Only an edge worker's token
(``cloudfilm edge-workers add``) reaches them. 409: the lease is no longer this attempt's (it
expired and the job went to another worker, or the job ended): nothing was written. 422: the
findings cannot be stored; the attempt was recorded as failed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from ai_plugins.edge.protocol import (
    SHA256,
    CompleteIn,
    FailIn,
    HeartbeatIn,
    LeaseIn,
    LeaseOut,
    OutcomeOut,
    ReleaseIn,
)
from ai_plugins.edge.service import EdgeJobs, EdgeResultRefused
from viewer_api.auth.access import EdgePackageReader, EdgeWorker
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.routes.jobs import plugin_service

router = APIRouter(prefix="/api/edge", tags=["edge workers"], route_class=DeclaredRoute)
CHUNK = 1 << 20


def edge_jobs(request: Request) -> EdgeJobs:
    service: EdgeJobs | None = getattr(request.app.state, "edge_jobs", None)
    if service is None:
        service = EdgeJobs(archive_of(request), plugin_service(request).registry)
        request.app.state.edge_jobs = service
    return service


def _name(principal: EdgeWorker) -> str:
    assert principal.edge is not None  # the rule admits edge workers only
    return principal.edge


@router.post("/jobs/lease", response_model=LeaseOut, summary="Lease a clinical plugin job (edge workers)")
def lease(principal: EdgeWorker, body: LeaseIn, service: EdgeJobs = Depends(edge_jobs)) -> LeaseOut:
    """One due job of a plugin the worker offers (or of an admitted package, when it runs packages),
    with a token that reads its study over DICOMweb."""
    return LeaseOut(job=service.lease(_name(principal), body))


@router.post("/jobs/{job_id}/heartbeat", status_code=204, summary="Extend a job's lease (edge workers)")
def heartbeat(principal: EdgeWorker, job_id: int, body: HeartbeatIn, service: EdgeJobs = Depends(edge_jobs)) -> None:
    service.heartbeat(_name(principal), job_id, body)


@router.post("/jobs/{job_id}/complete", response_model=OutcomeOut, summary="Send a job's findings (edge workers)",
             responses={409: {"description": "the lease is not this attempt's"},
                        422: {"model": OutcomeOut, "description": "the findings cannot be stored"}})  # fmt: skip
def complete(principal: EdgeWorker, job_id: int, body: CompleteIn,
             service: EdgeJobs = Depends(edge_jobs)) -> OutcomeOut | JSONResponse:  # fmt: skip
    try:
        return service.complete(_name(principal), job_id, body)
    except EdgeResultRefused as exc:
        return JSONResponse(OutcomeOut(status=exc.status.value, error=str(exc)).model_dump(), status_code=422)


@router.post("/jobs/{job_id}/fail", response_model=OutcomeOut, summary="Report a failed attempt (edge workers)")
def fail(principal: EdgeWorker, job_id: int, body: FailIn, service: EdgeJobs = Depends(edge_jobs)) -> OutcomeOut:
    return service.fail(_name(principal), job_id, body)


@router.post("/jobs/{job_id}/release", response_model=OutcomeOut, summary="Hand a job back unrun (edge workers)")
def release(principal: EdgeWorker, job_id: int, body: ReleaseIn, service: EdgeJobs = Depends(edge_jobs)) -> OutcomeOut:
    return service.release(_name(principal), job_id, body)


@router.get("/packages/{sha256}", response_class=StreamingResponse,
            summary="An admitted package's file (edge workers)",
            responses={200: {"content": {"application/octet-stream": {}}}, 304: {"description": "not modified"},
                       404: {"description": "no admitted, enabled package has that SHA-256"}})  # fmt: skip
def package_file(principal: EdgePackageReader, request: Request, sha256: Annotated[str, Path(pattern=SHA256)],
                 service: EdgeJobs = Depends(edge_jobs)) -> Response:  # fmt: skip
    """The package file itself, byte for byte as uploaded; the edge worker installs it only if it hashes
    to ``sha256``. A file's contents never change under its digest, so the ETag is the digest."""
    package = service.downloadable(sha256)
    etag = f'"{package.digest}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable",
               "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(package.digest)).decode()}:"}  # fmt: skip
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    fh = service.package_file(package)
    name = package.filename.replace('"', "") or f"{package.name}-{package.version}.zip"
    return StreamingResponse(_chunks(fh), media_type="application/octet-stream", headers={
        **headers, "Content-Length": str(package.size), "Content-Disposition": f'attachment; filename="{name}"'})


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CHUNK):
            yield chunk

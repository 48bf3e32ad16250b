"""The edge job API (issue 15): edge workers lease clinical plugin jobs and send their findings back.

``POST /api/edge/jobs/lease`` (a job, or ``{"job": null}``), then per leased job
``…/{id}/heartbeat``, ``…/{id}/complete`` (findings JSON; the archive writes and stores the SR/SEG),
``…/{id}/fail`` and ``…/{id}/release``. Only an edge worker's token (``cloudfilm edge-workers add``)
reaches them. 409: the lease is no longer this attempt's (it expired and the job went to another
worker, or the job ended): nothing was written. 422: the findings cannot be stored; the attempt was
recorded as failed.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ai_plugins.edge.protocol import CompleteIn, FailIn, HeartbeatIn, LeaseIn, LeaseOut, OutcomeOut, ReleaseIn
from ai_plugins.edge.service import EdgeJobs, EdgeResultRefused
from viewer_api.auth.access import EdgeWorker
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.routes.jobs import plugin_service

router = APIRouter(prefix="/api/edge/jobs", tags=["edge workers"], route_class=DeclaredRoute)


def edge_jobs(request: Request) -> EdgeJobs:
    service: EdgeJobs | None = getattr(request.app.state, "edge_jobs", None)
    if service is None:
        service = EdgeJobs(archive_of(request), plugin_service(request).registry)
        request.app.state.edge_jobs = service
    return service


def _name(principal: EdgeWorker) -> str:
    assert principal.edge is not None  # the rule admits edge workers only
    return principal.edge


@router.post("/lease", response_model=LeaseOut, summary="Lease a clinical plugin job (edge workers)")
def lease(principal: EdgeWorker, body: LeaseIn, service: EdgeJobs = Depends(edge_jobs)) -> LeaseOut:
    """One due job of a plugin the worker offers, with a token that reads its study over DICOMweb."""
    return LeaseOut(job=service.lease(_name(principal), body))


@router.post("/{job_id}/heartbeat", status_code=204, summary="Extend a job's lease (edge workers)")
def heartbeat(principal: EdgeWorker, job_id: int, body: HeartbeatIn, service: EdgeJobs = Depends(edge_jobs)) -> None:
    service.heartbeat(_name(principal), job_id, body)


@router.post("/{job_id}/complete", response_model=OutcomeOut, summary="Send a job's findings (edge workers)",
             responses={409: {"description": "the lease is not this attempt's"},
                        422: {"model": OutcomeOut, "description": "the findings cannot be stored"}})  # fmt: skip
def complete(principal: EdgeWorker, job_id: int, body: CompleteIn,
             service: EdgeJobs = Depends(edge_jobs)) -> OutcomeOut | JSONResponse:  # fmt: skip
    try:
        return service.complete(_name(principal), job_id, body)
    except EdgeResultRefused as exc:
        return JSONResponse(OutcomeOut(status=exc.status.value, error=str(exc)).model_dump(), status_code=422)


@router.post("/{job_id}/fail", response_model=OutcomeOut, summary="Report a failed attempt (edge workers)")
def fail(principal: EdgeWorker, job_id: int, body: FailIn, service: EdgeJobs = Depends(edge_jobs)) -> OutcomeOut:
    return service.fail(_name(principal), job_id, body)


@router.post("/{job_id}/release", response_model=OutcomeOut, summary="Hand a job back unrun (edge workers)")
def release(principal: EdgeWorker, job_id: int, body: ReleaseIn, service: EdgeJobs = Depends(edge_jobs)) -> OutcomeOut:
    return service.release(_name(principal), job_id, body)

"""Plugin jobs over HTTP: ``GET /api/jobs`` (status, progress, timings, errors) and one job by id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from ai_plugins.runner.service import PluginService
from pacs.jobs import JobStatus, JobView
from viewer_api.auth.access import AiReader
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["jobs"], route_class=DeclaredRoute)


def plugin_service(request: Request) -> PluginService:
    """The app's plugin service (tests may put one with extra plugins in ``app.state.plugin_service``)."""
    service: PluginService | None = getattr(request.app.state, "plugin_service", None)
    if service is None:
        service = PluginService(archive_of(request))
        request.app.state.plugin_service = service
    return service


class JobOut(BaseModel):
    id: int
    plugin: str
    plugin_version: str
    study_uid: str
    generation: int
    status: JobStatus
    attempts: int
    max_attempts: int
    progress: float
    progress_message: str
    error: str | None
    requested_by: str
    timeout_s: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    wait_s: float | None
    run_s: float | None
    result: dict[str, Any]


def job_out(view: JobView) -> JobOut:
    return JobOut(
        id=view.id, plugin=view.target, plugin_version=view.target_version, study_uid=view.study_uid,
        generation=view.generation, status=view.status, attempts=view.attempts, max_attempts=view.max_attempts,
        progress=view.progress, progress_message=view.progress_message, error=view.error or None,
        requested_by=view.requested_by, timeout_s=view.timeout_s, created_at=view.created_at,
        started_at=view.started_at, finished_at=view.finished_at,
        next_attempt_at=view.run_after if view.status in (JobStatus.QUEUED, JobStatus.RETRYING) else None,
        wait_s=view.wait_s, run_s=view.run_s, result=view.result,
    )  # fmt: skip


@router.get("/api/jobs", response_model=list[JobOut], summary="Plugin jobs")
def list_jobs(
    principal: AiReader,
    status: list[JobStatus] = Query(default_factory=list, description="repeat to combine"),
    study: str | None = Query(None, description="StudyInstanceUID"),
    plugin: str | None = Query(None, description="plugin name"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    service: PluginService = Depends(plugin_service),
) -> list[JobOut]:
    """Jobs, newest first; a vendor sees only the jobs of its own plugins."""
    own = None
    hidden: frozenset[str] = frozenset()
    if principal.role == "vendor":
        own = sorted({p.name for p in service.plugins(registered_by=principal.username)})
        hidden = principal.hidden_study_uids  # benchmark test cases: no per-case output of them
    jobs = service.jobs(statuses=status, study_uid=study, plugin=plugin, plugins=own, hidden_studies=hidden,
                        limit=limit, offset=offset, partition=principal.home_partition)  # fmt: skip
    return [job_out(j) for j in jobs]


@router.get("/api/jobs/{job_id}", response_model=JobOut, summary="One plugin job")
def read_job(
    principal: AiReader,
    job_id: int,
    service: PluginService = Depends(plugin_service),
) -> JobOut:
    job = service.job(job_id, principal.home_partition)
    if principal.role == "vendor" and (job.target not in {
        p.name for p in service.plugins(registered_by=principal.username)
    } or job.study_uid in principal.hidden_study_uids):
        raise HTTPException(404, "no such job")  # another vendor's job does not exist for this one
    return job_out(job)

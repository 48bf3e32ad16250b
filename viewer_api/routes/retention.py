"""Retention over HTTP (admins): ``GET /api/retention/plan`` (what a run would do now, changing
nothing), ``GET /api/retention/holds``, and a study's legal hold set with ``PUT`` and cleared with
``DELETE /api/studies/{study}/hold`` (each audited as ``legal-hold`` by the service). Rules and tiers
are configuration (the ``[retention]`` table), not API objects: :mod:`pacs.retention.rules`."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pacs.index.db import utcnow
from pacs.retention import holds
from pacs.retention.plan import StepKind, plan
from viewer_api.auth.access import Admin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["retention"], route_class=DeclaredRoute)


class StepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: StepKind = Field(description="move, mark, wait, delete, unmark or protected")
    study_uid: str
    rule: str
    detail: str
    patient_id: str
    study_date: str
    instances: int
    size_bytes: int
    tier: str | None
    delete_after: datetime | None


class HoldIn(BaseModel):
    reason: str = Field("", max_length=256, description="why, e.g. a case number")


class HoldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    study_uid: str
    reason: str
    held_by: str
    created_at: datetime


def _source(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("/api/retention/plan", response_model=list[StepOut], summary="What a retention run would do now")
async def read_plan(admin: Admin, request: Request) -> list[StepOut]:
    """Every step in study order, including the studies a legal hold or a report draft protects: those of
    the caller's partition (its rules on its studies)."""
    archive = archive_of(request)
    home = archive.partitions.by_id(admin.home_partition)
    if home is None:
        return []
    steps = await run_in_threadpool(plan, archive.engine, archive.settings.retention_rules, utcnow(),
                                    {home.slug: home.id})  # fmt: skip
    return [StepOut.model_validate(s) for s in steps]


@router.get("/api/retention/holds", response_model=list[HoldOut], summary="Studies under a legal hold")
async def list_holds(admin: Admin, request: Request) -> list[HoldOut]:
    found = await run_in_threadpool(holds.list_holds, archive_of(request).engine, admin.home_partition)
    return [HoldOut.model_validate(h) for h in found]


@router.put("/api/studies/{study}/hold", response_model=HoldOut, summary="Put a study under a legal hold")
async def set_hold(admin: Admin, study: str, body: HoldIn, request: Request) -> HoldOut:
    """No retention rule moves or deletes the study until the hold is cleared (the study need not be here yet)."""
    hold = await run_in_threadpool(lambda: holds.set_hold(archive_of(request).engine, admin, study, body.reason,
                                                          source=_source(request),
                                                          partition=admin.home_partition))  # fmt: skip
    return HoldOut.model_validate(hold)


@router.delete("/api/studies/{study}/hold", status_code=204, summary="Lift a study's legal hold")
async def clear_hold(admin: Admin, study: str, request: Request) -> Response:
    await run_in_threadpool(lambda: holds.clear_hold(archive_of(request).engine, admin, study,
                                                     source=_source(request),
                                                     partition=admin.home_partition))  # fmt: skip
    return Response(status_code=204)

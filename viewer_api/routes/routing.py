"""Routing over HTTP (admins): ``GET /api/routing`` (each destination's queue and last error, and
the rules), ``GET /api/routing/forwards`` (the forwarding log), ``POST
/api/routing/forwards/{id}/resend`` and ``POST /api/routing/destinations/{name}/resend`` (every
dead letter of a destination). Rules and destinations are configuration (the ``[routing]`` table),
not API objects: :mod:`pacs.routing.rules`."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pacs.routing import dispatch, status
from pacs.routing.dispatch import ForwardStatus
from viewer_api.auth.access import RoutingAdmin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["routing"], route_class=DeclaredRoute)


class DestinationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    kind: str = Field(description="dicom or dicomweb; empty when no longer configured")
    peer: str = Field(description="AE@host:port or the DICOMweb base URL")
    configured: bool
    concurrency: int
    pending: int
    sent: int
    dead: int
    active_jobs: int
    last_error: str
    last_error_at: datetime | None
    last_status_code: int | None = Field(description="the peer's DIMSE status or HTTP code of the last failure")
    last_sent_at: datetime | None


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    on: str
    to: list[str]
    match: dict[str, str | list[str]]
    deidentify: bool
    partition: str = "default"  # the partition whose feed the rule follows
    last_seq: int | None = Field(None, description="the newest change feed Sequence the rule has read; null until "
                                                   "a worker has seen the rule")


class RoutingOut(BaseModel):
    destinations: list[DestinationOut]
    rules: list[RuleOut]


class ForwardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    rule: str
    destination: str
    sequence: int = Field(description="the change feed event that made it")
    study_uid: str
    series_uid: str
    sop_uid: str
    status: ForwardStatus
    attempts: int
    status_code: int | None
    last_error: str
    created_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None


class Resent(BaseModel):
    resent: int


@router.get("/api/routing", response_model=RoutingOut, summary="Routing destinations and rules")
async def read_routing(admin: RoutingAdmin, request: Request) -> RoutingOut:
    """Each destination's queue (pending, sent, dead, jobs active) and its last error; the rules. All of
    them the caller's partition's: its rules, and its forwards in each queue."""
    archive = archive_of(request)
    settings = archive.settings
    home = archive.partitions.by_id(admin.home_partition)
    states = await run_in_threadpool(status.destination_states, archive.engine, settings.routing_destinations,
                                     admin.home_partition)  # fmt: skip
    cursors = await run_in_threadpool(status.rule_cursors, archive.engine)
    return RoutingOut(destinations=[DestinationOut.model_validate(s) for s in states],
                      rules=[RuleOut.model_validate(r.model_dump() | {"last_seq": cursors.get(r.name)})
                             for r in settings.routing_rules
                             if home is not None and r.partition == home.slug])  # fmt: skip


@router.get("/api/routing/forwards", response_model=list[ForwardOut], summary="Forwarding log")
async def list_forwards(
    admin: RoutingAdmin,
    request: Request,
    destination: str | None = Query(None),
    status_: list[ForwardStatus] = Query(default_factory=list, alias="status", description="pending, sent, dead"),
    study: str | None = Query(None, description="StudyInstanceUID"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[ForwardOut]:
    """Newest first: each instance's status, attempts, the peer's last status and the last error."""
    views = await run_in_threadpool(lambda: status.list_forwards(
        archive_of(request).engine, destination=destination, statuses=status_, study_uid=study, limit=limit,
        offset=offset, partition=admin.home_partition))  # fmt: skip
    return [ForwardOut.model_validate(v) for v in views]


@router.post("/api/routing/forwards/{forward_id}/resend", response_model=Resent, status_code=202,
             summary="Send a sent or dead-lettered instance again")  # fmt: skip
async def resend_forward(admin: RoutingAdmin, forward_id: int, request: Request) -> Resent:
    """The forward becomes pending again with fresh attempts (409 while it is still pending)."""
    archive = archive_of(request)
    count = await run_in_threadpool(lambda: dispatch.resend(
        archive.engine, archive.settings.routing_destinations, forward_id=forward_id,
        partition=admin.home_partition))  # fmt: skip
    return Resent(resent=count)


@router.post("/api/routing/destinations/{name}/resend", response_model=Resent, status_code=202,
             summary="Send every dead letter of a destination again")  # fmt: skip
async def resend_dead(admin: RoutingAdmin, name: str, request: Request) -> Resent:
    archive = archive_of(request)
    count = await run_in_threadpool(lambda: dispatch.resend(
        archive.engine, archive.settings.routing_destinations, destination=name,
        partition=admin.home_partition))  # fmt: skip
    return Resent(resent=count)

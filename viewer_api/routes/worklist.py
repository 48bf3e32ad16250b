"""The modality worklist over HTTP (admins): ``POST /api/worklist`` schedules (or updates) an order,
``GET /api/worklist`` lists entries, ``GET/DELETE /api/worklist/{accession}`` reads or cancels one.
The same service takes ORM/OMI orders over HL7 (:mod:`pacs.hl7.orders`); modalities read it by
Modality Worklist C-FIND. Each route works in the caller's partition (its orders only)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pacs.worklist import orders
from pacs.worklist.orders import Order, StepStatus
from viewer_api.auth.access import WorklistAdmin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["worklist"], route_class=DeclaredRoute)


class OrderIn(BaseModel):
    accession_number: str = Field(description="the order's key: a second POST with it updates the entry")
    patient_id: str = ""
    issuer: str = ""
    patient_name: str = Field("", description="DICOM PN: Family^Given^Middle^Prefix^Suffix")
    birth_date: str = Field("", description="YYYYMMDD")
    sex: str = Field("", description="M, F or O")
    requested_procedure_id: str = ""
    requested_procedure: str = Field("", description="the requested procedure's description")
    step_id: str = Field("", description="Scheduled Procedure Step ID")
    modality: str = ""
    station_aet: str = Field("", description="Scheduled Station AE Title: the modality that performs it")
    start_date: str = Field("", description="YYYYMMDD")
    start_time: str = Field("", description="HHMMSS")
    study_uid: str = Field("", description="Study Instance UID; assigned by the archive when empty")
    referring_physician: str = ""


class PerformedOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sop_uid: str
    status: str
    station_aet: str
    start_date: str
    start_time: str
    end_date: str
    end_time: str
    updated_at: datetime


class WorklistEntryOut(OrderIn):
    model_config = ConfigDict(from_attributes=True)

    id: int
    placer_order: str
    filler_order: str
    status: str = Field(description="SCHEDULED, STARTED, COMPLETED, DISCONTINUED or CANCELED")
    source: str = Field(description="hl7 or api")
    created_at: datetime
    updated_at: datetime
    performed: list[PerformedOut] = Field(description="the MPPS the modality reported")


@router.post("/api/worklist", response_model=WorklistEntryOut, summary="Schedule or update a worklist entry")
async def schedule(admin: WorklistAdmin, body: OrderIn, request: Request, response: Response) -> WorklistEntryOut:
    """201 when the accession number is new, 200 when its entry was updated (a cancelled one is scheduled again)."""
    entry, created = await run_in_threadpool(orders.schedule, archive_of(request).engine, Order(**body.model_dump()),
                                             source="api", partition=admin.home_partition)
    response.status_code = 201 if created else 200
    return WorklistEntryOut.model_validate(asdict(entry))


@router.get("/api/worklist", response_model=list[WorklistEntryOut], summary="Worklist entries")
async def list_worklist(
    admin: WorklistAdmin,
    request: Request,
    status: list[StepStatus] = Query(default_factory=list, description="repeat; empty: every status"),
    station: str | None = Query(None, description="Scheduled Station AE Title"),
    date: str | None = Query(None, description="scheduled start date, YYYYMMDD"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[WorklistEntryOut]:
    entries = await run_in_threadpool(lambda: orders.list_entries(
        archive_of(request).engine, statuses=[s.value for s in status], station_aet=station, start_date=date,
        limit=limit, offset=offset, partition=admin.home_partition))
    return [WorklistEntryOut.model_validate(asdict(e)) for e in entries]


@router.get("/api/worklist/{accession}", response_model=WorklistEntryOut, summary="One worklist entry")
async def read_entry(admin: WorklistAdmin, accession: str, request: Request) -> WorklistEntryOut:
    entry = await run_in_threadpool(lambda: orders.get(archive_of(request).engine, accession,
                                                       partition=admin.home_partition))
    return WorklistEntryOut.model_validate(asdict(entry))


@router.delete("/api/worklist/{accession}", response_model=WorklistEntryOut, summary="Cancel a worklist entry")
async def cancel_entry(admin: WorklistAdmin, accession: str, request: Request) -> WorklistEntryOut:
    """The entry leaves the worklist (status CANCELED) and stays readable, so a late MPPS still finds it."""
    entry = await run_in_threadpool(lambda: orders.cancel(archive_of(request).engine, accession,
                                                          partition=admin.home_partition))
    return WorklistEntryOut.model_validate(asdict(entry))

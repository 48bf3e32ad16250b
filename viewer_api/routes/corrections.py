"""Corrections and rejections over HTTP (admins).

``POST /api/corrections`` makes one correction (``update-patient``, ``update-study``,
``merge-patients``, ``move-study``); ``GET /api/corrections`` and ``GET /api/corrections/{id}`` read
them with the values before and after and the versions they kept; ``POST /api/corrections/{id}/revert``
puts back what a correction replaced (itself a correction). ``GET /api/rejections`` lists the
instances IOCM rejection notes withheld. The service (:mod:`pacs.corrections.service`) records each
change in the audit trail with its values before and after.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pacs import rejection
from pacs.corrections import service
from pacs.corrections.types import Actor, CorrectionView, PatientChanges, PatientKey, StudyChanges
from pacs.errors import InvalidQuery
from viewer_api.auth.access import Admin, RejectionReader
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["corrections"], route_class=DeclaredRoute)


class PatientIn(BaseModel):
    patient_id: str
    issuer: str = ""


class CorrectionIn(BaseModel):
    kind: Literal["update-patient", "update-study", "merge-patients", "move-study"]
    patient: PatientIn | None = Field(None, description="update-patient: the patient; merge-patients: the one "
                                                       "merged away")
    study_uid: str | None = Field(None, description="update-study, move-study: the study")
    target: PatientIn | None = Field(None, description="merge-patients, move-study: the patient to file under")
    patient_name: str | None = Field(None, description="DICOM PN; null leaves it, \"\" empties it")
    patient_id: str | None = None
    issuer: str | None = None
    birth_date: str | None = Field(None, description="YYYYMMDD")
    sex: str | None = Field(None, description="M, F or O")
    accession_number: str | None = None
    study_description: str | None = None


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sop_uid: str
    version: int
    study_uid: str
    series_uid: str
    sha256: str
    size_bytes: int
    created_at: datetime


class CorrectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    source: str
    actor: str
    target: str
    reverts_id: int | None
    before: dict[str, Any]
    after: dict[str, Any]
    instance_count: int
    study_uids: list[str]
    created_at: datetime
    versions: list[VersionOut] = Field(default_factory=list, description="the objects it replaced (one read only)")


class RejectedOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sop_uid: str
    study_uid: str
    series_uid: str
    code_value: str
    code_meaning: str
    note_uid: str
    rejected_at: datetime
    delete_after: datetime | None
    deleted_at: datetime | None


def _correct(request: Request, actor: Actor, body: CorrectionIn, partition: int) -> CorrectionView:
    archive = archive_of(request)
    if body.kind == "update-patient":
        if body.patient is None:
            raise InvalidQuery("update-patient needs the patient")
        changes = PatientChanges(body.patient_name, body.patient_id, body.issuer, body.birth_date, body.sex)
        return service.update_patient(archive, actor, PatientKey(**body.patient.model_dump()), changes,
                                      partition=partition)
    if body.kind == "update-study":
        if not body.study_uid:
            raise InvalidQuery("update-study needs the study_uid")
        return service.update_study(archive, actor, body.study_uid,
                                    StudyChanges(body.accession_number, body.study_description), partition=partition)
    if body.target is None:
        raise InvalidQuery(f"{body.kind} needs the target patient")
    target = PatientKey(**body.target.model_dump())
    if body.kind == "merge-patients":
        if body.patient is None:
            raise InvalidQuery("merge-patients needs the patient merged away")
        return service.merge_patients(archive, actor, PatientKey(**body.patient.model_dump()), target,
                                      partition=partition)
    if not body.study_uid:
        raise InvalidQuery("move-study needs the study_uid")
    return service.move_study(archive, actor, body.study_uid, target, partition=partition)


@router.post("/api/corrections", response_model=CorrectionOut, status_code=201, summary="Make a correction")
async def correct(admin: Admin, body: CorrectionIn, request: Request) -> CorrectionOut:
    """Rewrites the stored objects with the new values (originals kept as versions); 409 when nothing changes."""
    done = await run_in_threadpool(_correct, request, Actor.of(admin), body, admin.home_partition)
    return CorrectionOut.model_validate(asdict(done))


@router.get("/api/corrections", response_model=list[CorrectionOut], summary="Corrections, newest first")
async def list_corrections(
    admin: Admin, request: Request,
    study: str | None = Query(None, description="only those that touched this Study Instance UID"),
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
) -> list[CorrectionOut]:
    found = await run_in_threadpool(lambda: service.list_corrections(
        archive_of(request).engine, study_uid=study, limit=limit, offset=offset, partition=admin.home_partition))
    return [CorrectionOut.model_validate(asdict(c)) for c in found]


@router.get("/api/corrections/{correction_id}", response_model=CorrectionOut, summary="One correction")
async def read_correction(admin: Admin, correction_id: int, request: Request) -> CorrectionOut:
    engine = archive_of(request).engine
    partition = admin.home_partition
    done = await run_in_threadpool(lambda: service.get_correction(engine, correction_id, partition=partition))
    versions = await run_in_threadpool(lambda: service.versions_of(engine, correction_id=correction_id,
                                                                   partition=partition))
    return CorrectionOut.model_validate(asdict(done) | {"versions": [asdict(v) for v in versions]})


@router.post("/api/corrections/{correction_id}/revert", response_model=CorrectionOut, status_code=201,
             summary="Revert a correction")
async def revert_correction(admin: Admin, correction_id: int, request: Request) -> CorrectionOut:
    """Puts back the objects the correction replaced, as a new correction."""
    done = await run_in_threadpool(lambda: service.revert(archive_of(request), Actor.of(admin), correction_id,
                                                          partition=admin.home_partition))
    return CorrectionOut.model_validate(asdict(done))


@router.get("/api/rejections", response_model=list[RejectedOut], summary="Instances withheld by rejection notes")
async def list_rejections(
    reader: RejectionReader, request: Request,
    study: str | None = Query(None, description="Study Instance UID"),
    include_deleted: bool = Query(False, description="also those deleted after the grace period"),
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
) -> list[RejectedOut]:
    found = await run_in_threadpool(lambda: rejection.list_rejected(
        archive_of(request).engine, study_uid=study, include_deleted=include_deleted, limit=limit, offset=offset,
        partition=reader.home_partition))
    return [RejectedOut.model_validate(asdict(r)) for r in found]

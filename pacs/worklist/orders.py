"""Worklist orders: create or update, cancel, read and list (the one service behind the HL7 order
feed, the admin API and the Modality Worklist C-FIND).

An order belongs to one partition (hospital, :mod:`pacs.partitions`) and is keyed there by its
Accession Number (two hospitals may use the same one): a second order with the same one updates the entry
(HL7 ``XO``/``SC``, or the same ``NW`` sent again), and a cancel marks it ``CANCELED`` (it leaves
the worklist but stays, so a late MPPS still finds it). Values are checked against the VRs they
become in the worklist's DICOM answers (PS3.5 6.2), so a modality never receives a data set it
cannot parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import Engine, and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacs.access import DEFAULT_PARTITION
from pacs.accounts.tx import aware, reading, writing
from pacs.errors import InvalidDataset, NotFound, StorageUnavailable
from pacs.index.db import utcnow
from pacs.names import normalize_pn
from pacs.uids import is_valid_uid
from pacs.worklist.models import PerformedStep, WorklistItem


class InvalidOrder(InvalidDataset):
    """An order value the worklist cannot carry (a missing accession, a date that is no date ...)."""


class StepStatus(StrEnum):
    """Scheduled Procedure Step Status (PS3.3 C.4.10, the defined terms the archive uses)."""

    SCHEDULED = "SCHEDULED"
    STARTED = "STARTED"  # an MPPS IN PROGRESS was received for it
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELED = "CANCELED"


#: What a modality is offered when its query names no status: steps still to be performed.
OPEN_STATUSES: tuple[StepStatus, ...] = (StepStatus.SCHEDULED, StepStatus.STARTED)


@dataclass(frozen=True, slots=True)
class Order:
    """One scheduled procedure step as a RIS (or an admin) orders it; values as DICOM encodes them."""

    accession_number: str
    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""  # PN: Family^Given^Middle^Prefix^Suffix
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""  # M, F, O
    requested_procedure_id: str = ""
    requested_procedure: str = ""
    step_id: str = ""
    modality: str = ""
    station_aet: str = ""
    start_date: str = ""  # YYYYMMDD
    start_time: str = ""  # HHMMSS
    study_uid: str = ""
    referring_physician: str = ""
    placer_order: str = ""
    filler_order: str = ""


@dataclass(frozen=True, slots=True)
class PerformedStepView:
    sop_uid: str
    status: str
    station_aet: str
    start_date: str
    start_time: str
    end_date: str
    end_time: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WorklistEntry:
    """An order as the worklist holds it, with the steps modalities reported performing."""

    id: int
    accession_number: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    requested_procedure_id: str
    requested_procedure: str
    step_id: str
    modality: str
    station_aet: str
    start_date: str
    start_time: str
    study_uid: str
    referring_physician: str
    placer_order: str
    filler_order: str
    status: str
    source: str
    created_at: datetime
    updated_at: datetime
    performed: tuple[PerformedStepView, ...] = field(default=())


_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_CS = re.compile(r"^[A-Z0-9 _]*$")
#: (VR, the most characters) of each order value; PN components are checked one by one.
_LIMITS: dict[str, tuple[str, int]] = {
    "accession_number": ("SH", 16), "patient_id": ("LO", 64), "issuer": ("LO", 64), "patient_name": ("PN", 324),
    "birth_date": ("DA", 8), "sex": ("CS", 16), "requested_procedure_id": ("SH", 16),
    "requested_procedure": ("LO", 64), "step_id": ("SH", 16), "modality": ("CS", 16), "station_aet": ("AE", 16),
    "start_date": ("DA", 8), "start_time": ("TM", 16), "study_uid": ("UI", 64), "referring_physician": ("PN", 324),
    "placer_order": ("LO", 64), "filler_order": ("LO", 64),
}


def check_order(order: Order) -> Order:
    """``order`` with surrounding spaces removed, or :class:`InvalidOrder` naming the first bad value."""
    values = {f.name: str(getattr(order, f.name) or "").strip() for f in fields(order)}
    if not values["accession_number"]:
        raise InvalidOrder("the order has no accession number")
    for name, value in values.items():
        vr, most = _LIMITS[name]
        label = name.replace("_", " ")
        if len(value) > most:
            raise InvalidOrder(f"the {label} {value[:20]!r}... is longer than {most} characters")
        if "\\" in value or any(ord(c) < 32 for c in value):
            raise InvalidOrder(f"the {label} holds a backslash or a control character")
        if not value:
            continue
        if vr == "DA" and not _real_date(value):
            raise InvalidOrder(f"the {label} {value!r} is not a date (YYYYMMDD)")
        if vr == "TM" and not (_TIME.match(value) and int(value[:2]) < 24 and int(value[2:4] or 0) < 60):
            raise InvalidOrder(f"the {label} {value!r} is not a time (HHMMSS)")
        if vr == "CS" and not _CS.match(value):
            raise InvalidOrder(f"the {label} {value!r} is not a code string (upper case letters, digits)")
        if vr == "UI" and not is_valid_uid(value):
            raise InvalidOrder(f"the {label} {value!r} is not a valid UID")
        if vr == "PN" and any(len(part) > 64 for part in re.split(r"[=^]", value)):
            raise InvalidOrder(f"a component of the {label} is longer than 64 characters")
    if values["sex"] not in ("", "M", "F", "O"):
        raise InvalidOrder(f"the sex {values['sex']!r} is not M, F or O")
    return Order(**values)


def _real_date(value: str) -> bool:
    if not _DATE.match(value):
        return False
    try:
        datetime(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return False
    return True


def _keyed(partition: int, accession_number: str) -> Any:
    return and_(WorklistItem.partition_fk == partition, WorklistItem.accession_number == accession_number.strip())


def schedule(engine: Engine, order: Order, *, source: str,
             partition: int = DEFAULT_PARTITION) -> tuple[WorklistEntry, bool]:
    """Create the order's worklist entry in ``partition``, or update the one with its accession number
    there (a cancelled one is scheduled again); ``(entry, created)``."""
    order = check_order(order)
    for attempt in (1, 2):
        try:
            with writing(engine) as session:
                row = session.execute(select(WorklistItem).where(
                    _keyed(partition, order.accession_number)).with_for_update()).scalar_one_or_none()
                created = row is None
                previous_study_uid = row.study_uid if row is not None else ""
                now = utcnow()
                if row is None:
                    row = WorklistItem(partition_fk=partition, accession_number=order.accession_number, created_at=now,
                                       source=source)
                    session.add(row)
                for f in fields(order):
                    setattr(row, f.name, getattr(order, f.name))
                # The modality files its images under this UID; an order without one gets one here, kept
                # across updates (IHE RAD TF-1 4.2: the scheduler assigns the Study Instance UID).
                row.study_uid = order.study_uid or previous_study_uid or generate_uid()
                row.patient_name_norm = normalize_pn(order.patient_name)
                if row.status in (StepStatus.CANCELED, StepStatus.DISCONTINUED) or created:
                    row.status = StepStatus.SCHEDULED
                row.source = source
                row.updated_at = now
                session.flush()
                return entry_view(row, ()), created
        except StorageUnavailable as exc:  # two first orders of one accession at once: the second one updates
            if attempt == 2 or not isinstance(exc.__cause__, IntegrityError):
                raise
    raise AssertionError("unreachable")


def cancel(engine: Engine, accession_number: str, *, partition: int = DEFAULT_PARTITION) -> WorklistEntry:
    """Take ``partition``'s order off the worklist (``CANCELED``); :class:`NotFound` when there is none."""
    with writing(engine) as session:
        row = session.execute(select(WorklistItem).where(
            _keyed(partition, accession_number)).with_for_update()).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no worklist entry has accession number {accession_number.strip()[:16]!r}")
        if row.status != StepStatus.COMPLETED:
            row.status = StepStatus.CANCELED
            row.updated_at = utcnow()
        session.flush()
        return entry_view(row, _performed(session, [row.id]).get(row.id, ()))


def get(engine: Engine, accession_number: str, *, partition: int = DEFAULT_PARTITION) -> WorklistEntry:
    with reading(engine) as session:
        row = session.execute(select(WorklistItem).where(_keyed(partition, accession_number))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no worklist entry has accession number {accession_number.strip()[:16]!r}")
        return entry_view(row, _performed(session, [row.id]).get(row.id, ()))


def list_entries(engine: Engine, *, statuses: Sequence[str] = (), station_aet: str | None = None,
                 start_date: str | None = None, limit: int = 100, offset: int = 0,
                 partition: int = DEFAULT_PARTITION) -> list[WorklistEntry]:
    """``partition``'s entries by scheduled start (then accession), filtered by status, station and start date."""
    stmt = select(WorklistItem).where(WorklistItem.partition_fk == partition)
    if statuses:
        stmt = stmt.where(WorklistItem.status.in_(list(statuses)))
    if station_aet:
        stmt = stmt.where(WorklistItem.station_aet == station_aet)
    if start_date:
        stmt = stmt.where(WorklistItem.start_date == start_date)
    stmt = stmt.order_by(WorklistItem.start_date, WorklistItem.start_time, WorklistItem.accession_number)
    with reading(engine) as session:
        rows = list(session.execute(stmt.limit(limit).offset(offset)).scalars())
        performed = _performed(session, [r.id for r in rows])
        return [entry_view(r, performed.get(r.id, ())) for r in rows]


def _performed(session: Session, ids: list[int]) -> dict[int, tuple[PerformedStepView, ...]]:
    found: dict[int, list[PerformedStepView]] = {}
    if not ids:
        return {}
    for step in session.execute(select(PerformedStep).where(PerformedStep.item_fk.in_(ids))
                                .order_by(PerformedStep.created_at)).scalars():
        assert step.item_fk is not None
        found.setdefault(step.item_fk, []).append(PerformedStepView(
            step.sop_uid, step.status, step.station_aet, step.start_date, step.start_time, step.end_date,
            step.end_time, aware(step.updated_at)))
    return {k: tuple(v) for k, v in found.items()}


def entry_view(row: WorklistItem, performed: tuple[PerformedStepView, ...]) -> WorklistEntry:
    return WorklistEntry(
        id=row.id, accession_number=row.accession_number, patient_id=row.patient_id, issuer=row.issuer,
        patient_name=row.patient_name, birth_date=row.birth_date, sex=row.sex,
        requested_procedure_id=row.requested_procedure_id, requested_procedure=row.requested_procedure,
        step_id=row.step_id, modality=row.modality, station_aet=row.station_aet, start_date=row.start_date,
        start_time=row.start_time, study_uid=row.study_uid, referring_physician=row.referring_physician,
        placer_order=row.placer_order, filler_order=row.filler_order, status=row.status, source=row.source,
        created_at=aware(row.created_at), updated_at=aware(row.updated_at), performed=performed)

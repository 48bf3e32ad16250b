"""Modality Performed Procedure Steps recorded on the order (PS3.4 F.7).

A modality creates a step ``IN PROGRESS`` when it starts (N-CREATE) and sets it ``COMPLETED`` or
``DISCONTINUED`` when it ends (N-SET); once it has ended it cannot change (PS3.4 F.7.2.2.2). The
step is linked to the worklist entry whose Accession Number it names in its Scheduled Step
Attributes in the partition the modality called (:mod:`pacs.partitions`), and that entry's status
follows it (``STARTED``, ``COMPLETED``, ``DISCONTINUED``). A
step of an unscheduled procedure (no matching order) is recorded all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacs.access import DEFAULT_PARTITION
from pacs.accounts.tx import aware, writing
from pacs.errors import Conflict, InvalidDataset, NotFound, StorageUnavailable
from pacs.index.db import utcnow
from pacs.worklist.models import PerformedStep, WorklistItem
from pacs.worklist.orders import PerformedStepView, StepStatus


class PerformedStatus(StrEnum):
    """Performed Procedure Step Status (PS3.3 C.4.14)."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


_ORDER_STATUS = {PerformedStatus.IN_PROGRESS: StepStatus.STARTED, PerformedStatus.COMPLETED: StepStatus.COMPLETED,
                 PerformedStatus.DISCONTINUED: StepStatus.DISCONTINUED}


class DuplicateStep(Conflict):
    """An N-CREATE for a step that exists already (PS3.7 C: 0x0111)."""


class StepEnded(Conflict):
    """An N-SET of a step that was completed or discontinued (PS3.4 F.7.2.2.2: 0xA710)."""


@dataclass(frozen=True, slots=True)
class StepStart:
    """What an N-CREATE says about a step."""

    sop_uid: str
    status: str
    accession_number: str = ""
    study_uid: str = ""
    step_id: str = ""
    station_aet: str = ""
    modality: str = ""
    calling_aet: str = ""
    start_date: str = ""
    start_time: str = ""


@dataclass(frozen=True, slots=True)
class StepChange:
    """What an N-SET changes (``None``: unchanged)."""

    status: str | None = None
    end_date: str | None = None
    end_time: str | None = None


def _status(value: str) -> PerformedStatus:
    try:
        return PerformedStatus(value.strip().upper())
    except ValueError:
        raise InvalidDataset(f"the performed procedure step status {value.strip()[:16]!r} is not IN PROGRESS, "
                             "COMPLETED or DISCONTINUED") from None


def start_step(engine: Engine, start: StepStart, *, partition: int = DEFAULT_PARTITION) -> PerformedStepView:
    """Record a step a modality started in ``partition``; linked to the order with its accession number
    there, if any."""
    if _status(start.status) is not PerformedStatus.IN_PROGRESS:
        raise InvalidDataset("a performed procedure step is created IN PROGRESS (PS3.4 F.7.2.1.2)")
    now = utcnow()
    try:
        with writing(engine) as session:
            if session.get(PerformedStep, start.sop_uid) is not None:
                raise DuplicateStep(f"performed procedure step {start.sop_uid} exists already")
            item = _order(session, partition, start.accession_number)
            step = PerformedStep(
                sop_uid=start.sop_uid, partition_fk=partition, item_fk=item.id if item is not None else None,
                status=PerformedStatus.IN_PROGRESS.value, accession_number=start.accession_number[:16],
                study_uid=start.study_uid[:64], step_id=start.step_id[:16], station_aet=start.station_aet[:16],
                modality=start.modality[:16], calling_aet=start.calling_aet[:16], start_date=start.start_date[:8],
                start_time=start.start_time[:16], end_date="", end_time="", created_at=now, updated_at=now)
            session.add(step)
            if item is not None and item.status != StepStatus.COMPLETED:
                item.status = StepStatus.STARTED
                item.updated_at = now
            session.flush()
            return _view(step)
    except StorageUnavailable as exc:
        if isinstance(exc.__cause__, IntegrityError):  # the same N-CREATE twice at once
            raise DuplicateStep(f"performed procedure step {start.sop_uid} exists already") from exc
        raise


def change_step(engine: Engine, sop_uid: str, change: StepChange, *,
                partition: int = DEFAULT_PARTITION) -> PerformedStepView:
    """Apply an N-SET: :class:`NotFound` for a step unknown in ``partition`` (another partition's step is
    not this caller's to change), :class:`StepEnded` once it has ended."""
    now = utcnow()
    with writing(engine) as session:
        step = session.get(PerformedStep, sop_uid, with_for_update=True)
        if step is None or step.partition_fk != partition:
            raise NotFound(f"no performed procedure step {sop_uid}")
        if step.status != PerformedStatus.IN_PROGRESS:
            raise StepEnded(f"performed procedure step {sop_uid} is {step.status} and can no longer change")
        if change.status is not None:
            step.status = _status(change.status).value
        if change.end_date is not None:
            step.end_date = change.end_date[:8]
        if change.end_time is not None:
            step.end_time = change.end_time[:16]
        step.updated_at = now
        item = session.get(WorklistItem, step.item_fk) if step.item_fk is not None else None
        if item is not None and item.status != StepStatus.CANCELED:
            item.status = _ORDER_STATUS[PerformedStatus(step.status)]
            item.updated_at = now
        session.flush()
        return _view(step)


def _order(session: Session, partition: int, accession_number: str) -> WorklistItem | None:
    accession = accession_number.strip()
    if not accession:
        return None
    return session.execute(select(WorklistItem).where(WorklistItem.partition_fk == partition,
                                                      WorklistItem.accession_number == accession)
                           .with_for_update()).scalar_one_or_none()


def _view(step: PerformedStep) -> PerformedStepView:
    return PerformedStepView(step.sop_uid, step.status, step.station_aet, step.start_date, step.start_time,
                             step.end_date, step.end_time, aware(step.updated_at))

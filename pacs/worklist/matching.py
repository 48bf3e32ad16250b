"""Modality Worklist matching (PS3.4 K.2.2.1): the query's matching keys as SQL conditions.

The keys are the ones modalities send (PS3.4 Table K.6-1 with matching "R"): Scheduled Station AE
Title, Modality, Scheduled Procedure Step Start Date and Time (single values and ranges), Patient
ID and Patient's Name (wildcards; names case- and accent-insensitive), and the optional Accession
Number, Requested Procedure ID, Scheduled Procedure Step ID and Status. Matching is the query
engine's (:mod:`pacs.query.matching`), so worklist and study queries treat a value alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pacs.access import DEFAULT_PARTITION
from pacs.errors import StorageUnavailable
from pacs.query.matching import value_condition
from pacs.worklist.models import WorklistItem
from pacs.worklist.orders import OPEN_STATUSES, WorklistEntry, entry_view


@dataclass(frozen=True, slots=True)
class WorklistQuery:
    """The matching values of one worklist query, DICOM-encoded ("" matches anything)."""

    station_aet: str = ""
    modality: str = ""
    start_date: str = ""
    start_time: str = ""
    status: str = ""
    step_id: str = ""
    patient_id: str = ""
    patient_name: str = ""
    accession_number: str = ""
    requested_procedure_id: str = ""
    study_uid: str = ""


#: query field -> (column, VR, keyword for messages)
_KEYS = {
    "station_aet": (WorklistItem.station_aet, "AE", "ScheduledStationAETitle"),
    "modality": (WorklistItem.modality, "CS", "Modality"),
    "start_date": (WorklistItem.start_date, "DA", "ScheduledProcedureStepStartDate"),
    "start_time": (WorklistItem.start_time, "TM", "ScheduledProcedureStepStartTime"),
    "status": (WorklistItem.status, "CS", "ScheduledProcedureStepStatus"),
    "step_id": (WorklistItem.step_id, "SH", "ScheduledProcedureStepID"),
    "patient_id": (WorklistItem.patient_id, "LO", "PatientID"),
    "accession_number": (WorklistItem.accession_number, "SH", "AccessionNumber"),
    "requested_procedure_id": (WorklistItem.requested_procedure_id, "SH", "RequestedProcedureID"),
    "study_uid": (WorklistItem.study_uid, "UI", "StudyInstanceUID"),
}


def find_entries(engine: Engine, query: WorklistQuery, *, limit: int = 1000,
                 partition: int = DEFAULT_PARTITION) -> Iterator[WorklistEntry]:
    """``partition``'s worklist entries matching ``query`` by scheduled start; without a status key only the
    steps still to be performed (scheduled or started). Raises :class:`~pacs.errors.InvalidQuery`
    for a malformed value and :class:`StorageUnavailable` when the index fails."""
    dialect = engine.dialect.name
    stmt = select(WorklistItem).where(WorklistItem.partition_fk == partition)
    for name, (column, vr, keyword) in _KEYS.items():
        condition = value_condition(column, None, vr, getattr(query, name), keyword, dialect)
        if condition is not None:
            stmt = stmt.where(condition)
    if query.patient_name.strip(" *"):
        condition = value_condition(WorklistItem.patient_name, WorklistItem.patient_name_norm, "PN",
                                    query.patient_name, "PatientName", dialect)
        if condition is not None:
            stmt = stmt.where(condition)
    if not query.status.strip(" *"):
        stmt = stmt.where(WorklistItem.status.in_([str(s) for s in OPEN_STATUSES]))
    stmt = stmt.order_by(WorklistItem.start_date, WorklistItem.start_time, WorklistItem.id).limit(limit)
    try:
        with Session(engine) as session:
            rows = list(session.execute(stmt).scalars())
            entries = [entry_view(row, ()) for row in rows]
    except SQLAlchemyError as exc:
        raise StorageUnavailable("the index database is unavailable") from exc
    yield from entries

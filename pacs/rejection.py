"""IHE IOCM rejection: a Key Object Selection titled with a rejection note hides what it references.

A KOS whose Concept Name is one of CID 7011's rejection codes (IHE RAD TF-3 4.66 "Reject Note
Stored"), received by any entry point through :mod:`pacs.ingest`, withholds every instance its
Current Requested Procedure Evidence Sequence names: rows in ``withheld_instances`` with reason
``rejected``, which :class:`~pacs.access.AccessScope` hides from every query and retrieve (C-FIND,
QIDO, WADO, C-MOVE/C-GET, viewer, shares). An instance named before it arrives, or sent again, stays
hidden. After the grace period (``REJECTION_GRACE``) a job of the worker (:func:`purge_expired`)
deletes the rejected instances through :mod:`pacs.delete`; the row stays, so a re-send stays hidden.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pacs.access import REJECTED, AccessScope
from pacs.delete import delete_instances
from pacs.errors import NotFound
from pacs.index.db import utcnow
from pacs.index.models import WithheldInstance
from pacs.jobs import aware, write_transaction
from pacs.storage import ObjectStore

log = logging.getLogger(__name__)

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
#: CID 7011 "Rejected for Quality Reasons" and its kin (PS3.16), scheme DCM.
REJECTION_CODES: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
#: What deletes rejected instances sees: every study, withheld instances included.
PURGE_SCOPE = AccessScope(all_studies=True, withheld_reasons=frozenset())


@dataclass(frozen=True, slots=True)
class RejectionNote:
    note_uid: str
    code_value: str
    code_meaning: str
    references: tuple[tuple[str, str, str], ...]  # (study, series, SOP instance) UIDs


@dataclass(frozen=True, slots=True)
class RejectedInstance:
    sop_uid: str
    study_uid: str
    series_uid: str
    code_value: str
    code_meaning: str
    note_uid: str
    rejected_at: datetime
    delete_after: datetime | None
    deleted_at: datetime | None


def rejection_note(ds: Dataset) -> RejectionNote | None:
    """The rejection ``ds`` stands for, when it is a KOS titled with a CID 7011 code; ``None`` otherwise."""
    if str(ds.get("SOPClassUID", "")) != KEY_OBJECT_SELECTION:
        return None
    try:
        title = ds.ConceptNameCodeSequence[0]
        code, scheme = str(title.CodeValue), str(title.CodingSchemeDesignator)
        if scheme != "DCM" or code not in REJECTION_CODES:
            return None
        refs = [(str(study.StudyInstanceUID), str(series.SeriesInstanceUID), str(item.ReferencedSOPInstanceUID))
                for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
                for series in study.get("ReferencedSeriesSequence", [])
                for item in series.get("ReferencedSOPSequence", [])]  # fmt: skip
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    return RejectionNote(str(ds.SOPInstanceUID), code, REJECTION_CODES[code], tuple(refs))


def withhold(engine: Engine, note: RejectionNote, grace_s: float, partition: int = 1, *,
             now: datetime | None = None) -> int:
    """Withhold the instances ``note`` references in ``partition`` (idempotent); how many were newly withheld."""
    if not note.references:
        return 0
    now = now or utcnow()
    rows = [{"sop_uid": sop, "study_uid": study, "series_uid": series, "reason": REJECTED,
             "code_value": note.code_value, "code_meaning": note.code_meaning[:64], "note_uid": note.note_uid,
             "withheld_at": now, "delete_after": now + timedelta(seconds=grace_s), "deleted_at": None,
             "partition_fk": partition}
            for study, series, sop in sorted(set(note.references))]  # fmt: skip
    with write_transaction(engine) as conn:
        ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        result = conn.execute(ins(WithheldInstance).on_conflict_do_nothing(
                              index_elements=["partition_fk", "sop_uid", "reason"])
                              .returning(WithheldInstance.id), rows)  # fmt: skip
        added = len(result.all())
    log.info("rejection note %s (%s): %d instance(s) withheld", note.note_uid, note.code_meaning, added)
    return added


def withhold_superseded(conn: Connection, documents: Sequence[tuple[str, str, str]], note_uid: str,
                        partition: int) -> None:
    """Withhold ``partition``'s superseded report documents, (study, series, SOP) UIDs, from patients and
    share visitors, in the caller's transaction (:mod:`pacs.reports.signing`)."""
    if not documents:
        return
    ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    conn.execute(ins(WithheldInstance).on_conflict_do_nothing(index_elements=["partition_fk", "sop_uid", "reason"]), [
        {"partition_fk": partition, "sop_uid": sop, "study_uid": study, "series_uid": series,
         "reason": "superseded", "code_value": "",
         "code_meaning": "superseded report", "note_uid": note_uid, "withheld_at": now, "delete_after": None,
         "deleted_at": None} for study, series, sop in documents])  # fmt: skip


def list_rejected(engine: Engine, *, study_uid: str | None = None, include_deleted: bool = False,
                  limit: int = 100, offset: int = 0, partition: int = 1) -> list[RejectedInstance]:  # fmt: skip
    """``partition``'s rejected instances, newest first."""
    stmt = (select(WithheldInstance).where(WithheldInstance.partition_fk == partition,
                                           WithheldInstance.reason == REJECTED)
            .order_by(WithheldInstance.id.desc()).limit(limit).offset(offset))  # fmt: skip
    if study_uid is not None:
        stmt = stmt.where(WithheldInstance.study_uid == study_uid)
    if not include_deleted:
        stmt = stmt.where(WithheldInstance.deleted_at.is_(None))
    with engine.connect() as conn:
        return [RejectedInstance(r.sop_uid, r.study_uid, r.series_uid, r.code_value, r.code_meaning, r.note_uid,
                                 aware(r.withheld_at), None if r.delete_after is None else aware(r.delete_after),
                                 None if r.deleted_at is None else aware(r.deleted_at))
                for r in conn.execute(stmt)]  # fmt: skip


def expired_count(engine: Engine, *, now: datetime | None = None) -> int:
    """Rejected instances whose grace period is over and that are not deleted yet."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(WithheldInstance.id)).where(*_expired(now or utcnow()))).scalar_one())


def _expired(now: datetime) -> tuple[Any, ...]:
    return (WithheldInstance.reason == REJECTED, WithheldInstance.deleted_at.is_(None),
            WithheldInstance.delete_after <= now)  # fmt: skip


def purge_expired(engine: Engine, store: ObjectStore, *, now: datetime | None = None, batch: int = 500) -> int:
    """Delete the rejected instances whose grace period is over (index rows, then objects, as every delete
    does); how many instances were deleted. Each rejection row is marked deleted, never removed."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(select(WithheldInstance.id, WithheldInstance.study_uid, WithheldInstance.sop_uid,
                                   WithheldInstance.partition_fk)
                            .where(*_expired(now)).order_by(WithheldInstance.id).limit(batch)).all()  # fmt: skip
    deleted = 0
    for row_id, study_uid, sop_uid, partition in rows:
        scope = PURGE_SCOPE.in_partition(partition)  # the rejected copy, never another partition's twin
        with contextlib.suppress(NotFound):  # never arrived, or deleted already
            deleted += delete_instances(engine, store, scope, study_uid=study_uid, sop_uid=sop_uid).instances
        with write_transaction(engine) as conn:
            conn.execute(update(WithheldInstance).where(WithheldInstance.id == row_id).values(deleted_at=utcnow()))
    if rows:
        log.info("rejected instances past their grace period: %d deleted", deleted)
    return deleted

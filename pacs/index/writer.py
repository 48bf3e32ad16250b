"""Writing instances into the index: upserts, exact counts, and the outbox, in one transaction.

Lock order is always patients, then studies, each sorted by key, so concurrent writers (threads
or processes on PostgreSQL) never deadlock; counts are recomputed under the study row lock, so
they are exact whatever the interleaving.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pacs.index.db import utcnow
from pacs.index.models import Instance, OutboxEvent, Patient, Series, Study
from pacs.index.records import InstanceRecord

log = logging.getLogger(__name__)

EVENT_INSTANCE_STORED = "instance.stored"
EVENT_INSTANCE_REPLACED = "instance.replaced"


class CommitStatus(StrEnum):
    INSERTED = "inserted"
    REPLACED = "replaced"
    EXISTS_SAME = "exists-same"  # same SOPInstanceUID with the same bytes
    EXISTS_DIFFERENT = "exists-different"  # same SOPInstanceUID, other bytes; kept


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    status: CommitStatus
    previous_key: str | None = None  # object superseded by a replace, to delete after commit


@dataclass(frozen=True, slots=True)
class ExistingInstance:
    sha256: str
    object_key: str
    study_uid: str


def find_existing(engine: Engine, sop_uid: str) -> ExistingInstance | None:
    """The stored instance with this SOPInstanceUID, if any (a read, no lock)."""
    stmt = (
        select(Instance.sha256, Instance.object_key, Study.study_uid)
        .join(Study, Study.id == Instance.study_fk)
        .where(Instance.sop_uid == sop_uid)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return ExistingInstance(row[0], row[1], row[2]) if row else None


def _insert(engine: Engine, table: Any) -> Any:
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def commit_batch(engine: Engine, records: Sequence[InstanceRecord]) -> list[CommitOutcome]:
    """Index ``records`` in one transaction; the outcome list matches ``records`` by position."""
    now = utcnow()
    with engine.connect().execution_options() as conn:
        conn.info["write"] = True
        try:
            with conn.begin():
                outcomes = _write(conn, engine, records, now)
        finally:
            conn.info.pop("write", None)
    return outcomes


def _write(conn: Connection, engine: Engine, records: Sequence[InstanceRecord], now: Any) -> list[CommitOutcome]:
    patient_ids: dict[tuple[str, str], int] = {}
    for rec in sorted(records, key=lambda r: (r.patient.patient_id, r.patient.issuer)):
        key = (rec.patient.patient_id, rec.patient.issuer)
        if key in patient_ids:
            continue
        values = asdict(rec.patient) | {"created_at": now, "updated_at": now}
        stmt = _insert(engine, Patient).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["patient_id", "issuer"],
            set_={
                "patient_name": stmt.excluded.patient_name,
                "patient_name_norm": stmt.excluded.patient_name_norm,
                "birth_date": stmt.excluded.birth_date,
                "sex": stmt.excluded.sex,
                "updated_at": stmt.excluded.updated_at,
            },
        ).returning(Patient.id)
        patient_ids[key] = conn.execute(stmt).scalar_one()

    study_ids: dict[str, int] = {}
    study_patient: dict[str, int] = {}
    for rec in sorted(records, key=lambda r: r.study.study_uid):
        uid = rec.study.study_uid
        if uid in study_ids:
            continue
        pfk = patient_ids[(rec.patient.patient_id, rec.patient.issuer)]
        values = (
            asdict(rec.study)
            | {k: v for k, v in asdict(rec.patient).items()}
            | {"patient_fk": pfk, "created_at": now, "last_instance_at": now}
        )
        stmt = _insert(engine, Study).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["study_uid"], set_={"last_instance_at": stmt.excluded.last_instance_at}
        ).returning(Study.id, Study.patient_fk)
        sid, existing_pfk = conn.execute(stmt).one()
        study_ids[uid] = sid
        study_patient[uid] = existing_pfk

    series_ids: dict[str, int] = {}
    for rec in sorted(records, key=lambda r: r.series.series_uid):
        uid = rec.series.series_uid
        if uid in series_ids:
            continue
        values = asdict(rec.series) | {"study_fk": study_ids[rec.study.study_uid], "created_at": now}
        stmt = _insert(engine, Series).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["series_uid"], set_={"series_uid": stmt.excluded.series_uid}
        ).returning(Series.id)
        series_ids[uid] = conn.execute(stmt).scalar_one()

    outcomes: list[CommitOutcome] = []
    stored_events: list[dict[str, Any]] = []
    for rec in records:
        values = _instance_values(rec) | {
            "series_fk": series_ids[rec.series.series_uid],
            "study_fk": study_ids[rec.study.study_uid],
            "created_at": now,
        }
        ins = _insert(engine, Instance).values(**values).on_conflict_do_nothing(index_elements=["sop_uid"])
        new_id = conn.execute(ins.returning(Instance.id)).scalar_one_or_none()
        event = EVENT_INSTANCE_STORED
        if new_id is not None:
            outcomes.append(CommitOutcome(CommitStatus.INSERTED))
        else:
            row = conn.execute(
                select(Instance.id, Instance.sha256, Instance.object_key).where(Instance.sop_uid == rec.sop_uid)
            ).one()
            if row.sha256 == rec.sha256:
                outcomes.append(CommitOutcome(CommitStatus.EXISTS_SAME))
                continue
            if not rec.replace:
                outcomes.append(CommitOutcome(CommitStatus.EXISTS_DIFFERENT))
                continue
            conn.execute(update(Instance).where(Instance.id == row.id).values(**values))
            outcomes.append(CommitOutcome(CommitStatus.REPLACED, previous_key=row.object_key))
            event = EVENT_INSTANCE_REPLACED
        stored_events.append(
            {
                "event": event,
                "study_uid": rec.study.study_uid,
                "series_uid": rec.series.series_uid,
                "sop_uid": rec.sop_uid,
                "created_at": now,
            }
        )
    if stored_events:
        conn.execute(insert(OutboxEvent), stored_events)

    _recount(conn, set(series_ids.values()), set(study_ids.values()), set(study_patient.values()))
    return outcomes


def _instance_values(rec: InstanceRecord) -> dict[str, Any]:
    return {
        "sop_uid": rec.sop_uid,
        "sop_class_uid": rec.sop_class_uid,
        "instance_number": rec.instance_number,
        "rows": rec.rows,
        "columns": rec.columns,
        "number_of_frames": rec.number_of_frames,
        "transfer_syntax_uid": rec.transfer_syntax_uid,
        "object_key": rec.object_key,
        "size_bytes": rec.size_bytes,
        "sha256": rec.sha256,
        "metadata_json": rec.metadata_json,
        "frames_json": rec.frames_json,
        "encapsulated": rec.encapsulated,
    }


def _count(col: Any, where: Any) -> Any:
    return select(func.count(col)).where(where).scalar_subquery()


def _sum(col: Any, where: Any) -> Any:
    return select(func.coalesce(func.sum(col), 0)).where(where).scalar_subquery()


def _recount(conn: Connection, series_ids: set[int], study_ids: set[int], patient_ids: set[int]) -> None:
    """Recompute counts, sizes and ModalitiesInStudy for everything the batch touched."""
    for sid in sorted(series_ids):
        conn.execute(
            update(Series)
            .where(Series.id == sid)
            .values(
                instance_count=_count(Instance.id, Instance.series_fk == sid),
                size_bytes=_sum(Instance.size_bytes, Instance.series_fk == sid),
            )
        )
    recount_studies(conn, study_ids)
    recount_patients(conn, patient_ids)


def recount_studies(conn: Connection, study_ids: set[int]) -> None:
    for sid in sorted(study_ids):
        modalities = sorted(
            m for m in conn.execute(select(Series.modality).where(Series.study_fk == sid).distinct()).scalars() if m
        )
        conn.execute(
            update(Study)
            .where(Study.id == sid)
            .values(
                series_count=_count(Series.id, Series.study_fk == sid),
                instance_count=_sum(Series.instance_count, Series.study_fk == sid),
                size_bytes=_sum(Series.size_bytes, Series.study_fk == sid),
                modalities="\\".join(modalities)[:128],
            )
        )


def recount_patients(conn: Connection, patient_ids: set[int]) -> None:
    for pid in sorted(patient_ids):
        conn.execute(
            update(Patient)
            .where(Patient.id == pid)
            .values(
                study_count=_count(Study.id, Study.patient_fk == pid),
                series_count=_sum(Study.series_count, Study.patient_fk == pid),
                instance_count=_sum(Study.instance_count, Study.patient_fk == pid),
                size_bytes=_sum(Study.size_bytes, Study.patient_fk == pid),
            )
        )

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
    SERIES_IN_OTHER_STUDY = "series-in-other-study"  # SeriesInstanceUID already filed under another study


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
    # A SeriesInstanceUID already filed under another study is refused before anything is written.
    owners = dict(conn.execute(
        select(Series.series_uid, Study.study_uid).join(Study, Study.id == Series.study_fk)
        .where(Series.series_uid.in_(sorted({r.series.series_uid for r in records})))
    ).all())
    foreign_series = {r.series.series_uid for r in records
                      if owners.get(r.series.series_uid, r.study.study_uid) != r.study.study_uid}
    valid = [r for r in records if r.series.series_uid not in foreign_series]

    patient_ids: dict[tuple[str, str], int] = {}
    for rec in sorted(valid, key=lambda r: (r.patient.patient_id, r.patient.issuer)):
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
    new_studies: dict[str, bool] = {}
    for rec in sorted(valid, key=lambda r: r.study.study_uid):
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
        # created_at is only ever set on insert: equal to `now` means this transaction created it.
        stmt = stmt.on_conflict_do_update(
            index_elements=["study_uid"], set_={"last_instance_at": stmt.excluded.last_instance_at}
        ).returning(Study.id, Study.patient_fk, Study.created_at)
        sid, existing_pfk, created = conn.execute(stmt).one()
        study_ids[uid] = sid
        study_patient[uid] = existing_pfk
        new_studies[uid] = _same_instant(created, now)

    series_ids: dict[str, int] = {}
    new_series: set[str] = set()
    for rec in sorted(valid, key=lambda r: r.series.series_uid):
        uid = rec.series.series_uid
        if uid in series_ids or uid in foreign_series:
            continue
        values = asdict(rec.series) | {"study_fk": study_ids[rec.study.study_uid], "created_at": now}
        inserted = conn.execute(
            _insert(engine, Series).values(**values).on_conflict_do_nothing(index_elements=["series_uid"])
            .returning(Series.id)
        ).scalar_one_or_none()
        if inserted is not None:
            series_ids[uid] = inserted
            new_series.add(uid)
            continue
        sid, owner = conn.execute(select(Series.id, Series.study_fk).where(Series.series_uid == uid)).one()
        if owner != study_ids[rec.study.study_uid]:  # filed elsewhere by a concurrent writer meanwhile
            foreign_series.add(uid)
        else:
            series_ids[uid] = sid

    outcomes: list[CommitOutcome] = []
    stored_events: list[dict[str, Any]] = []
    # Count and size changes per series; applied as increments under the rows' locks.
    added: dict[str, list[int]] = {}
    for rec in records:
        if rec.series.series_uid in foreign_series:
            outcomes.append(CommitOutcome(CommitStatus.SERIES_IN_OTHER_STUDY))
            continue
        values = _instance_values(rec) | {
            "series_fk": series_ids[rec.series.series_uid],
            "study_fk": study_ids[rec.study.study_uid],
            "created_at": now,
        }
        ins = _insert(engine, Instance).values(**values).on_conflict_do_nothing(index_elements=["sop_uid"])
        new_id = conn.execute(ins.returning(Instance.id)).scalar_one_or_none()
        event = EVENT_INSTANCE_STORED
        delta = added.setdefault(rec.series.series_uid, [0, 0])
        if new_id is not None:
            outcomes.append(CommitOutcome(CommitStatus.INSERTED))
            delta[0] += 1
            delta[1] += rec.size_bytes
        else:
            row = conn.execute(
                select(Instance.id, Instance.sha256, Instance.object_key, Instance.size_bytes, Instance.series_fk)
                .where(Instance.sop_uid == rec.sop_uid)
            ).one()
            if row.sha256 == rec.sha256:
                outcomes.append(CommitOutcome(CommitStatus.EXISTS_SAME))
                continue
            if not rec.replace or row.series_fk != series_ids[rec.series.series_uid]:
                outcomes.append(CommitOutcome(CommitStatus.EXISTS_DIFFERENT))
                continue
            conn.execute(update(Instance).where(Instance.id == row.id).values(**values))
            outcomes.append(CommitOutcome(CommitStatus.REPLACED, previous_key=row.object_key))
            delta[1] += rec.size_bytes - row.size_bytes
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

    series_study = {rec.series.series_uid: rec.study.study_uid for rec in records}
    study_delta: dict[str, list[int]] = {}
    for series_uid, (count, size) in sorted(added.items()):
        if count or size:
            conn.execute(update(Series).where(Series.id == series_ids[series_uid]).values(
                instance_count=Series.instance_count + count, size_bytes=Series.size_bytes + size))
        d = study_delta.setdefault(series_study[series_uid], [0, 0, 0])
        d[0] += 1 if series_uid in new_series else 0
        d[1] += count
        d[2] += size
    patient_delta: dict[int, list[int]] = {}
    for study_uid, (n_series, count, size) in sorted(study_delta.items()):
        if not (n_series or count or size):
            continue
        changes: dict[str, Any] = {"series_count": Study.series_count + n_series,
                                   "instance_count": Study.instance_count + count,
                                   "size_bytes": Study.size_bytes + size}
        if n_series:
            changes["modalities"] = _modalities(conn, study_ids[study_uid])
        conn.execute(update(Study).where(Study.id == study_ids[study_uid]).values(**changes))
        p = patient_delta.setdefault(study_patient[study_uid], [0, 0, 0, 0])
        p[0] += 1 if new_studies.get(study_uid) else 0
        p[1] += n_series
        p[2] += count
        p[3] += size
    for pid, (n_studies, n_series, count, size) in sorted(patient_delta.items()):
        conn.execute(update(Patient).where(Patient.id == pid).values(
            study_count=Patient.study_count + n_studies, series_count=Patient.series_count + n_series,
            instance_count=Patient.instance_count + count, size_bytes=Patient.size_bytes + size))
    return outcomes


def _modalities(conn: Connection, study_id: int) -> str:
    found = conn.execute(select(Series.modality).where(Series.study_fk == study_id).distinct()).scalars()
    return "\\".join(sorted(m for m in found if m))[:128]


def _same_instant(stored: Any, now: Any) -> bool:
    if stored.tzinfo is None:  # SQLite returns naive datetimes
        return bool(stored == now.replace(tzinfo=None))
    return bool(stored == now)


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

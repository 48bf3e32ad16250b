"""Writing instances into the index: upserts, exact counts, and the outbox, in one transaction.

Lock order is always patients, then studies, each sorted by key, so concurrent writers (threads
or processes on PostgreSQL) never deadlock; counts change by increments under the rows' locks,
so they are exact whatever the interleaving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from pacs.events import EVENT_INSTANCE_REPLACED, EVENT_INSTANCE_STORED
from pacs.index.db import utcnow
from pacs.index.models import Instance, OutboxEvent, Patient, Series, Study
from pacs.index.rawsql import RawStatement
from pacs.index.records import InstanceRecord, PatientValues, SeriesValues, StudyValues

log = logging.getLogger(__name__)


class CommitStatus(StrEnum):
    INSERTED = "inserted"
    REPLACED = "replaced"
    EXISTS_SAME = "exists-same"  # same SOPInstanceUID with the same data set
    EXISTS_DIFFERENT = "exists-different"  # same SOPInstanceUID, another data set; kept
    SERIES_IN_OTHER_STUDY = "series-in-other-study"  # SeriesInstanceUID already filed under another study


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    status: CommitStatus
    previous_key: str | None = None  # object superseded by a replace, to delete after commit
    kept_key: str | None = None  # EXISTS_SAME: the object of the instance already indexed


@dataclass(frozen=True, slots=True)
class ExistingInstance:
    sha256: str
    dataset_sha256: str | None  # None for rows indexed before the column existed
    object_key: str
    study_uid: str


_FIND_EXISTING = (
    select(Instance.sha256, Instance.dataset_sha256, Instance.object_key, Study.study_uid)
    .join(Study, Study.id == Instance.study_fk)
    .where(Instance.partition_fk == bindparam("partition"), Instance.sop_uid == bindparam("uid"))
)


def find_existing(engine: Engine, sop_uid: str, partition: int = 1) -> ExistingInstance | None:
    """The stored instance with this SOPInstanceUID in ``partition``, if any (a read, no lock; asked
    once per received instance)."""
    with engine.connect() as conn:
        row = _statements(engine).existing.one_or_none(conn, {"uid": sop_uid, "partition": partition})
    return ExistingInstance(row[0], row[1], row[2], row[3]) if row else None


def record_dataset_digest(engine: Engine, sop_uid: str, object_key: str, dataset_sha256: str) -> None:
    """Fill in the data set digest of a row indexed before the column existed (revision 0005)."""
    with engine.begin() as conn:
        conn.execute(update(Instance)
                     .where(Instance.sop_uid == sop_uid, Instance.object_key == object_key,
                            Instance.dataset_sha256.is_(None))
                     .values(dataset_sha256=dataset_sha256))


def prepare_statements(engine: Engine) -> None:
    """Compile the writer's statements for ``engine``'s dialect now rather than at the first commit."""
    _statements(engine)


_PATIENT_KEYS = [f.name for f in fields(PatientValues)]
_STUDY_KEYS = [f.name for f in fields(StudyValues)]
_SERIES_KEYS = [f.name for f in fields(SeriesValues)]
_INSTANCE_KEYS = ["sop_uid", "sop_class_uid", "instance_number", "rows", "columns", "number_of_frames",
                  "transfer_syntax_uid", "object_key", "size_bytes", "sha256", "dataset_sha256", "metadata_json",
                  "frames_json", "encapsulated", "series_fk", "study_fk", "created_at", "partition_fk"]
_ZERO_COUNTS = {"study_count": 0, "series_count": 0, "instance_count": 0, "size_bytes": 0}


class _Statements:
    """The writer's statements, compiled once per dialect and run on the DBAPI cursor
    (:mod:`pacs.index.rawsql`): building and executing SQLAlchemy constructs per commit cost more
    than the database's work. Inserts are given every column (no Python-side defaults)."""

    def __init__(self, dialect: Dialect) -> None:
        self.existing = RawStatement(_FIND_EXISTING, dialect)
        ins = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        patient = ins(Patient)
        self.patient_upsert = RawStatement(patient.on_conflict_do_update(
            index_elements=["partition_fk", "patient_id", "issuer"],
            set_={c: patient.excluded[c] for c in ("patient_name", "patient_name_norm", "birth_date", "sex",
                                                   "updated_at")},
        ).returning(Patient.id), dialect, [*_PATIENT_KEYS, *_ZERO_COUNTS, "created_at", "updated_at",
                                            "partition_fk"])
        study = ins(Study)
        # created_at is only set on insert: equal to this commit's time means this commit created it.
        self.study_upsert = RawStatement(study.on_conflict_do_update(
            index_elements=["partition_fk", "study_uid"], set_={"last_instance_at": study.excluded.last_instance_at}
        ).returning(Study.id, Study.patient_fk, Study.created_at), dialect,
            [*_STUDY_KEYS, *_PATIENT_KEYS, "patient_fk", "modalities", "series_count", "instance_count",
             "size_bytes", "created_at", "last_instance_at", "partition_fk"])
        self.series_insert = RawStatement(
            ins(Series).on_conflict_do_nothing(index_elements=["partition_fk", "series_uid"]).returning(Series.id),
            dialect, [*_SERIES_KEYS, "study_fk", "instance_count", "size_bytes", "created_at", "partition_fk"])
        self.series_lookup = RawStatement(
            select(Series.id, Series.study_fk).where(Series.partition_fk == bindparam("partition"),
                                                     Series.series_uid == bindparam("uid")), dialect)
        self.series_owner = RawStatement(
            select(Study.study_uid, Series.id).join(Study, Study.id == Series.study_fk)
            .where(Series.partition_fk == bindparam("partition"), Series.series_uid == bindparam("uid")), dialect)
        self.instance_insert = RawStatement(
            ins(Instance).on_conflict_do_nothing(index_elements=["partition_fk", "sop_uid"]).returning(Instance.id),
            dialect,
            _INSTANCE_KEYS)
        self.instance_lookup = RawStatement(select(
            Instance.id, Instance.sha256, Instance.dataset_sha256, Instance.object_key, Instance.size_bytes,
            Instance.series_fk,
        ).where(Instance.partition_fk == bindparam("partition"), Instance.sop_uid == bindparam("uid")), dialect)
        self.instance_replace = RawStatement(
            update(Instance).where(Instance.id == bindparam("target_id")), dialect, _INSTANCE_KEYS)
        self.outbox_insert = RawStatement(
            insert(OutboxEvent), dialect, ["event", "study_uid", "series_uid", "sop_uid", "created_at", "partition_fk"])
        self.series_add = RawStatement(
            update(Series).where(Series.id == bindparam("target_id"))
            .values(instance_count=Series.instance_count + bindparam("d_count"),
                    size_bytes=Series.size_bytes + bindparam("d_size")), dialect)
        self.study_add = RawStatement(
            update(Study).where(Study.id == bindparam("target_id"))
            .values(series_count=Study.series_count + bindparam("d_series"),
                    instance_count=Study.instance_count + bindparam("d_count"),
                    size_bytes=Study.size_bytes + bindparam("d_size")), dialect)
        self.study_modalities = RawStatement(
            update(Study).where(Study.id == bindparam("target_id")), dialect, ["modalities"])
        self.patient_add = RawStatement(
            update(Patient).where(Patient.id == bindparam("target_id"))
            .values(study_count=Patient.study_count + bindparam("d_studies"),
                    series_count=Patient.series_count + bindparam("d_series"),
                    instance_count=Patient.instance_count + bindparam("d_count"),
                    size_bytes=Patient.size_bytes + bindparam("d_size")), dialect)


_STATEMENTS: dict[str, _Statements] = {}


def _statements(engine: Engine) -> _Statements:
    name = engine.dialect.name
    if name not in _STATEMENTS:
        _STATEMENTS[name] = _Statements(engine.dialect)
    return _STATEMENTS[name]


def commit_batch(engine: Engine, records: Sequence[InstanceRecord],
                 before_commit: Callable[[], None] | None = None) -> list[CommitOutcome]:
    """Index ``records`` in one transaction; the outcome list matches ``records`` by position.

    ``before_commit`` runs after the statements, before the commit: an exception from it rolls
    the transaction back and propagates (the ingest path waits there for the objects' writes).
    """
    now = utcnow()
    with engine.connect() as conn:
        conn.info["write"] = True
        try:
            with conn.begin():
                outcomes = _write_partitions(conn, _statements(engine), records, now)
                if before_commit is not None:
                    before_commit()
        finally:
            conn.info.pop("write", None)
    return outcomes


def _write_partitions(conn: Connection, st: _Statements, records: Sequence[InstanceRecord],
                      now: Any) -> list[CommitOutcome]:
    """:func:`_write` per partition (a group commit may hold instances of several), outcomes in order."""
    partitions = sorted({r.partition for r in records})
    if len(partitions) == 1:
        return _write(conn, st, records, now, partitions[0])
    by_position: dict[int, CommitOutcome] = {}
    for partition in partitions:
        positions = [i for i, r in enumerate(records) if r.partition == partition]
        for i, outcome in zip(positions, _write(conn, st, [records[i] for i in positions], now, partition),
                              strict=True):
            by_position[i] = outcome
    return [by_position[i] for i in range(len(records))]


def _write(conn: Connection, st: _Statements, records: Sequence[InstanceRecord], now: Any,
           partition: int) -> list[CommitOutcome]:
    # Series already filed (their study UID and row id): a SeriesInstanceUID filed under another
    # study is refused before anything is written; one filed under this study needs no insert.
    known: dict[str, tuple[str, int]] = {}
    for uid in sorted({r.series.series_uid for r in records}):
        row = st.series_owner.one_or_none(conn, {"uid": uid, "partition": partition})
        if row is not None:
            known[uid] = (row[0], row[1])
    foreign_series = {r.series.series_uid for r in records
                      if known.get(r.series.series_uid, (r.study.study_uid,))[0] != r.study.study_uid}
    valid = [r for r in records if r.series.series_uid not in foreign_series]

    patient_ids: dict[tuple[str, str], int] = {}
    for rec in sorted(valid, key=lambda r: (r.patient.patient_id, r.patient.issuer)):
        key = (rec.patient.patient_id, rec.patient.issuer)
        if key not in patient_ids:
            params = _values(rec.patient) | _ZERO_COUNTS | {"created_at": now, "updated_at": now,
                                                            "partition_fk": partition}
            patient_ids[key] = st.patient_upsert.scalar(conn, params)

    study_ids: dict[str, int] = {}
    study_patient: dict[str, int] = {}
    new_studies: set[str] = set()
    for rec in sorted(valid, key=lambda r: r.study.study_uid):
        uid = rec.study.study_uid
        if uid in study_ids:
            continue
        params = _values(rec.study) | _values(rec.patient) | {
            "patient_fk": patient_ids[(rec.patient.patient_id, rec.patient.issuer)], "modalities": "",
            "series_count": 0, "instance_count": 0, "size_bytes": 0, "created_at": now, "last_instance_at": now,
            "partition_fk": partition,
        }
        sid, owner_patient, created = st.study_upsert.one_or_none(conn, params)
        study_ids[uid] = sid
        study_patient[uid] = owner_patient
        if _same_instant(created, st.study_upsert.bound("created_at", now)):
            new_studies.add(uid)

    series_ids: dict[str, int] = {}
    new_series: set[str] = set()
    for rec in sorted(valid, key=lambda r: r.series.series_uid):
        uid = rec.series.series_uid
        if uid in series_ids or uid in foreign_series:
            continue
        if uid in known:  # filed under this study (foreign ones were set apart above)
            series_ids[uid] = known[uid][1]
            continue
        params = _values(rec.series) | {"study_fk": study_ids[rec.study.study_uid], "instance_count": 0,
                                        "size_bytes": 0, "created_at": now, "partition_fk": partition}
        inserted = st.series_insert.scalar(conn, params)
        if inserted is not None:
            series_ids[uid] = inserted
            new_series.add(uid)
            continue
        sid, owner = st.series_lookup.one_or_none(conn, {"uid": uid, "partition": partition})
        if owner != study_ids[rec.study.study_uid]:  # filed elsewhere by a concurrent writer meanwhile
            foreign_series.add(uid)
        else:
            series_ids[uid] = sid

    outcomes: list[CommitOutcome] = []
    events: list[dict[str, Any]] = []
    added: dict[str, list[int]] = {}  # series UID -> [instances, bytes] added by this commit
    for rec in records:
        if rec.series.series_uid in foreign_series:
            outcomes.append(CommitOutcome(CommitStatus.SERIES_IN_OTHER_STUDY))
            continue
        values = _instance_values(rec) | {
            "series_fk": series_ids[rec.series.series_uid],
            "study_fk": study_ids[rec.study.study_uid],
            "created_at": now,
            "partition_fk": partition,
        }
        delta = added.setdefault(rec.series.series_uid, [0, 0])
        event = EVENT_INSTANCE_STORED
        if st.instance_insert.scalar(conn, values) is not None:
            outcomes.append(CommitOutcome(CommitStatus.INSERTED))
            delta[0] += 1
            delta[1] += rec.size_bytes
        else:
            row_id, sha256, dataset_sha256, object_key, size_bytes, series_fk = st.instance_lookup.one_or_none(
                conn, {"uid": rec.sop_uid, "partition": partition})
            if sha256 == rec.sha256 or dataset_sha256 == rec.dataset_sha256:
                outcomes.append(CommitOutcome(CommitStatus.EXISTS_SAME, kept_key=object_key))
                continue
            if not rec.replace or series_fk != series_ids[rec.series.series_uid]:
                outcomes.append(CommitOutcome(CommitStatus.EXISTS_DIFFERENT))
                continue
            st.instance_replace.execute(conn, values | {"target_id": row_id}).close()
            outcomes.append(CommitOutcome(CommitStatus.REPLACED, previous_key=object_key))
            delta[1] += rec.size_bytes - size_bytes
            event = EVENT_INSTANCE_REPLACED
        events.append({"event": event, "study_uid": rec.study.study_uid, "series_uid": rec.series.series_uid,
                       "sop_uid": rec.sop_uid, "created_at": now, "partition_fk": partition})
    if events:
        st.outbox_insert.execute_many(conn, events)
    _apply_counts(conn, st, records, added, series_ids, new_series, study_ids, new_studies, study_patient)
    return outcomes


def _apply_counts(conn: Connection, st: _Statements, records: Sequence[InstanceRecord], added: dict[str, list[int]],
                  series_ids: dict[str, int], new_series: set[str], study_ids: dict[str, int],
                  new_studies: set[str], study_patient: dict[str, int]) -> None:
    """Counts and sizes as increments: the rows are locked by this transaction's upserts."""
    series_study = {rec.series.series_uid: rec.study.study_uid for rec in records}
    study_delta: dict[str, list[int]] = {}
    for series_uid, (count, size) in sorted(added.items()):
        if count or size:
            st.series_add.execute(conn, {"target_id": series_ids[series_uid], "d_count": count,
                                         "d_size": size}).close()
        d = study_delta.setdefault(series_study[series_uid], [0, 0, 0])
        d[0] += series_uid in new_series
        d[1] += count
        d[2] += size
    patient_delta: dict[int, list[int]] = {}
    for study_uid, (n_series, count, size) in sorted(study_delta.items()):
        if not (n_series or count or size):
            continue
        sid = study_ids[study_uid]
        st.study_add.execute(conn, {"target_id": sid, "d_series": n_series, "d_count": count,
                                    "d_size": size}).close()
        if n_series:
            st.study_modalities.execute(conn, {"target_id": sid, "modalities": _modalities(conn, sid)}).close()
        p = patient_delta.setdefault(study_patient[study_uid], [0, 0, 0, 0])
        p[0] += study_uid in new_studies
        p[1] += n_series
        p[2] += count
        p[3] += size
    for pid, (n_studies, n_series, count, size) in sorted(patient_delta.items()):
        st.patient_add.execute(conn, {"target_id": pid, "d_studies": n_studies, "d_series": n_series,
                                      "d_count": count, "d_size": size}).close()


def _modalities(conn: Connection, study_id: int) -> str:
    found = conn.execute(select(Series.modality).where(Series.study_fk == study_id).distinct()).scalars()
    return "\\".join(sorted(m for m in found if m))[:128]


def _same_instant(stored: Any, bound_now: Any) -> bool:
    """Whether a returned timestamp is the one this commit sent (SQLite: the same text)."""
    return bool(stored == bound_now)


def _values(values: Any) -> dict[str, Any]:
    """A flat dataclass's fields as a dict (``asdict`` copies deeply, and cost more)."""
    return {f.name: getattr(values, f.name) for f in fields(values)}


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
        "dataset_sha256": rec.dataset_sha256,
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
